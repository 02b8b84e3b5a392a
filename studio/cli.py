"""``studio``: the engine from a terminal.

Exit status 0 on success, 2 on bad input (one line on stderr saying why, no traceback), 1 on an
internal error, 130 when interrupted twice. ``STUDIO_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .training.presets import CHOICES as PRESET_CHOICES  # names only: no torch

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _explain_methods() -> tuple[str, ...]:
    # The keys of studio.inspection.explain.METHODS, without importing torch to build the parser.
    return ("gradcam", "ig", "saliency", "gradshap", "occlusion", "guided-gradcam")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Transfer Studio: fine-tune pretrained image classifiers, offline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One function per group of commands; a new capability adds its own.
    for add in (_add_train, _add_run_commands, _add_explain_commands, _add_compress, _add_domain,
                _add_transfer, _add_tools):  # fmt: skip
        add(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on a folder, zip or CSV of images")
    p.add_argument("data", help="folder of class folders, train/val/test folders, .zip or .csv")
    p.add_argument("--out", help="run folder to create (default: runs/<date>-<data name>)")
    p.add_argument("--backbone", default=None, help="timm name; see 'studio backbones'")
    p.add_argument("--weights", dest="weights_file", help="local pretrained weights file")
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="start from random weights (much worse on small data)",
    )
    p.add_argument(
        "--freeze",
        help="none | backbone | N | to:GROUP | last:N | GROUP,GROUP (default backbone)",
    )
    p.add_argument(
        "--preset",
        choices=PRESET_CHOICES,
        default="auto",
        help="a recipe (printed when used); other options change it. auto (default) picks "
        "from the number of pictures and this computer's speed; custom: the options alone",
    )
    p.add_argument(
        "--head-solver",
        choices=["exact", "sgd"],
        help="a head on a frozen backbone: solved exactly (default) or trained by epochs",
    )
    p.add_argument(
        "--tasks",
        help="a CSV with one column per task: the columns to learn, such as material,colour "
        "(default: every label column); one head per task",
    )
    p.add_argument(
        "--task-weights",
        choices=["equal", "uncertainty"],
        help="several tasks: average their losses (default) or weigh them by learned "
        "uncertainty (Kendall et al. 2018)",
    )
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--head-epochs", type=int, help="staged unfreezing: head-only epochs first")
    p.add_argument("--lr", type=float, help="learning rate of the head")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--schedule", choices=["cosine", "onecycle", "constant"])
    p.add_argument("--layer-decay", type=float, help="layer-wise LR decay (1 = off)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--l2sp", type=float, help="L2-SP strength (pull towards pretrained weights)")
    p.add_argument("--augment", choices=["none", "light", "strong"])
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", help="recompute frozen layers every epoch"
    )
    p.add_argument("--cache-views", type=int, help="augmented views cached per image")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        help="train in N processes (torch.distributed, started by torchrun): one per GPU, "
        "or N sharing this computer's CPU",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    # How the app hands a run to --devices: its settings as made, every event as a JSON line.
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--all-events", action="store_true", help=argparse.SUPPRESS)


def _add_run_commands(sub) -> None:
    """What one does with a finished run: evaluate, predict, export."""
    p = sub.add_parser("evaluate", help="measure a trained run on data")
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="classify images with a trained run")
    p.add_argument("run")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "export",
        help="export a run as ONNX, torch.export (pt2) or TorchScript, checked against PyTorch; "
        "'--format zip' builds the app's download (every format) and checks the zip as received",
    )
    p.add_argument("run")
    p.add_argument("--format", required=True, choices=["onnx", "pt2", "torchscript", "zip"])
    p.add_argument("--out", help="output file (default: inside the run folder; not for zip)")
    p.add_argument("--json", action="store_true")


def _add_explain_commands(sub) -> None:
    p = sub.add_parser(
        "explain", help="attribution map: which pixels made the model choose a class"
    )
    p.add_argument("run", help="a run folder, or a catalog backbone name for its ImageNet classes")
    p.add_argument("image")
    p.add_argument("--method", default="gradcam", choices=list(_explain_methods()))
    p.add_argument("--target", help="class to explain (default: the predicted one)")
    p.add_argument("--out", help="picture to write (default: IMAGE-METHOD.png here)")
    p.add_argument(
        "--sign", default="positive", choices=["positive", "negative", "absolute", "all"]
    )
    p.add_argument("--opacity", type=float, default=0.6)
    p.add_argument("--smoothgrad", action="store_true", help="average over noisy copies")
    p.add_argument(
        "--check",
        action="store_true",
        help="also score faithfulness (deletion/insertion) and run the randomization test",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "shortcuts",
        help="does each class get recognised by its background, frame or a watermark?",
    )
    p.add_argument("run")
    p.add_argument("--method", default="gradcam", choices=list(_explain_methods()))
    p.add_argument("--json", action="store_true")


def _add_compress(sub) -> None:
    """Smaller, faster variants of a run, and their comparison."""
    p = sub.add_parser(
        "compress", help="make a smaller, faster variant of a run (a new run folder)"
    )
    p.add_argument("run")
    p.add_argument("--method", required=True, choices=["prune", "quantize", "sparsify", "distill"])
    p.add_argument("--out", required=True, help="the new run folder (must not exist yet)")
    p.add_argument(
        "--ratio",
        type=float,
        default=0.3,
        help="share of channels to remove (prune) or of weights to zero (sparsify)",
    )
    p.add_argument(
        "--macs", type=float, help="prune to this share of the MACs (instead of --ratio)"
    )
    p.add_argument("--importance", default="magnitude", choices=["magnitude", "bn", "taylor"])
    p.add_argument("--global", dest="global_pruning", action="store_true",
                   help="prune the least important channels anywhere (default: per layer)")  # fmt: skip
    p.add_argument("--finetune-epochs", type=int, default=3, help="recovery epochs (prune)")
    p.add_argument("--lr", type=float,
                   help="learning rate (prune: 1e-3; distill: the teacher run's)")  # fmt: skip
    p.add_argument("--to", default="int8", choices=["int8", "int8-dynamic", "fp16", "bf16"],
                   help="number format (quantize): int8 calibrated on training pictures, int8 "
                   "of the linear layers alone, 16-bit floats, or bfloat16 (PyTorch; only on "
                   "CPUs with AVX-512 BF16 or AMX)")  # fmt: skip
    p.add_argument(
        "--calibration", type=_positive_int, default=64, help="training pictures for int8 ranges"
    )
    _add_distill_options(p)
    p.add_argument("--threads", type=_positive_int, default=2, help="threads when timing")
    p.add_argument("--seed", type=int, help="random seed (default 0; distill: the teacher run's)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = sub.add_parser("compare", help="a table and a chart of a run's variants (compression.json)")
    p.add_argument("runs", nargs="+", help="variant run folders (their originals are included)")
    p.add_argument("--html", help="write the accuracy-against-speed chart here")
    p.add_argument("--json", action="store_true")


def _add_transfer(sub) -> None:
    """What carries over from a pretrained backbone to a person's pictures."""
    p = sub.add_parser("rank", help="rank backbones for a dataset before training (LogME)")
    p.add_argument("data", help="folder of class folders, train/val/test folders, .zip or .csv")
    p.add_argument("--backbones", help="comma-separated timm names (default: all with weights)")
    p.add_argument("--max-pictures", type=_positive_int, default=300,
                   help="training pictures each backbone looks at (default 300)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("layers", help="what fine-tuning changed per layer group (CKA), or "
                       "--compare the layers of two models")  # fmt: skip
    p.add_argument("run", nargs="?", help="a run folder: its layers against the pretrained ones")
    p.add_argument("--compare", nargs=3, metavar=("A", "B", "DATA"),
                   help="CKA between every stage of A and of B (run folders or catalog "
                   "backbones) on the pictures in DATA")  # fmt: skip
    p.add_argument("--out", help="--compare: write the CKA matrix here (.json; default "
                   "cka-A-B.json)")  # fmt: skip
    p.add_argument("--html", help="also write the chart (bars, or the heatmap) here")
    p.add_argument("--max-pictures", type=_positive_int, default=200)
    p.add_argument("--json", action="store_true")


def _add_domain(sub) -> None:
    """How different new pictures are from a model's training pictures."""
    p = sub.add_parser("shift", help="measure how different new pictures are (MMD test)")
    p.add_argument("source", help="a folder of the pictures the model learnt on")
    p.add_argument("target", help="a folder of new pictures (sub-folders are read as labels)")
    by = p.add_mutually_exclusive_group()
    by.add_argument("--run", help="compare in this run's features (and measure its accuracy)")
    by.add_argument("--backbone", help="compare in a catalog backbone's features")
    p.add_argument("--permutations", type=_positive_int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("adapt", help="teach a run's model to cope with new, unlabelled pictures")
    p.add_argument("run")
    p.add_argument("--target", required=True, help="a folder of new pictures (labels ignored)")
    p.add_argument("--method", required=True, choices=["dan", "dann", "coral", "reweight"])
    p.add_argument("--out", required=True, help="the new run folder (must not exist yet)")
    p.add_argument("--eval", help="labelled new pictures, only to measure (class folders)")
    p.add_argument("--epochs", type=_positive_int, help="default: the run's")
    p.add_argument("--seed", type=int, help="default: the run's")
    p.add_argument("--weight", type=float, default=1.0, help="weight of the adaptation term")
    p.add_argument("--freeze", help="default: the run's (last:1 if it froze the whole backbone)")
    p.add_argument("--resume", action="store_true", help="go on with a stopped adaptation")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")


def _add_distill_options(p) -> None:
    """``studio compress --method distill``: the student and how the teacher teaches it."""
    p.add_argument("--student", default="tf_efficientnet_lite0",
                   help="catalog backbone to train (distill)")  # fmt: skip
    p.add_argument("--student-weights", help="a local weights file for the student (distill)")
    p.add_argument("--temperature", type=float, default=4.0, help="softening of both answers")
    p.add_argument("--alpha", type=float, default=0.7,
                   help="the teacher's share of the loss, 0..1 (distill)")  # fmt: skip
    p.add_argument("--features", type=float, default=0.0,
                   help="weight of matching the teacher's features (0: off; needs trainable "
                   "layers)")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, help="student epochs (default: the teacher's)")
    p.add_argument("--freeze", help="student layers to freeze (default: as the teacher run)")
    p.add_argument("--no-alone", dest="alone", action="store_false",
                   help="skip training the student without the teacher for comparison")  # fmt: skip


def _add_tools(sub) -> None:
    """The catalog, a dataset's report, the LR finder, the app and the example."""
    p = sub.add_parser("backbones", help="list the backbone catalog")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("data", help="load a dataset and print its report (nothing is trained)")
    p.add_argument("data")
    p.add_argument("--against", metavar="TRAINING",
                   help="DATA is a set of new pictures (labelled by sub-folder or not): report "
                   "it beside these training pictures, copies between the two included")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", help="a CSV's label columns to read as tasks (default: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("lr-find", help="suggest a learning rate for a dataset and backbone")
    p.add_argument("data")
    p.add_argument("--backbone", default=None)
    p.add_argument("--freeze", default="backbone")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--json", action="store_true")

    sub.add_parser("app", help="start the app in the browser (studio app --help)")

    p = sub.add_parser("example", help="write the example dataset to a folder")
    p.add_argument("dest", nargs="?", help="default: print where the bundled copy is")
    p.add_argument(
        "--tasks", action="store_true", help="the multi-task example (path,material,colour)"
    )


# --------------------------------------------------------------------------- commands


def _train_config(args):
    """``(config, dataset, note)``: the preset laid over the defaults, then the options given;
    the dataset is loaded here once (the automatic preset counts its pictures)."""

    from .data.facts import PROCESSES_FROM
    from .training import distributed
    from .training.presets import apply_preset, lay_over, possible_configs
    from .training.train import TrainConfig, load_training_data

    overrides = {
        k: v
        for k, v in vars(args).items()
        if k in TrainConfig.__dataclass_fields__ and v is not None
    }
    overrides.pop("data", None)
    if not args.out:
        overrides["out"] = _default_out(args.data)
    if args.config:  # settings made elsewhere (the app), used as they are
        from .runs import load_json

        made = TrainConfig.from_dict({**load_json(args.config), "resume": args.resume})
        return made.validate(), None, ""
    config = TrainConfig(data=args.data, **overrides).validate()  # before the data is read
    if args.resume:
        return config, None, ""  # the run's own config.json decides
    defaults = TrainConfig()
    given = {  # what the command line set, beyond what a flag's absence leaves as it is
        k: v
        for k, v in overrides.items()
        if k not in ("out", "preset", "resume")
        and not (isinstance(v, bool) and v == getattr(defaults, k))
    }
    # The check's decode of each picture gives the backbone's features too, when every config
    # the preset can give reads them (with several processes each computes its share later).
    features = not distributed.ranks().many and all(
        c.reads_pooled_features() for c in possible_configs(config, args.preset, given)
    )

    def title(total: int) -> str:  # the features are computed where worker processes pay
        pays = features and total >= PROCESSES_FROM
        return "checking pictures" + (" and computing features" if pays else "")

    with _count_bar(title, "img", off_terminal=False) as progress:
        dataset = load_training_data(config, progress=progress, features=features)
    config, note = apply_preset(config, args.preset, dataset)
    if args.preset != "custom":
        config, more = lay_over(config, given)
        note += more
    return config, dataset, note


def _default_out(data: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(data).stem[:80]  # a file name is at most 255 bytes
    return str(Path("runs") / f"{stamp}-{name}")


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[threading.Event]:
    """A stop flag that the first Ctrl-C raises (the run ends after its batch and keeps what it
    has); a second Ctrl-C aborts."""
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this batch (press Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _EventPrinter:
    """A run's events as a person reads them: a line per milestone, a tqdm bar while caching
    and during each epoch."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self.bar = None

    def _bar(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def show(self, event) -> None:
        from tqdm import tqdm

        from . import events as ev

        if isinstance(event, ev.Caching):
            bar = self._bar(event.of, "caching frozen layers", "img")
            bar.n = event.done
            bar.refresh()
            if event.done >= event.of:
                self.close()
        elif isinstance(event, ev.Batch):
            bar = self._bar(event.of, f"epoch {event.epoch}", "batch")
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}")
        elif isinstance(event, ev.Notice):
            tqdm.write(f"note: {event.message}")
        elif (line := self._line(event)) is not None:
            self.close()
            print(line)

    def _line(self, event) -> str | None:
        from . import events as ev
        from .inspection.evaluate import score_words

        if isinstance(event, ev.Started):
            return (
                f"run folder: {event.run_dir}\n"
                f"data: {event.sizes}  classes: {', '.join(event.classes)}\n"
                f"backbone: {self.backbone} ({event.weights}) on {event.device}; "
                f"training {event.trainable_params:,} of "
                f"{event.trainable_params + event.frozen_params:,} parameters"
            )
        if isinstance(event, ev.Epoch):
            val = (
                f"val loss {event.val_loss:.3f} acc {event.val_acc:.3f}"
                if event.val_loss is not None
                else "no validation set"
            )
            return (
                f"epoch {event.epoch:3d}/{event.epochs}  train loss {event.train_loss:.3f} "
                f"acc {event.train_acc:.3f}  {val}  {event.seconds:.1f}s"
                + ("  *" if event.best else "")
            )
        if isinstance(event, ev.Stopped):
            return f"stopped: {event.reason}"
        if isinstance(event, ev.Finished):
            m = event.metrics
            kept = f"; kept epoch {event.best_epoch}" if event.best_epoch else ""
            return (
                f"done in {event.seconds:.0f}s{kept}: "
                f"{score_words(m)}; macro F1 {m['macro_f1']:.3f}\n"
                f"model and report: {event.run_dir}"
            )
        return None


def _follow(events, as_json: bool, printer: _EventPrinter, every: bool = False) -> None:
    """Print a job's events: JSON lines (without the per-batch ones unless ``every``) or for a
    person."""
    from . import events as ev

    try:
        for event in events:
            if not as_json:
                printer.show(event)
            elif every or not isinstance(event, ev.Batch | ev.Caching):
                print(event.to_json(), flush=True)
    finally:
        printer.close()


def _cmd_train(args) -> int:
    from . import events as ev
    from .training import distributed

    if args.devices > 1 and not distributed.wanted():
        return _launch_processes(args)  # the launcher itself trains nothing: no timm import
    from .training.train import train

    where = distributed.start(args.device or "auto")  # one of torchrun's processes, or alone
    try:
        # Rank 0 decides the settings (the automatic preset measures this computer) for all.
        config, dataset, note = _train_config(args) if where.main else (None, None, "")
        config = distributed.broadcast(config, where)
        if note:
            print(ev.Notice(note).to_json() if args.json else f"note: {note}", flush=True)
        with _ctrl_c_stops() as stop:
            events = train(config, dataset, stop=_stop_flag(stop))
            if where.main:
                _follow(events, args.json, _EventPrinter(config.backbone), args.all_events)
            else:
                for _ in events:  # rank 0 prints for all
                    pass
    except RuntimeError as exc:
        if not (where.many and distributed.lost_peer(exc)):
            raise
        from .training.torchrun import STOP_FILE  # set in the processes --devices starts

        if where.main and not os.environ.get(STOP_FILE):  # the launcher says it for them
            print(f"error: {distributed.lost_peer(exc)}", file=sys.stderr)
        return 1
    finally:
        distributed.finish()
    return 0


def _stop_flag(event: threading.Event):
    """Ctrl-C, or, in a process started by ``--devices``, the launcher's stop file."""
    from .training.torchrun import STOP_FILE, StopFileFlag

    return StopFileFlag(event, os.environ.get(STOP_FILE))


def _launch_processes(args) -> int:
    """``--devices N``: the same command in N processes started by torchrun; a run that ended
    early with finished epochs gets the command that continues it."""
    from .errors import StudioError
    from .training.torchrun import launch

    argv = sys.argv[1:] if args.argv is None else args.argv
    if args.config:
        from .runs import load_json

        args.out = str(load_json(args.config).get("out", ""))
    out = args.out or _default_out(args.data)
    if args.out is None:
        argv = [*argv, "--out", out]  # every process, and the hint below, name the same folder
    from .training.distributed import gpu_count

    gpus = gpu_count()
    if args.device != "cpu" and gpus and args.devices > gpus:
        raise StudioError(f"--devices {args.devices}: this computer has {gpus} GPU(s)")
    status = launch(argv, args.devices)
    if status != 0 and (Path(out) / "checkpoint.pt").is_file():
        print(
            f"the run keeps its finished epochs; continue it with: studio train {args.data} "
            f"--out {out} --resume --devices {args.devices}",
            file=sys.stderr,
        )
    return status


def _cmd_evaluate(args) -> int:
    from .inspection.evaluate import evaluate_run

    metrics, path = evaluate_run(args.run, args.data)
    if args.json:
        print(json.dumps(metrics))
        return 0
    mean = " (mean over tasks)" if metrics.get("tasks") else ""
    print(
        f"{metrics['split']} ({metrics['n']} images): accuracy {metrics['accuracy']:.3f}, "
        f"macro F1 {metrics['macro_f1']:.3f}{mean}"
    )
    for task, part in (metrics.get("tasks") or {"": metrics}).items():
        if task:
            print(f"task {task}: accuracy {part['accuracy']:.3f}, macro F1 {part['macro_f1']:.3f}")
        for name, row in part["per_class"].items():
            print(
                f"  {name:20s} precision {row['precision']:.3f} recall {row['recall']:.3f} "
                f"f1 {row['f1']:.3f} ({row['support']})"
            )
        for pair in part.get("most_confused", [])[:5]:
            print(f"  confused: {pair['true']} -> {pair['predicted']} ({pair['count']}x)")
    print(f"written to {path}")
    return 0


def _cmd_predict(args) -> int:
    from .deployment.predict import Predictor

    bar, update = _progress_bar("classifying")
    with bar:
        results = Predictor(args.run).predict(
            args.images, top_k=args.top_k, progress=lambda done, total: update(done / total)
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        for r in results:
            if r.error:
                print(f"{r.path}: cannot read ({r.error})")
            elif r.tasks is not None:
                print(f"{r.path}: " + "; ".join(
                    f"{name} {t['answer'] or '(no tag)'}"
                    + (f" {t['top'][0][1]:.1%}" if t["top"] and t["answer"] == t["top"][0][0] else "")
                    for name, t in r.tasks.items()))  # fmt: skip
            else:
                print(f"{r.path}: " + ", ".join(f"{k} {p:.1%}" for k, p in r.top))
    return 2 if any(r.error for r in results) else 0


def _progress_bar(title: str):
    """A tqdm bar driven by a 0..1 fraction (attribution methods report fractions)."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=title, unit="%", leave=False, disable=None)

    def update(fraction: float, *_):
        bar.update(round(fraction * 100) - bar.n)

    return bar, update


@contextlib.contextmanager
def _count_bar(title: str | Callable[[int], str], unit: str, off_terminal: bool = True) -> Iterator:
    """A tqdm bar on stderr driven by ``progress(done, total)`` calls; ``title`` may depend on
    the total. ``off_terminal=False``: no bar when stderr is not a terminal (a command whose
    bad input must be one line on stderr, even after the bar started)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            desc = title(total) if callable(title) else title
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False,
                       disable=False if off_terminal else None)  # fmt: skip
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _cmd_explain(args) -> int:
    from .errors import StudioError
    from .inspection.explain import METHODS, Explainer, faithfulness_verdict, overlay

    explainer = Explainer.load(args.run)
    bar, update = _progress_bar(METHODS[args.method].title)
    with bar:
        result = explainer.explain(
            args.image, [args.method], args.target, progress=update, smoothgrad=args.smoothgrad
        )
    if args.method in result.problems:
        raise StudioError(result.problems[args.method])
    out = Path(args.out or f"{Path(args.image).stem}-{args.method}.png")
    overlay(result.image, result.maps[args.method], args.sign, args.opacity).save(out)
    report = {
        "image": args.image,
        "method": args.method,
        "target": result.target_label,
        "top": [{"label": k, "probability": p} for k, p in result.top],
        "seconds": round(result.seconds[args.method], 3),
        "out": str(out),
    }
    if args.check:
        scores = explainer.faithfulness(result)
        report["faithfulness"] = {k: v.to_dict() for k, v in scores.items()}
        report["sanity"] = explainer.sanity(
            result, args.method, smoothgrad=args.smoothgrad
        ).to_dict()
    if args.json:
        print(json.dumps(report))
        return 0
    label, p = result.top[0]
    print(
        f"{args.image}: {label} {p:.1%}; explained '{result.target_label}' with "
        f"{METHODS[args.method].title} in {report['seconds']:.1f}s -> {out}"
    )
    if args.check:
        for key, score in scores.items():
            verdict = (
                "the floor" if key == "random" else faithfulness_verdict(score, scores["random"])
            )
            print(
                f"  {key:15s} deletion AUC {score.deletion_auc:.3f} (lower is better)  "
                f"insertion AUC {score.insertion_auc:.3f} (higher is better)  {verdict}"
            )
        print("  sanity check: " + report["sanity"]["verdict"])
    return 0


def _cmd_shortcuts(args) -> int:
    from .inspection.explain import Explainer, evaluation_samples

    explainer = Explainer.from_run(args.run)
    bar, update = _progress_bar("checking")
    with bar:
        rows, skipped = explainer.shortcuts(
            evaluation_samples(args.run), method=args.method, progress=update
        )
    if args.json:
        print(json.dumps({"classes": [r.to_dict() for r in rows], "skipped": skipped}))
    else:
        for row in rows:
            print(("WARNING " if row.flagged else "ok      ") + row.message)
        for path in skipped:
            print(f"skipped (cannot read): {path}")
    return 0


def _cmd_export(args) -> int:
    from dataclasses import asdict

    from .deployment.export import export_run

    if args.format == "zip":
        return _package(args)
    result = export_run(args.run, args.format, args.out)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"wrote {result.path}; checked on {result.images} images: top-1 agreement "
            f"{result.agreement:.1%}, max logit difference {result.max_abs_diff:.2e}"
        )
    return 0


def _compress_events(args, stop):
    """The chosen method's event stream."""
    from .compress.distill import distill_run
    from .compress.prune import prune_run
    from .compress.quantize import quantize_run
    from .compress.sparsify import sparsify_run

    seed = 0 if args.seed is None else args.seed
    if args.method == "prune":
        return prune_run(
            args.run, args.out, ratio=args.ratio, macs=args.macs, importance=args.importance,
            global_pruning=args.global_pruning, finetune_epochs=args.finetune_epochs,
            lr=args.lr or 1e-3, seed=seed, threads=args.threads, stop=stop,
        )  # fmt: skip
    if args.method == "sparsify":
        return sparsify_run(
            args.run, args.out, amount=args.ratio, global_pruning=args.global_pruning,
            threads=args.threads, should_stop=stop.is_set,
        )  # fmt: skip
    if args.method == "distill":
        return distill_run(
            args.run, args.out, student=args.student, student_weights=args.student_weights,
            temperature=args.temperature, alpha=args.alpha, features=args.features,
            epochs=args.epochs, freeze=args.freeze, lr=args.lr, seed=args.seed,
            alone=args.alone, threads=args.threads, stop=stop,
        )  # fmt: skip
    return quantize_run(
        args.run, args.out, to=args.to, calibration=args.calibration, seed=seed,
        threads=args.threads, should_stop=stop.is_set,
    )  # fmt: skip


def _cmd_compress(args) -> int:
    with _ctrl_c_stops() as stop:
        _follow(_compress_events(args, stop), args.json, _EventPrinter(""))
    if not args.json and Path(args.out).is_dir():
        _print_comparison([args.out])
    return 0


def _print_comparison(runs: list[str]) -> list[dict]:
    from .compress.report import comparison, pareto_front

    rows = comparison(runs)
    front = pareto_front(rows)
    print(f"{'model':28} {'method':9} {'accuracy':>8} {'MB':>6} {'ms (b1)':>8} {'ms (b32)':>9}")
    for row, best in zip(rows, front):
        print(
            f"{row['run'][:28]:28} {row['method']:9} {row['accuracy']:8.3f} "
            f"{row['size_bytes'] / 1e6:6.1f} {row['batch1_ms']:8.1f} {row['batch32_ms']:9.1f}"
            + ("  *" if best else "")
        )
    runtimes = list(dict.fromkeys(row["runtime"] for row in rows))
    if len(runtimes) == 1:
        print(f"timed in {runtimes[0]}; * best trade-off (no model faster and more accurate)")
    else:
        print("* best trade-off (no model faster and more accurate); timed in:")
        for row in rows:
            print(f"  {row['run']}: {row['runtime']}")
    for row in rows:
        if row.get("alone_accuracy") is not None:
            print(
                f"{row['run']}: accuracy {row['accuracy']:.3f} with its teacher, "
                f"{row['alone_accuracy']:.3f} for the same student trained alone"
            )
    return rows


def _cmd_compare(args) -> int:
    from .compress.report import comparison, pareto_front

    if args.json:
        rows = comparison(args.runs)
        print(json.dumps([{**r, "best": b} for r, b in zip(rows, pareto_front(rows))]))
    else:
        rows = _print_comparison(args.runs)
    if args.html:
        from .inspection.charts import compression_tradeoff

        compression_tradeoff(rows, pareto_front(rows)).write_html(args.html)
        print(f"chart: {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _package(args) -> int:
    from dataclasses import asdict

    from .deployment.package import build_package
    from .errors import StudioError

    if args.out:
        raise StudioError("--out is not for --format zip: the zip is written into the run folder")
    bar, update = _progress_bar("building the download")
    with bar:
        package = build_package(args.run, progress=update)
    if args.json:
        checks = [{**asdict(c), "passed": c.passed} for c in package.checks]
        print(json.dumps({"zip": str(package.zip_path), "checks": checks}))
    else:
        print(f"wrote {package.zip_path}")
        print(package.summary().replace("**", ""))
    return 0 if package.all_passed else 1


def _cmd_backbones(args) -> int:
    from .models.backbones import catalog

    rows = catalog()
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'name':24s} {'params':>8s} {'input':>5s}  pretrained weights")
    for r in rows:
        where = {
            "bundled": "yes (bundled, offline)",
            "hub-cache": "yes (downloaded before)",
            "hub": "yes (will download)",
            "none": "NOT AVAILABLE offline",
        }[r["weights"]]
        print(f"{r['name']:24s} {r['params_m']:7.1f}M {r['input_size']:5d}  {where}")
    return 0


def _cmd_data(args) -> int:
    from .data.dataset import load_dataset

    if args.against:
        return _new_pictures_report(args)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    with _count_bar("checking pictures", "img") as progress:  # on stderr; the report on stdout
        dataset = load_dataset(args.data, seed=args.seed, tasks=tasks, progress=progress)
    if args.json:
        print(json.dumps(dataset.report.to_dict()))
    else:
        print(dataset.report.summary())
    return 0


def _new_pictures_report(args) -> int:
    """The Data tab's report of new pictures, against the training pictures of --against."""
    from dataclasses import asdict

    from .data.dataset import load_dataset
    from .domain.pictures import describe_pictures, load_pictures

    training = load_dataset(args.against, seed=args.seed)
    paths = [s.path for split in training.splits.values() for s in split]
    report = describe_pictures(load_pictures(args.data, "DATA"), paths, training.classes)
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    print("\n".join(report.lines()))
    for new, old, kind in report.copies:
        print(f"  copy: {new} = {old} ({kind})")
    for group in report.exact_duplicates + report.near_duplicates:
        print(f"  duplicates: {', '.join(group)}")
    for path, why in report.skipped:
        print(f"  skipped: {path}: {why}")
    return 0


def _cmd_lr_find(args) -> int:
    from .training.lr_finder import lr_find
    from .training.train import TrainConfig

    config = TrainConfig(data=args.data, freeze=args.freeze, batch_size=args.batch_size)
    if args.backbone:
        config.backbone = args.backbone
    result = lr_find(config)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"suggested learning rate: {result['suggestion']:.2e} "
            f"(loss fell fastest there; tried {result['lrs'][0]:.0e} to {result['lrs'][-1]:.0e})"
        )
    return 0


def _cmd_example(args) -> int:
    from .data import example

    if args.tasks:
        print(
            example.make_multitask_example(args.dest) if args.dest else example.multitask_example()
        )
    else:
        print(example.make_example_dataset(args.dest) if args.dest else example.example_dataset())
    return 0


def _cmd_shift(args) -> int:
    from .domain.pictures import load_pictures
    from .domain.shift import Embedder, measure_shift

    source = load_pictures(args.source, "SOURCE")
    target = load_pictures(args.target, "TARGET")
    if args.run:
        embedder = Embedder.from_run(args.run)
    else:
        from .models.backbones import DEFAULT_BACKBONE

        embedder = Embedder.from_backbone(args.backbone or DEFAULT_BACKBONE)
    bar, update = _progress_bar("embedding both sets")
    with bar:
        result = measure_shift(source, target, embedder, run_dir=args.run,
                               permutations=args.permutations, seed=args.seed,
                               progress=update)  # fmt: skip
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "map"}))
        return 0
    print(f"features from {result['features_from']}; {result['n_source']} source pictures, "
          f"{result['n_target']} new ones")  # fmt: skip
    print(
        f"MMD² {result['mmd']:.4f}  p-value {result['p_value']:.4f} "
        f"({result['permutations']} permutations)  proxy A-distance {result['a_distance']:.2f} "
        f"(a domain classifier tells them apart {result['domain_accuracy']:.0%} of the time)"
    )
    for name, row in result["per_class"].items():
        print(f"  {name}: MMD² {row['mmd']:.4f}, p {row['p_value']:.3f} "
              f"({row['n_source']} vs {row['n_target']} pictures)")  # fmt: skip
    if result["copies"]:
        print(f"warning: {len(result['copies'])} new picture(s) are copies of training pictures "
              "(they make the sets look more alike than they are):")  # fmt: skip
        for row in result["copies"][:10]:
            print(f"  {row['new']} = {row['training']} ({row['kind']})")
    print(f"[{result['verdict']}] {result['sentence']}")
    return 0


def _cmd_rank(args) -> int:
    from tqdm import tqdm

    from .transfer.rank import best_tradeoff, rank_backbones

    names = [n.strip() for n in args.backbones.split(",") if n.strip()] if args.backbones else None
    with _ctrl_c_stops() as stop, tqdm(desc="ranking", unit="backbone", disable=None,
                                       leave=False) as bar:  # fmt: skip

        def progress(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(name)

        scores = rank_backbones(args.data, names, max_pictures=args.max_pictures,
                                seed=args.seed, progress=progress, stop=stop.is_set)  # fmt: skip
    if args.json:
        print(json.dumps([s.to_dict() for s in scores]))
        return 0
    pick = best_tradeoff(scores).backbone
    print(f"{'backbone':24s} {'LogME':>7s} {'probe':>6s} {'seconds':>8s} {'ms/pic':>7s} "
          f"{'params':>7s}")  # fmt: skip
    for s in scores:
        probe = "-" if s.probe_accuracy is None else f"{s.probe_accuracy:.0%}"
        mark = "  <- best trade-off" if s.backbone == pick else ""
        print(f"{s.backbone:24s} {s.logme:7.3f} {probe:>6s} {s.seconds:8.1f} "
              f"{s.ms_per_image:7.1f} {s.params_m:6.1f}M{mark}")  # fmt: skip
    print(f"({scores[0].pictures} training pictures each; LogME: higher fits the labels better, "
          "comparable between backbones on the same pictures only)")  # fmt: skip
    return 0


def _cmd_layers(args) -> int:
    from .errors import StudioError
    from .inspection import charts
    from .transfer.layers import compare_layers, freezing_advice, trained_epochs, what_changed

    if bool(args.run) == bool(args.compare):
        raise StudioError("give a RUN, or --compare A B DATA (not both)")
    if args.compare:
        result = compare_layers(*args.compare, max_pictures=args.max_pictures)
        out = Path(args.out or f"cka-{result['a']}-{result['b']}.json")
        out.write_text(json.dumps(result, indent=1))
        if args.html:
            charts.cka_heatmap(result).write_html(args.html, include_plotlyjs=True)
        if args.json:
            print(json.dumps(result))
            return 0
        print(f"CKA between {result['a']} (rows) and {result['b']} on {result['pictures']} "
              f"pictures; matrix written to {out}")  # fmt: skip
        for group, other, value in result["most_similar"]:
            print(f"  {group:10s} is most like {other:10s} (CKA {value:.3f})")
        return 0
    changes = what_changed(args.run, max_pictures=args.max_pictures)
    if args.html:
        charts.layer_changes([c.to_dict() for c in changes]).write_html(args.html)
    if args.json:
        print(json.dumps([{"group": c.group, "cka": c.cka, "weight_change": c.weight_change,
                           "frozen": c.frozen} for c in changes]))  # fmt: skip
        return 0
    for c in changes:
        change = "new" if c.weight_change is None else f"{c.weight_change:.1%}"
        print(f"{c.group:10s} CKA {c.cka:.3f}  weights changed {change:>6s}"
              f"{'  (frozen)' if c.frozen else ''}")  # fmt: skip
    print(freezing_advice(changes, trained_epochs(args.run)))
    return 0


def _cmd_adapt(args) -> int:
    from .domain.adapt import ADAPTATION, adapt_run
    from .runs import read_optional

    with _ctrl_c_stops() as stop:
        events = adapt_run(
            args.run, args.target, args.out, args.method, eval_dir=args.eval, epochs=args.epochs,
            seed=args.seed, weight=args.weight, freeze=args.freeze, resume=args.resume, stop=stop,
        )  # fmt: skip
        _follow(events, args.json, _EventPrinter(""))
    record = read_optional(Path(args.out), ADAPTATION) if Path(args.out).is_dir() else None
    if record and not args.json:
        before, after = record["source_only"], record["adapted"]
        if "accuracy" in before:
            print(f"accuracy on --eval: {before['accuracy']:.3f} source-only, "
                  f"{after['accuracy']:.3f} adapted")  # fmt: skip
            for name, row in (after.get("per_class") or {}).items():
                was = (before.get("per_class") or {}).get(name, {}).get("recall", float("nan"))
                print(f"  {name}: {was:.3f} -> {row['recall']:.3f} "
                      f"({row['support']} pictures)")  # fmt: skip
        print(f"MMD² between the training and the new pictures: {before['mmd']:.4f} before, "
              f"{after['mmd']:.4f} after")  # fmt: skip
    return 0


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "compress": _cmd_compress,
    "compare": _cmd_compare,
    "shift": _cmd_shift,
    "rank": _cmd_rank,
    "layers": _cmd_layers,
    "adapt": _cmd_adapt,
    "explain": _cmd_explain,
    "shortcuts": _cmd_shortcuts,
    "backbones": _cmd_backbones,
    "data": _cmd_data,
    "lr-find": _cmd_lr_find,
    "example": _cmd_example,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``studio`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:  # the app parses its own options
        from .ui.app import main as app_main

        return app_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv  # what --devices passes on to each process
    from .errors import StudioError

    try:
        return COMMANDS[args.command](args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder, a name too long: the user's to fix
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: cannot read or write a file: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if os.environ.get("STUDIO_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (set STUDIO_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
