"""Compression: an int8 variant of a run is a run like any other, measured beside its parent."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from helpers import assert_one_line_error

from studio import events as ev
from studio.cli import main
from studio.compress.prune import prune_run
from studio.compress.quantize import quantize_run
from studio.compress.report import comparison, pareto_front
from studio.deployment.export import checked_exports, export_run
from studio.deployment.package import build_package
from studio.deployment.predict import Predictor
from studio.errors import StudioError
from studio.inspection.charts import compression_tradeoff
from studio.inspection.evaluate import evaluate_run
from studio.inspection.explain import Explainer
from studio.models.kinds import load_run


@pytest.fixture(scope="module")
def int8_run(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "int8"
    events = list(quantize_run(trained_run, out, calibration=16))
    assert isinstance(events[-1], ev.Finished), events[-1]
    return out


def test_the_int8_variant_is_smaller_faster_and_agrees_with_its_parent(int8_run, trained_run):
    record = json.loads((int8_run / "compression.json").read_text())
    parent = record["parent"]
    assert record["method"] == "quantize" and parent["run"] == trained_run.name
    assert record["size_bytes"] * 3 < parent["size_bytes"]  # int8 weights: about 4x smaller
    assert record["params"] == parent["params"] > 1e6 and record["macs"] == parent["macs"] > 1e8
    for figures in (record, parent):
        assert set(figures["latency_ms"]) == {"batch1", "batch32"}
        b1 = figures["latency_ms"]["batch1"]
        assert 0 < b1["p25_ms"] <= b1["median_ms"] <= b1["p75_ms"] and b1["runs"] >= 5
        assert figures["runtime"].startswith("ONNX Runtime")
    assert record["agreement_with_parent"] >= 0.95
    assert record["accuracy"] >= 0.6  # chance is 1/3
    model = json.loads((int8_run / "model.json").read_text())
    assert model["kind"] == "onnx-int8" and model["parent"] == trained_run.name
    assert model["step"]["to"] == "int8" and model["step"]["calibration"] == 16


def refused_then_packaged(run, explain: str, fmt: str, export: str) -> set[str]:
    """A variant that Explain refuses (naming the run it was made from) and that cannot be
    exported to ``fmt``: its download still passes every check; returns the zip's files."""
    with pytest.raises(StudioError, match=f"{explain}.*made from run"):
        Explainer.from_run(run)
    with pytest.raises(StudioError, match=export):
        export_run(run, fmt)
    package = build_package(run)
    assert package.all_passed, package.summary()
    return {n.split("/", 1)[1] for n in zipfile.ZipFile(package.zip_path).namelist()}


def test_evaluate_predict_and_export_work_on_it_and_explain_says_why_not(int8_run, small_example):
    metrics, _ = evaluate_run(int8_run, small_example)
    assert metrics["split"] == "test" and metrics["accuracy"] >= 0.6
    picture = next(small_example.rglob("*.jpg"))
    (answer,) = Predictor(int8_run).predict([str(picture)])
    assert answer.error is None and answer.top[0][0] in load_run(int8_run).labels
    names = refused_then_packaged(
        int8_run, "gradients do not flow", "pt2", "exporting to pt2 does not work on an onnx-int8"
    )
    assert "model.onnx" in names and "model.safetensors" not in names  # the int8 graph only
    assert "onnx-int8 model from run" in (int8_run / "MODEL_CARD.md").read_text()


def test_fp16_halves_the_file_and_dynamic_int8_quantizes_the_linear_layers(trained_run, tmp_path):
    import onnx

    made = {}
    for to in ("fp16", "int8-dynamic"):
        made[to] = tmp_path / to
        events = list(quantize_run(trained_run, made[to], to=to))
        assert isinstance(events[-1], ev.Finished), events[-1]
    fp16 = json.loads((made["fp16"] / "compression.json").read_text())
    assert fp16["step"]["to"] == "fp16" and fp16["agreement_with_parent"] >= 0.95
    assert 0.45 < fp16["size_bytes"] / fp16["parent"]["size_bytes"] < 0.55
    assert load_run(made["fp16"]).kind.name == "onnx-fp16"
    with pytest.raises(StudioError, match="16-bit floating-point numbers in ONNX Runtime"):
        Explainer.from_run(made["fp16"])
    package = build_package(made["fp16"])
    assert package.all_passed, package.summary()
    dynamic = json.loads((made["int8-dynamic"] / "compression.json").read_text())
    assert dynamic["step"]["quantized_ops"] == ["MatMul", "Gemm"]
    ops = {n.op_type for n in onnx.load(str(made["int8-dynamic"] / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "ConvInteger" not in ops  # convolutions stay float
    assert dynamic["agreement_with_parent"] >= 0.95
    rows = comparison([made["fp16"], made["int8-dynamic"]])
    assert [r["label"] for r in rows] == ["original", "fp16", "int8-dynamic"]
    with pytest.raises(StudioError, match="unknown number format 'int4'"):
        next(quantize_run(trained_run, tmp_path / "x", to="int4"))


def test_bf16_is_refused_in_one_sentence_where_the_cpu_lacks_it(
    trained_run, tmp_path, monkeypatch, capsys
):
    """On a processor without AVX-512 BF16 or AMX, bfloat16 is not offered and asking for it
    is bad input in one line, with nothing made (the variant itself: the slow test below)."""
    from studio.compress import quantize

    out = tmp_path / "bf16"
    monkeypatch.setattr(quantize, "bf16_fast_here", lambda: False)
    assert "bf16" not in quantize.formats_here()
    command = ["compress", trained_run, "--method", "quantize", "--to", "bf16", "--out", out]
    assert_one_line_error(capsys, command, "AVX-512 BF16 or AMX")
    assert not out.exists()


@pytest.mark.slow
def test_bf16_halves_the_file_runs_in_pytorch_and_packs(trained_run, int8_run, tmp_path, capsys):
    """Where the processor computes in bfloat16 (AVX-512 BF16 or AMX): the variant is made,
    measured and packed; elsewhere it is refused (the default run's test above)."""
    import torch
    from safetensors import safe_open

    from studio.compress import quantize

    out = tmp_path / "bf16"
    if not quantize.bf16_fast_here():
        with pytest.raises(StudioError, match="AVX-512 BF16 or AMX"):
            list(quantize_run(trained_run, out, to="bf16"))
        assert not out.exists()
        return
    events = list(quantize_run(trained_run, out, to="bf16"))
    assert isinstance(events[-1], ev.Finished), events[-1]
    record = json.loads((out / "compression.json").read_text())
    assert record["step"]["to"] == "bf16" and record["agreement_with_parent"] >= 0.95
    assert 0.45 < record["size_bytes"] / record["parent"]["size_bytes"] < 0.55
    assert "bfloat16" in record["runtime"] and "float32" in record["parent"]["runtime"]
    assert record["runtime"].startswith("PyTorch") and record["accuracy"] >= 0.6
    loaded = load_run(out)
    assert loaded.kind.name == "torch-bf16" and loaded.record["base"] == "timm"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.bfloat16
    names = refused_then_packaged(
        out, "computes in bfloat16", "onnx", "exporting to onnx does not work on a torch-bf16"
    )
    assert {"model.pt2", "model.torchscript.pt"} <= names
    assert not {"model.onnx", "model.safetensors"} & names
    rows = comparison([int8_run, out])  # the original once in each runtime
    assert [r["label"] for r in rows] == [
        "original", "int8", "original (PyTorch)", "bf16 (PyTorch)"
    ]  # fmt: skip
    assert main(["compare", str(int8_run), str(out)]) == 0
    assert "bfloat16, channels-last" in capsys.readouterr().out


def test_a_stopped_quantization_keeps_nothing(trained_run, tmp_path):
    out = tmp_path / "stopped"
    events = list(quantize_run(trained_run, out, should_stop=lambda: True))
    assert isinstance(events[-1], ev.Stopped) and not out.exists()


def test_bad_compress_commands_exit_2_with_one_line(int8_run, trained_run, tmp_path, capsys):
    quantize = ["--method", "quantize", "--out"]
    cases = [
        (["compress", tmp_path / "missing", *quantize, tmp_path / "a"], "is not a run folder"),
        (["compress", trained_run, *quantize, int8_run], "already exists and is not empty"),
        (["compress", int8_run, *quantize, tmp_path / "b"], "is already an onnx-int8 model"),
        (["compare", trained_run], "was not made by compression"),
    ]
    for args, message in cases:
        assert_one_line_error(capsys, args, message)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_compare_prints_the_table_and_writes_the_chart(int8_run, tmp_path, capsys):
    html = tmp_path / "chart.html"
    assert main(["compare", str(int8_run), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "original" in out and "quantize" in out and "ONNX Runtime" in out
    assert html.read_text().count("plotly") > 2
    assert main(["compare", str(int8_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["original", "quantize"]


def test_the_pareto_front_and_the_chart_follow_the_numbers():
    rows = [
        {"run": "a", "method": "original", "accuracy": 0.90, "batch1_ms": 10.0},
        {"run": "b", "method": "quantize", "accuracy": 0.89, "batch1_ms": 5.0},
        {"run": "c", "method": "quantize", "accuracy": 0.85, "batch1_ms": 6.0},  # b beats it
        {"run": "d", "method": "quantize", "accuracy": 0.90, "batch1_ms": 10.0},  # ties a
    ]
    assert pareto_front(rows) == [True, True, False, True]
    for r in rows:
        r.update(size_bytes=4e6, runtime="x")
    fig = compression_tradeoff(rows, pareto_front(rows))
    colours = fig.data[0].marker.color
    assert colours[2] != colours[1] and list(fig.data[1].x) == [5.0, 10.0, 10.0]


def test_comparison_lists_each_original_once(int8_run, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(int8_run, twin)
    rows = comparison([int8_run, twin])
    assert [r["method"] for r in rows] == ["original", "quantize", "quantize"]


@pytest.fixture(scope="module")
def pruned_run(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "pruned"
    events = list(prune_run(trained_run, out, ratio=0.3, finetune_epochs=2))
    assert isinstance(events[-1], ev.Finished), events[-1]
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [1, 2]
    return out


def test_pruning_removes_channels_physically_and_the_model_loads_by_its_widths(
    pruned_run, trained_run
):
    record = json.loads((pruned_run / "compression.json").read_text())
    parent = record["parent"]
    assert record["method"] == "prune" and record["step"]["ratio"] == 0.3
    assert record["params"] < 0.75 * parent["params"] and record["macs"] < 0.75 * parent["macs"]
    assert record["size_bytes"] < 0.75 * parent["size_bytes"]
    assert record["accuracy"] >= 0.5  # chance is 1/3; the recovery fine-tune brought it back
    loaded = load_run(pruned_run)
    assert loaded.kind.name == "pruned" and loaded.record["parent"] == trained_run.name
    widths = loaded.record["widths"]
    assert widths["conv_head"][1] < 1280  # narrower than Lite0's head
    # The ONNX graph it was timed as is in its folder, checked: its download reuses it.
    (record,) = [r for f, r in checked_exports(pruned_run).items() if f == "onnx"]
    assert record["agreement"] == 1.0 and record["max_abs_diff"] < 1e-3  # forward == ONNX's
    explainer = Explainer.from_run(pruned_run)  # gradients flow: Explain works
    picture = json.loads((pruned_run / "metrics.json").read_text())["predictions"][0]["path"]
    assert explainer.explain(picture, ["gradcam"]).maps["gradcam"].shape == (224, 224)


def test_a_chain_prune_then_int8_works_and_compares(pruned_run, tmp_path, capsys):
    chained = pruned_run.parent / "pruned-int8"
    events = list(quantize_run(pruned_run, chained, calibration=8))
    assert isinstance(events[-1], ev.Finished)
    rows = comparison([pruned_run, chained])
    assert [r["method"] for r in rows] == ["original", "prune", "quantize"]
    assert [r["label"] for r in rows] == ["original", "pruned 30%", "int8"]
    assert rows[2]["size_bytes"] < rows[1]["size_bytes"] < rows[0]["size_bytes"]


def test_a_stop_during_the_first_recovery_epoch_keeps_nothing(trained_run, tmp_path):
    import threading

    stop, out, seen = threading.Event(), tmp_path / "stopped", []
    for event in prune_run(trained_run, out, ratio=0.2, finetune_epochs=2, stop=stop):
        seen.append(event)
        if isinstance(event, ev.Batch):
            stop.set()  # the run cannot finish first: it checks the flag after this batch
    assert isinstance(seen[-1], ev.Stopped) and not out.exists()
    assert not any(isinstance(e, ev.Epoch) for e in seen)


def test_batch_norm_statistics_are_measured_afresh():
    import torch
    from torch import nn

    from studio.training.tune import recalibrate_norms

    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    nn.init.ones_(model[0].weight)
    batches = [torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 3.0)]
    recalibrate_norms(model, batches)
    assert torch.allclose(model[1].running_mean, torch.tensor([2.0, 2.0]))
    assert model[1].momentum == 0.1 and not model.training


def test_bad_pruning_settings_are_refused_before_any_work(trained_run, tmp_path):
    for kwargs, message in [
        ({"ratio": 1.5}, "between 0 and 1"),
        ({"macs": 0.0}, "MAC target"),
        ({"importance": "loudness"}, "unknown importance"),
    ]:
        with pytest.raises(StudioError, match=message):
            next(prune_run(trained_run, tmp_path / "x", **kwargs))
        assert not (tmp_path / "x").exists()


def test_the_compress_tab_handlers_show_a_runs_family(int8_run, trained_run, tmp_path):
    from studio.ui.common import Context
    from studio.ui.compress_tab import family_view, open_in_export, variant_dir

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.copytree(trained_run, ws.runs_dir / trained_run.name)
    shutil.copytree(int8_run, ws.runs_dir / "mine-int8")
    table, chart, variants = family_view(ctx, ws.id, trained_run.name)
    assert [row[1] for row in table] == ["original", "quantize"]
    assert "✅" in (table[0][-2], table[1][-2])  # someone is on the front
    assert chart is not None and variants["choices"] == ["mine-int8"]
    from studio.compress.quantize import formats_here
    from studio.ui.compress_tab import number_formats

    assert [to for _, to in number_formats()["choices"]] == formats_here()  # bf16 if it is fast
    assert family_view(ctx, ws.id, "mine-int8")[0] == []  # no variants of its own yet
    assert variant_dir(ws, "mine", "int8").name == "mine-int8-2"  # never over an existing one
    _, chosen = open_in_export(ctx, ws.id, "mine-int8")
    assert chosen["value"] == "mine-int8" and "mine-int8" in chosen["choices"]
    # The Export tab's refresh on opening (which picks the newest run) keeps it, once.
    assert ctx.chosen_run(ws.id, "export-run") == "mine-int8"
    assert ctx.chosen_run(ws.id, "export-run") is None
    with pytest.raises(StudioError, match="make a variant first"):
        open_in_export(ctx, ws.id, None)
    from studio.ui.explain_tab import pick_source

    swapped, classes = pick_source(ctx, ws.id, "mine-int8", None)  # no gradients: its parent
    assert swapped["value"] == trained_run.name and "brick" in classes["choices"]
    kept, _ = pick_source(ctx, ws.id, trained_run.name, None)
    assert "value" not in kept  # a float run stays chosen


def test_zeroing_weights_shrinks_the_zip_not_the_file_and_says_where(trained_run, tmp_path):
    from studio.compress.sparsify import sparsify_run

    out = tmp_path / "sparse"
    events = list(sparsify_run(trained_run, out, amount=0.5))
    assert isinstance(events[-1], ev.Finished)
    record = json.loads((out / "compression.json").read_text())
    parent = record["parent"]
    assert abs(record["sparsity"]["overall"] - 0.5) < 0.01  # global: half of all those weights
    assert all(0 <= s <= 1 for s in record["sparsity"]["layers"].values())
    assert abs(record["size_bytes"] - parent["size_bytes"]) < 0.02 * parent["size_bytes"]
    assert record["zipped_bytes"] < 0.8 * parent["zipped_bytes"]
    assert record["params"] == parent["params"]  # every shape kept
    loaded = load_run(out)
    assert loaded.kind.name == "timm" and loaded.record["step"]["name"] == "sparsify"
    rows = comparison([out])
    assert rows[1]["label"] == "50% zeros"
    with pytest.raises(StudioError, match="between 0 and 1"):
        next(sparsify_run(trained_run, tmp_path / "x", amount=1.0))


def test_bn_and_taylor_importance_prune_a_model(trained_run):
    import copy

    import torch
    from torch import nn

    from studio.compress.measure import count_params
    from studio.compress.prune import prune_model

    model = load_run(trained_run).model
    full = count_params(model)

    def gradients(m: nn.Module) -> None:
        torch.manual_seed(0)
        nn.functional.cross_entropy(
            m(torch.randn(4, 3, 224, 224)), torch.tensor([0, 1, 2, 0])
        ).backward()

    for importance in ("bn", "taylor"):
        pruned = prune_model(copy.deepcopy(model), (3, 224, 224), 0.2, importance,
                             gradients=gradients)  # fmt: skip
        assert count_params(pruned) < 0.9 * full, importance
        assert pruned(torch.zeros(1, 3, 224, 224)).shape == (1, 3)
    with pytest.raises(StudioError, match="Taylor importance needs"):
        prune_model(copy.deepcopy(model), (3, 224, 224), 0.2, "taylor")
