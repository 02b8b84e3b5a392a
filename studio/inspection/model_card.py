"""The model card: what a run's model is, what it was trained on, how well it does and where it
falls short, in words (MODEL_CARD.md in the run folder and in the download).

Written from the run folder alone, so any kind of run (trained, derived) gets one; the training
writes it when it ends, an export writes it again with the exports that passed their check.
"""

from __future__ import annotations

from pathlib import Path

from ..data.dataset import readable
from ..data.tasks import kind_words
from ..models.kinds import model_record
from ..runs import (
    CONFIG,
    DATA_REPORT,
    LABELS,
    METRICS,
    MODEL_CARD,
    PREPROCESS,
    RUN_INFO,
    WEIGHTS,
    load_json,
    read_optional,
)
from .evaluate import score_words

__all__ = ["write_model_card"]


def _lineage(record: dict) -> list[str]:
    """The card's line on where a derived model came from (none for a plain trained model)."""
    if record.get("kind", "timm") == "timm" and not record.get("parent"):
        return []
    step = record.get("step") or {}
    how = ", ".join(f"{k} {v}" for k, v in step.items()) if isinstance(step, dict) else step
    parent = f" from run `{record['parent']}`" if record.get("parent") else ""
    return [f"- A {record['kind']} model{parent}" + (f" ({how})." if how else ".")]


def write_model_card(run_dir: str | Path, exports: list[dict] = ()) -> Path:
    """MODEL_CARD.md from what the run folder holds: data, backbone, freeze, metrics, limits,
    and the checked exports given (:func:`studio.deployment.export.refresh_model_card` passes
    those whose check still holds)."""
    run = Path(run_dir)
    cfg = load_json(run / CONFIG)
    info = load_json(run / RUN_INFO)
    metrics = load_json(run / METRICS)
    pre = load_json(run / PREPROCESS)
    report = read_optional(run, DATA_REPORT, {})
    labels = metrics["labels"]
    lines = [
        *_card_model(run, cfg, info, pre, report, labels),
        *_card_results(metrics),
        *_card_exports(list(exports)),
        *_card_limits_and_use(run, info, metrics, labels),
    ]
    path = run / MODEL_CARD
    path.write_text("\n".join(lines) + "\n")
    return path


def _card_model(run: Path, cfg, info, pre, report, labels) -> list[str]:
    """The card's title, model and data sections."""
    record = model_record(run)
    tasks = read_optional(run, LABELS, {}).get("tasks")
    if tasks:
        weights = info.get("task_weights") or {}
        what = [
            f"An image model answering **{len(tasks)} questions** about each picture (one shared "
            "backbone, one head per task), fine-tuned with Transfer Studio:",
            "",
            *(
                f"- **{t['name']}** ({kind_words(t['multilabel'])}): {', '.join(t['labels'])}"
                + (f"; loss weight {weights[t['name']]:.2f}" if t["name"] in weights else "")
                for t in tasks
            ),
            "",
            f"Task losses weighed `{cfg.get('task_weights', 'equal')}`; exported graphs give one "
            "output per task, named after it, in this order.",
        ]
    else:
        what = [
            f"An image classifier for **{len(labels)} classes** ({', '.join(labels)}), "
            "fine-tuned with Transfer Studio."
        ]
    lines = [
        f"# Model card: {run.name}",
        "",
        *what,
        "",
        "## Model",
        f"- Backbone: `{cfg['backbone']}` (timm), starting from {info['weights']}.",
        *_lineage(record),
        f"- Frozen: `{cfg['freeze']}`"
        + (f" after {cfg['head_epochs']} head-only epochs" if cfg.get("head_epochs") else "")
        + f"; trained {info['epochs_run']} epochs, kept epoch {info['best_epoch']} "
        "(lowest validation loss).",
        f"- Optimiser {cfg['optimizer']}, learning rate {cfg['lr']}, {cfg['schedule']} schedule, "
        f"layer-wise decay {cfg['layer_decay']}, weight decay {cfg['weight_decay']}, "
        f"label smoothing {cfg['label_smoothing']}, augmentation `{cfg['augment']}`.",
        f"- Input: RGB {pre['crop']}x{pre['crop']}; {pre['how']} "
        f"(mean {pre['mean']}, std {pre['std']}).",
        "",
        "## Data",
        f"- Source: `{readable(Path(str(report.get('source', cfg.get('data')))).name)}`; "
        "images per split: "
        f"{info['sizes']}.",
        f"- Split fingerprint `{info['split_hash']}` (seed {cfg['seed']}); `split.csv` lists "
        "which file went where.",
    ]
    if report.get("skipped"):
        lines.append(f"- {len(report['skipped'])} file(s) were skipped; see `data_report.json`.")
    for warning in report.get("warnings", []):
        lines.append(f"- Warning: {warning}")
    return lines


def _card_results(metrics: dict) -> list[str]:
    """Accuracy, F1, the per-class table and the commonest mistakes (per task, with tasks)."""
    mean = " (mean over the tasks)" if metrics.get("tasks") else ""
    lines = [
        "",
        f"## Results (on the {metrics.get('split', 'held-out')} split, {metrics.get('n', '?')} images)",
        f"- Accuracy: **{metrics['accuracy']:.3f}**; macro F1: **{metrics['macro_f1']:.3f}**"
        + (f"; mAP: {metrics['mAP']:.3f}" if metrics.get("mAP") is not None else "")
        + mean,
        *(
            f"- Task **{name}**: accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}"
            for name, m in (metrics.get("tasks") or {}).items()
        ),
        "",
        *(
            [f"- **Not a test score**: {score_words(metrics)}.", ""]
            if metrics.get("split") == "train"
            else []
        ),
        "| class | precision | recall | F1 | images |",
        "|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
            f"{row['support']} |"
        )
    if metrics.get("most_confused"):
        pairs = ", ".join(
            (f"{p['task']}: " if p.get("task") else "")
            + f"{p['true']} taken for {p['predicted']} ({p['count']}x)"
            for p in metrics["most_confused"][:5]
        )
        lines += ["", f"Most common mistakes: {pairs}."]
    return lines


def _card_exports(exports: list[dict]) -> list[str]:
    lines: list[str] = []
    if exports:
        lines += [
            "",
            "## Exported files (checked against PyTorch on the run's own images)",
            "",
            "| format | file | images checked | top-1 agreement | max abs logit diff |",
            "|---|---|---|---|---|",
        ]
        for e in exports:
            lines.append(
                f"| {e['format']} | `{Path(e['path']).name}` | {e['images']} | "
                f"{e['agreement']:.3f} | {e['max_abs_diff']:.2e} |"
            )
    return lines


def _card_limits_and_use(run: Path, info: dict, metrics: dict, labels: list[str]) -> list[str]:
    return [
        "",
        "## Limits",
        f"- Only knows these classes: {', '.join(labels)}. Any other picture is still forced "
        "into one of them, often with high confidence.",
        f"- Trained on {sum(info['sizes'].values())} images; the numbers above come from "
        f"{metrics.get('n', '?')} held-out images and are rough with so few.",
        "- Inherits the biases of its ImageNet pretraining and of the pictures it was given.",
        "",
        "## Use",
        "```python",
        "from studio import Predictor",
        f"print(Predictor('{run.name}').predict(['photo.jpg']))",
        "```",
        f"Files: `{WEIGHTS}`, `{LABELS}`, `{PREPROCESS}`. "
        f"Made with torch {info['torch']}, timm {info['timm']}, on {info['finished']}.",
    ]
