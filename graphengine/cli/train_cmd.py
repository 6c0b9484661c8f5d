"""``graphengine train`` and ``graphengine eval``: training and evaluating from files.

    graphengine train model.pb --data train.npz --val val.npz -o trained.pb
    graphengine train model.pb --data train.npz --loss loss --optimizer adam --lr 1e-3 \\
        --epochs 10 --checkpoint-dir ckpt -o trained.pb
    graphengine train model.pb --data train.npz --resume ckpt -o trained.pb
    graphengine train imported.pb --data train.npz --loss cross_entropy \
        --predictions logits --labels y --val val.npz --patience 5 -o trained.pb
    graphengine eval trained.pb --data test.npz

Every training setting comes from the file's training spec unless an option
overrides it; a graph without a spec trains with defaults, its loss named by
``--loss`` (or found: its only scalar float output).  ``--loss KIND`` with
``--predictions OUTPUT --labels ARRAY`` adds a loss instead (see
:mod:`graphengine.training.losses`).  The trained model is the same graph with
new parameter values and the spec that was used, written atomically.  The
metrics of each epoch (and validation, and every ``--log-every`` steps) go to
a JSON-lines log (``--log``; by default ``metrics.jsonl`` in the checkpoint
folder, else ``<output>.metrics.jsonl``); the summary goes to stdout
(``--json``: one JSON object).  Ctrl-C stops after the current step, writes a
checkpoint (into ``--checkpoint-dir``, else ``<output>.interrupted/``) and prints
the command that resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from ..training_spec import LOSS_KINDS, METRICS, OPTIMIZERS, SCHEDULES
from .main import CommandError

#: The training settings that are plain typed options, one row each: (group,
#: flag, setting, type, metavar, help).  The setting is the TrainingSpec field
#: (flat, as resolve_spec takes them), so _settings reads them from this table.
_SETTING_OPTIONS: tuple[tuple[str, str, str, type, str, str], ...] = (
    ("train", "--epochs", "epochs", int, "N", "passes over the data"),
    ("train", "--batch-size", "batch_size", int, "B", "examples per step"),
    ("train", "--seed", "seed", int, "S", "seed of shuffling and dropout"),
    ("train", "--lr", "learning_rate", float, "LR", "learning rate"),
    ("train", "--momentum", "momentum", float, "M", "SGD momentum"),
    ("train", "--beta1", "beta1", float, "B1", "Adam(W) first-moment decay"),
    ("train", "--beta2", "beta2", float, "B2", "Adam(W) second-moment decay"),
    ("train", "--epsilon", "epsilon", float, "EPS", "Adam(W) denominator term"),
    ("train", "--weight-decay", "weight_decay", float, "WD", "weight decay"),
    (
        "train",
        "--clip-norm",
        "clip_global_norm",
        float,
        "NORM",
        "clip gradients to this global L2 norm (0: no clipping)",
    ),
    (
        "train",
        "--clip-value",
        "clip_value",
        float,
        "V",
        "clip each gradient element to [-V, V] (0: no clipping)",
    ),
    ("schedule", "--warmup-steps", "warmup_steps", int, "N", "linear warm-up over N steps"),
    ("schedule", "--step-size", "step_size", int, "N", "step, exponential: steps per decay"),
    (
        "schedule",
        "--gamma",
        "gamma",
        float,
        "G",
        "step, exponential, reduce_on_plateau: decay factor",
    ),
    (
        "schedule",
        "--min-lr",
        "min_lr",
        float,
        "LR",
        "cosine, polynomial: final rate; reduce_on_plateau: lowest rate",
    ),
    (
        "schedule",
        "--total-steps",
        "total_steps",
        int,
        "N",
        "cosine, polynomial, one_cycle: length (default: the whole run)",
    ),
    ("schedule", "--power", "power", float, "P", "polynomial: exponent"),
    ("schedule", "--pct-start", "pct_start", float, "F", "one_cycle: fraction spent rising"),
    ("schedule", "--div-factor", "div_factor", float, "D", "one_cycle: the first rate is lr / D"),
    (
        "schedule",
        "--final-div-factor",
        "final_div_factor",
        float,
        "D",
        "one_cycle: the last rate is lr / (div_factor * D)",
    ),
    (
        "schedule",
        "--base-momentum",
        "base_momentum",
        float,
        "M",
        "one_cycle: the momentum at the peak rate (default 0.85)",
    ),
    (
        "schedule",
        "--max-momentum",
        "max_momentum",
        float,
        "M",
        "one_cycle: the momentum at the first and last step (default 0.95)",
    ),
    (
        "schedule",
        "--plateau-patience",
        "plateau_patience",
        int,
        "N",
        "reduce_on_plateau: validations without improvement per reduction",
    ),
    (
        "schedule",
        "--plateau-min-delta",
        "plateau_min_delta",
        float,
        "D",
        "reduce_on_plateau: the smallest change that counts",
    ),
    (
        "schedule",
        "--plateau-cooldown",
        "plateau_cooldown",
        int,
        "N",
        "reduce_on_plateau: validations not counted after each reduction",
    ),
    (
        "schedule",
        "--plateau-monitor",
        "plateau_monitor",
        str,
        "KEY",
        "reduce_on_plateau: the record key watched (default val_loss)",
    ),
    (
        "watch",
        "--val-every",
        "validate_every",
        int,
        "N",
        "also validate every N steps (default: at epoch ends only)",
    ),
    ("run", "--log-every", "log_every", int, "N", "also log the loss and rate every N steps"),
)
#: Settings given by options with their own set-up above (choices, flags).
_OTHER_SETTINGS = (
    "loss",
    "labels",
    "predictions",
    "optimizer",
    "nesterov",
    "schedule",
    "plateau_mode",
    "cycle_momentum",
    "drop_last",
)


def add_parser(subparsers) -> None:
    _add_train(subparsers)
    _add_eval(subparsers)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model file on .npz data and write the trained model",
        description="Train a model file on .npz data (arrays named as the placeholders, one "
        "example per row) and write the trained model. Options override the "
        "file's training spec.",
    )
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    parser.add_argument("-o", "--output", required=True, help="where to write the trained model")
    _add_data_options(parser)
    parser.add_argument(
        "--val",
        metavar="VAL.npz",
        help="validation data, evaluated after each epoch (and every --val-every steps)",
    )
    parser.add_argument(
        "--val-map",
        action="append",
        default=[],
        metavar="PLACEHOLDER=ARRAY",
        help="feed a placeholder from this array of the validation data "
        "(repeatable; default: as for the training data)",
    )
    groups = {
        "train": parser.add_argument_group("training settings (default: the file's training spec)"),
        "schedule": parser.add_argument_group("learning-rate schedule"),
        "watch": parser.add_argument_group("validation and early stopping"),
        "run": parser.add_argument_group("checkpoints and output"),
    }
    train, schedule, watch = groups["train"], groups["schedule"], groups["watch"]
    train.add_argument("--optimizer", choices=list(OPTIMIZERS))
    train.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SGD with Nesterov momentum",
    )
    train.add_argument(
        "--trainable",
        action="append",
        metavar="PATTERN",
        help="parameters to train, by name, scope or glob ('dense2', "
        "'dense2/*', '*/bias'; comma-separated or repeated; default: "
        "every trainable parameter)",
    )
    train.add_argument(
        "--freeze",
        action="append",
        metavar="PATTERN",
        help="parameters not to train, by name, scope or glob",
    )
    train.add_argument(
        "--drop-last",
        action="store_true",
        default=None,
        help="leave out each epoch's last partial batch (default: keep it, smaller)",
    )
    schedule.add_argument("--schedule", choices=list(SCHEDULES), help="the schedule's kind")
    schedule.add_argument(
        "--boundaries", metavar="S1,S2", help="piecewise: steps where the rate changes"
    )
    schedule.add_argument(
        "--values", metavar="LR0,LR1,LR2", help="piecewise: the rates, one more than the boundaries"
    )
    schedule.add_argument(
        "--plateau-mode",
        choices=["min", "max"],
        help="reduce_on_plateau: whether lower or higher is better (default: from the name)",
    )
    schedule.add_argument(
        "--cycle-momentum",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one_cycle: cycle SGD's momentum (Adam's beta1) inversely to the rate "
        "(default: yes, as PyTorch)",
    )
    for group, flag, dest, kind, metavar, text in _SETTING_OPTIONS:
        groups[group].add_argument(flag, dest=dest, type=kind, metavar=metavar, help=text)
    watch.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the monitored metric stops improving (patience 5)",
    )
    watch.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="early stopping after N validations without improvement (implies --early-stopping)",
    )
    watch.add_argument(
        "--min-delta",
        type=float,
        metavar="D",
        help="early stopping: the smallest change that counts",
    )
    watch.add_argument(
        "--monitor",
        metavar="KEY",
        help="early stopping and best.pb: the "
        "record key watched (default: val_loss with --val, else train_loss)",
    )
    watch.add_argument(
        "--mode",
        choices=["min", "max"],
        help="whether lower or higher is better (default: from the name)",
    )
    watch.add_argument(
        "--restore-best", action="store_true", help="end with the parameters of the best validation"
    )
    run = groups["run"]
    run.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoints here")
    run.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N steps (default: at epoch ends only)",
    )
    run.add_argument(
        "--keep",
        type=int,
        default=3,
        metavar="K",
        help="keep the K newest checkpoints (default 3; 0 keeps all)",
    )
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="continue from the newest checkpoint in DIR (or from a checkpoint file)",
    )
    run.add_argument(
        "--best",
        metavar="FILE.pb",
        help="where to write the model with the best "
        "parameters (default: best.pb in the checkpoint folder)",
    )
    run.add_argument(
        "--log",
        metavar="FILE.jsonl",
        help="metrics log (JSON lines): a record per epoch and per validation",
    )
    run.add_argument(
        "--json", action="store_true", help="print the final summary as one JSON object on stdout"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    mpi = parser.add_argument_group("data-parallel training over MPI (the [mpi] extra)")
    mpi.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="train data-parallel in K processes, started with mpiexec (the same "
        "as mpiexec -n K graphengine train ...)",
    )
    mpi.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="batch_norm statistics over the whole batch, from every process "
        "(default: each process's own slice)",
    )
    # For tests: hold each finished temporary checkpoint this long before its rename.
    parser.add_argument("--pause-before-rename", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.set_defaults(func=run_train)


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="report the loss and metrics of a model file on .npz data",
        description="Evaluate a model file (in inference mode) on .npz data and report the "
        "loss and the metrics of its training spec.",
    )
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    _add_data_options(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="examples per run (default: 256, or the spec's if larger)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_eval)
    # eval has no such options; _settings reads them through getattr.


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="DATA.npz",
        help="arrays named as the placeholders, one example per row",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="PLACEHOLDER=ARRAY",
        help="feed a placeholder from an array of another name (repeatable)",
    )
    parser.add_argument(
        "--loss",
        metavar="TENSOR|KIND",
        help="the loss tensor (default: the training spec's), or a loss to "
        f"add: {', '.join(LOSS_KINDS)} (with --predictions and --labels)",
    )
    parser.add_argument(
        "--huber-delta",
        type=float,
        default=1.0,
        metavar="D",
        help="huber loss: where it turns from quadratic to linear (default 1)",
    )
    names = ", ".join(m for m in METRICS if m != "top5_accuracy")
    parser.add_argument(
        "--metrics",
        metavar="M1,M2",
        help=f"metrics to report, from {names}, topK_accuracy (top5_accuracy)",
    )
    parser.add_argument(
        "--labels",
        metavar="ARRAY",
        help="the labels: an array of the data (a placeholder of its name is "
        "made when --loss KIND adds a loss) or a placeholder",
    )
    parser.add_argument(
        "--predictions",
        metavar="OUTPUT",
        help="the tensor of predictions or logits (an output name)",
    )


def _settings(args: argparse.Namespace, graph) -> dict[str, Any]:
    """Training settings given on the command line (None: not given)."""
    names = [*_OTHER_SETTINGS, *(row[2] for row in _SETTING_OPTIONS)]
    settings = {name: getattr(args, name, None) for name in names}
    if args.loss in LOSS_KINDS:
        for key in ("loss", "labels", "predictions"):
            settings.pop(key)  # _add_loss put them in the graph's spec
    if args.metrics:
        settings["metrics"] = _split(args.metrics)
    for option, key in (("trainable", "trainable"), ("freeze", "frozen")):
        if getattr(args, option, None):
            settings[key] = [p for item in getattr(args, option) for p in _split(item)]
    if getattr(args, "boundaries", None):
        settings["boundaries"] = [_number(v, int, "--boundaries") for v in _split(args.boundaries)]
    if getattr(args, "values", None):
        settings["values"] = [_number(v, float, "--values") for v in _split(args.values)]
    stop = _early_stopping(args, graph)
    if stop is not None:
        settings["early_stopping"] = stop
    if getattr(args, "monitor", None) and stop is None:
        settings["best_monitor"] = args.monitor
    if args.map:
        data_map = dict(graph.training.data_map) if graph.training is not None else {}
        settings["data_map"] = {**data_map, **_parse_map(args.map, "--map")}
    return settings


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _number(text: str, kind: type, option: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise CommandError(
            f"{option}: {text!r} is not {'an int' if kind is int else 'a number'}"
        ) from None


def _early_stopping(args: argparse.Namespace, graph) -> dict[str, Any] | None:
    """The early-stopping settings the options ask for, over the spec's (None: no
    option asks for it)."""
    given = {
        "patience": getattr(args, "patience", None),
        "min_delta": getattr(args, "min_delta", None),
        "monitor": getattr(args, "monitor", None),
        "mode": getattr(args, "mode", None),
        "restore_best": True if getattr(args, "restore_best", False) else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    current = graph.training.early_stopping if graph.training is not None else None
    wanted = (
        getattr(args, "early_stopping", False)
        or "patience" in given
        or ("restore_best" in given)
        or ("min_delta" in given)
    )
    if not wanted and current is None:
        return None
    import dataclasses

    base = dataclasses.asdict(current) if current is not None else {}
    return {**base, **given}


def _parse_map(items: list[str], option: str) -> dict[str, str]:
    """``PLACEHOLDER=ARRAY`` arguments as a dict."""
    out = {}
    for item in items:
        placeholder, sep, array = item.partition("=")
        if not sep or not placeholder or not array:
            raise CommandError(f"{option} {item!r}: expected PLACEHOLDER=ARRAY")
        out[placeholder] = array
    return out


def _check_counts(args: argparse.Namespace) -> None:
    for option, value, zero in (
        ("--checkpoint-every", args.checkpoint_every, "0 writes checkpoints at epoch ends only"),
        ("--keep", args.keep, "0 keeps every checkpoint"),
        ("--val-every", args.validate_every, "0 validates at epoch ends"),
        ("--log-every", args.log_every, "0 logs epochs only"),
        ("--patience", args.patience, "at least 1"),
    ):
        if value is not None and value < (1 if option == "--patience" else 0):
            raise CommandError(
                f"{option} must be >= {1 if option == '--patience' else 0} ({zero}), got {value}"
            )


def _check_maps(args: argparse.Namespace) -> None:
    """Each ``--map``/``--val-map`` must name an array of its data file: the trainer
    falls back to the array named as the placeholder when the mapped one is
    missing (so a spec's data_map fits files named either way), which would turn
    a typo on the command line into training on another array, silently."""
    from ..errors import TrainingError
    from ..npz_files import npz_names

    for option, items, source in (
        ("--map", args.map, args.data),
        ("--val-map", getattr(args, "val_map", []), getattr(args, "val", None)),
    ):
        if not items or source is None:
            continue
        names = npz_names(source, "data file", TrainingError)
        for placeholder, array in _parse_map(items, option).items():
            if array not in names:
                raise CommandError(
                    f"{option} {placeholder}={array}: '{source}' has no array {array!r}; "
                    f"its arrays are {', '.join(map(repr, names)) or 'none'}"
                )


def _add_loss(args: argparse.Namespace, graph, data: dict | None) -> None:
    """``--loss KIND``: add that loss to the graph, its labels placeholder made from
    the data's array."""
    if args.loss not in LOSS_KINDS:
        return
    if not args.predictions or not args.labels:
        outputs = ", ".join(repr(o) for o in graph.outputs) or "none"
        raise CommandError(
            f"--loss {args.loss} needs --predictions OUTPUT (the graph's outputs: "
            f"{outputs}) and --labels ARRAY (an array of the data)"
        )
    from ..training.losses import add_loss

    example = None
    labels = args.labels
    if data is not None and args.labels not in graph:
        if args.labels not in data:
            raise CommandError(
                f"--labels {args.labels!r}: the data have no such array; they "
                f"have {', '.join(map(repr, data)) or 'none'}"
            )
        example = data[args.labels]
    add_loss(
        graph,
        args.loss,
        _prediction_ref(graph, args.predictions),
        labels,
        example=example,
        delta=args.huber_delta,
    )


def _prediction_ref(graph, name: str) -> str:
    """An output given by its name as the user knows it: a tensor reference, or
    an output whose node is named so (ONNX output names become node names)."""
    if name in graph or (":" in name and name.rpartition(":")[0] in graph):
        return name
    matches = [ref for ref in graph.outputs if ref.split("/")[-1].split(":")[0] == name]
    if len(matches) == 1:
        return matches[0]
    outputs = ", ".join(repr(o) for o in graph.outputs) or "none"
    raise CommandError(
        f"--predictions {name!r} is not a tensor of graph '{graph.name}'; its outputs are {outputs}"
    )


def _resume_command(argv: list[str], where: Path) -> str:
    """The command line that continues an interrupted run from ``where``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--resume":
            skip = True
            continue
        if item.startswith("--resume="):
            continue
        out.append(item)
    return shlex.join(["graphengine", *out, "--resume", str(where)])


def run_train(args: argparse.Namespace) -> int:
    from ..mpi import launched_by_mpi
    from ..training.distributed import from_launcher, launch

    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers {args.workers}: give a number of processes >= 1")
    if (args.workers or 1) > 1 and not launched_by_mpi():
        return launch(args.workers, args.argv)
    parallel = from_launcher(sync_batch_norm=args.sync_batch_norm, workers=args.workers)
    if parallel is None:
        return _train(args, None)
    with parallel.stop_job_on_error("train", args.debug):
        return _train(args, parallel)


def _train(args: argparse.Namespace, parallel) -> int:
    from ..errors import TrainingInterrupted
    from ..serialize import load
    from ..training.data import load_npz
    from ..training.trainer import Trainer

    _check_counts(args)
    _check_maps(args)
    graph = load(args.file)
    data = load_npz(args.data) if args.loss in LOSS_KINDS else args.data
    _add_loss(args, graph, data if isinstance(data, dict) else None)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and args.resume is not None:
        resume = Path(args.resume)
        checkpoint_dir = resume if resume.is_dir() else resume.parent
    output = Path(args.output)
    log = args.log
    if log is None:
        log = (
            Path(checkpoint_dir) / "metrics.jsonl"
            if checkpoint_dir is not None
            else output.with_name(output.stem + ".metrics.jsonl")
        )
    if parallel is None or parallel.is_root:
        _check_outputs(args, output, checkpoint_dir)
    trainer = Trainer(
        graph,
        data,
        val=args.val,
        val_map=_parse_map(args.val_map, "--val-map"),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep,
        log=log,
        best_path=args.best if args.best else "",
        emergency_dir=output.with_name(output.name + ".interrupted"),
        progress=False if args.quiet or args.json else None,
        parallel=parallel,
        **_settings(args, graph),
    )
    trainer._checkpoint_pause = args.pause_before_rename
    try:
        result = trainer.fit(resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"graphengine train: {exc}", file=sys.stderr)
        if exc.checkpoint is not None:
            folder = Path(exc.checkpoint).parent
            print("resume with:\n  " + _resume_command(args.argv, folder), file=sys.stderr)
        return 130
    if parallel is not None and not parallel.is_root:
        return 0  # rank 0 writes the model
    graph.training = result.spec
    _save_model(graph, output, checkpoint_dir, args)
    summary = result.summary()
    summary.update(output=str(args.output), log=str(log))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    parts = "  ".join(f"{k} {v:.4g}" for k, v in summary["final"].items())
    line = f"trained {result.steps} steps in {result.seconds:.1f}s"
    if result.stopped:
        line += " (stopped early)"
    print(f"{line}{': ' + parts if parts else ''}")
    if result.best:
        best = result.best
        where = f", written to {best['path']}" if "path" in best else ""
        print(f"best {best['monitor']} {best['value']:.4g} at step {best['step']}{where}")
    print(f"wrote {args.output} (metrics log: {log})")
    return 0


def _check_outputs(args: argparse.Namespace, output: Path, checkpoint_dir: Any) -> None:
    """Refuse, before training, output paths that could not be written after it."""
    from ..errors import TrainingError
    from ..output_files import check_writable

    if checkpoint_dir is not None and Path(checkpoint_dir).exists():
        if not Path(checkpoint_dir).is_dir():
            raise TrainingError(
                f"checkpoint folder '{checkpoint_dir}' is a file; give --checkpoint-dir a folder"
            )
    check_writable(output, "trained model", "-o", TrainingError)
    best, option = None, "--best"
    if args.best:
        best = check_writable(args.best, "best model", option, TrainingError)
    elif checkpoint_dir is not None:
        best, option = Path(checkpoint_dir) / "best.pb", "--best (or --checkpoint-dir)"
        check_writable(best, "best model", option, TrainingError)
    inputs = [(args.data, "--data"), (args.val, "--val")]
    for target, flag in [(output, "-o"), (best, option)]:
        for source, name in inputs:
            if target is not None and source and _same_file(target, source):
                raise TrainingError(
                    f"{flag} '{target}' is the {name} file; writing the model there would "
                    f"destroy the data. Give {flag.split()[0]} another path"
                )


def _same_file(a: Any, b: Any) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:  # one of them does not exist (yet)
        return False


def _save_model(graph, output: Path, checkpoint_dir: Any, args: argparse.Namespace) -> None:
    """Write the trained model; if that fails (a full disk), say where the training
    is kept: the last checkpoint, or a copy of the model in the temporary folder."""
    import os
    import tempfile

    from ..errors import TrainingError
    from ..serialize import save
    from ..training.checkpoint import latest_checkpoint

    try:
        save(graph, output)
        return
    except OSError as exc:
        problem = f"cannot write the trained model '{output}' ({exc.strerror or exc})"
    newest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if newest is not None:
        raise TrainingError(
            f"{problem}; the training is kept in checkpoint '{newest}': free space, then "
            f"run the same command with --resume {checkpoint_dir} to write the model "
            "without training again"
        ) from None
    fallback = Path(tempfile.gettempdir()) / f"graphengine-trained-{os.getpid()}.pb"
    try:
        save(graph, fallback)
    except OSError:
        raise TrainingError(
            f"{problem}, nor to '{fallback}'; the trained parameters are lost. Free "
            "space and train again with --checkpoint-dir DIR"
        ) from None
    raise TrainingError(
        f"{problem}; the trained model was written to '{fallback}' instead: move it "
        f"where you want it (the -o folder needs space)"
    )


def run_eval(args: argparse.Namespace) -> int:
    from ..serialize import load
    from ..training.data import load_npz
    from ..training.evaluate import evaluate

    if args.batch_size is not None and args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_maps(args)
    graph = load(args.file)
    data = load_npz(args.data) if args.loss in LOSS_KINDS else args.data
    _add_loss(args, graph, data if isinstance(data, dict) else None)
    settings = _settings(args, graph)
    del settings["batch_size"]  # here --batch-size sizes evaluation runs, not a setting
    results = evaluate(graph, data, batch_size=args.batch_size, **settings)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print(
            "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()
            )
        )
    bad = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        print(
            f"graphengine eval: {', '.join(f'{k} is {results[k]}' for k in bad)}: the model or "
            "the data hold inf or nan values (check the data with numpy.isfinite)",
            file=sys.stderr,
        )
        return 1
    return 0
