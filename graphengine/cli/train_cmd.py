"""``graphengine train`` and ``graphengine eval``: training and evaluating from files.

    graphengine train model.pb --data train.npz --val val.npz -o trained.pb
    graphengine train model.pb --data train.npz --loss loss --optimizer adam --lr 1e-3 \\
        --epochs 10 --checkpoint-dir ckpt -o trained.pb
    graphengine train model.pb --data train.npz --resume ckpt -o trained.pb
    graphengine eval trained.pb --data test.npz

Every training setting comes from the file's training spec unless an option
overrides it; a graph without a spec trains with defaults, its loss named by
``--loss`` (or found: its only scalar float output).  The trained model is the
same graph with new parameter values and the spec that was used, written
atomically.  The metrics of each epoch go to a JSON-lines log (``--log``; by
default ``metrics.jsonl`` in the checkpoint folder, else ``<output>.metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..training_spec import METRICS, OPTIMIZERS, SCHEDULES
from .main import CommandError


def add_parser(subparsers) -> None:
    _add_train(subparsers)
    _add_eval(subparsers)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model file on .npz data and write the trained model",
        description="Train a model file on .npz data (arrays named as the placeholders, one "
                    "example per row) and write the trained model. Options override the "
                    "file's training spec.")
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    parser.add_argument("-o", "--output", required=True, help="where to write the trained model")
    _add_data_options(parser)
    parser.add_argument("--val", metavar="VAL.npz", help="validation data, evaluated after "
                                                         "each epoch")
    parser.add_argument("--val-map", action="append", default=[], metavar="PLACEHOLDER=ARRAY",
                        help="feed a placeholder from this array of the validation data "
                             "(repeatable; default: as for the training data)")
    group = parser.add_argument_group("training settings (default: the file's training spec)")
    group.add_argument("--epochs", type=int, metavar="N", help="passes over the data")
    group.add_argument("--batch-size", type=int, metavar="B", help="examples per step")
    group.add_argument("--seed", type=int, metavar="S", help="seed of shuffling and dropout")
    group.add_argument("--optimizer", choices=list(OPTIMIZERS))
    group.add_argument("--lr", type=float, dest="learning_rate", metavar="LR", help="learning rate")
    group.add_argument("--momentum", type=float, metavar="M", help="SGD momentum")
    group.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                       help="SGD with Nesterov momentum")
    group.add_argument("--beta1", type=float, metavar="B1", help="Adam(W) first-moment decay")
    group.add_argument("--beta2", type=float, metavar="B2", help="Adam(W) second-moment decay")
    group.add_argument("--epsilon", type=float, metavar="EPS", help="Adam(W) denominator term")
    group.add_argument("--weight-decay", type=float, metavar="WD")
    group.add_argument("--clip-norm", type=float, dest="clip_global_norm", metavar="NORM",
                       help="clip gradients to this global L2 norm (0: no clipping)")
    group.add_argument("--schedule", choices=list(SCHEDULES), help="learning-rate schedule")
    group.add_argument("--warmup-steps", type=int, metavar="N",
                       help="linear warm-up over the first N steps")
    group.add_argument("--step-size", type=int, metavar="N",
                       help="step schedule: steps between decays")
    group.add_argument("--gamma", type=float, metavar="G", help="step schedule: decay factor")
    group.add_argument("--min-lr", type=float, metavar="LR", help="cosine schedule: final rate")
    group.add_argument("--total-steps", type=int, metavar="N",
                       help="cosine schedule: decay length (default: the whole run)")
    group.add_argument("--trainable", metavar="P1,P2", help="parameters to train (default: "
                                                            "every trainable parameter)")
    group.add_argument("--drop-last", action="store_true", default=None,
                       help="leave out each epoch's last partial batch (default: keep it, "
                            "smaller)")
    run = parser.add_argument_group("checkpoints and output")
    run.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoints here")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="also checkpoint every N steps (default: at epoch ends only)")
    run.add_argument("--keep", type=int, default=3, metavar="K",
                     help="keep the K newest checkpoints (default 3; 0 keeps all)")
    run.add_argument("--resume", metavar="DIR", help="continue from the newest checkpoint in "
                                                     "DIR (or from a checkpoint file)")
    run.add_argument("--log", metavar="FILE.jsonl", help="per-epoch metrics log (JSON lines)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    mpi = parser.add_argument_group("data-parallel training over MPI (the [mpi] extra)")
    mpi.add_argument("--workers", type=int, metavar="K",
                     help="train data-parallel in K processes, started with mpiexec (the same "
                          "as mpiexec -n K graphengine train ...)")
    mpi.add_argument("--sync-batch-norm", action="store_true",
                     help="batch_norm statistics over the whole batch, from every process "
                          "(default: each process's own slice)")
    # For tests: hold each finished temporary checkpoint this long before its rename.
    parser.add_argument("--pause-before-rename", type=float, default=0.0,
                        help=argparse.SUPPRESS)
    parser.set_defaults(func=run_train)


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="report the loss and metrics of a model file on .npz data",
        description="Evaluate a model file (in inference mode) on .npz data and report the "
                    "loss and the metrics of its training spec.")
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    _add_data_options(parser)
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="examples per run (default: 256, or the spec's if larger)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_eval)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA.npz",
                        help="arrays named as the placeholders, one example per row")
    parser.add_argument("--map", action="append", default=[], metavar="PLACEHOLDER=ARRAY",
                        help="feed a placeholder from an array of another name (repeatable)")
    parser.add_argument("--loss", help="the loss tensor (default: the training spec's)")
    parser.add_argument("--metrics", metavar="M1,M2",
                        help=f"metrics to report, from {', '.join(METRICS)}")
    parser.add_argument("--labels", help="accuracy: the placeholder holding the labels")
    parser.add_argument("--predictions", help="accuracy: the tensor of predictions or logits")


def _settings(args: argparse.Namespace, graph) -> dict[str, Any]:
    """Training settings given on the command line (None: not given)."""
    names = ["loss", "labels", "predictions", "epochs", "batch_size", "seed", "optimizer",
             "learning_rate", "momentum", "nesterov", "beta1", "beta2", "epsilon",
             "weight_decay", "clip_global_norm", "schedule", "warmup_steps", "step_size",
             "gamma", "min_lr", "total_steps", "drop_last"]
    settings = {name: getattr(args, name, None) for name in names}
    if args.metrics:
        settings["metrics"] = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if getattr(args, "trainable", None):
        settings["trainable"] = [p.strip() for p in args.trainable.split(",") if p.strip()]
    if args.map:
        data_map = dict(graph.training.data_map) if graph.training is not None else {}
        settings["data_map"] = {**data_map, **_parse_map(args.map, "--map")}
    return settings


def _parse_map(items: list[str], option: str) -> dict[str, str]:
    """``PLACEHOLDER=ARRAY`` arguments as a dict."""
    out = {}
    for item in items:
        placeholder, sep, array = item.partition("=")
        if not sep or not placeholder or not array:
            raise CommandError(f"{option} {item!r}: expected PLACEHOLDER=ARRAY")
        out[placeholder] = array
    return out


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
    from ..serialize import load, save
    from ..training.trainer import Trainer

    graph = load(args.file)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and args.resume is not None:
        resume = Path(args.resume)
        checkpoint_dir = resume if resume.is_dir() else resume.parent
    log = args.log
    if log is None:
        output = Path(args.output)
        log = (Path(checkpoint_dir) / "metrics.jsonl" if checkpoint_dir is not None
               else output.with_name(output.stem + ".metrics.jsonl"))
    trainer = Trainer(graph, args.data, val=args.val,
                      val_map=_parse_map(args.val_map, "--val-map"),
                      checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every,
                      keep_checkpoints=args.keep, log=log,
                      progress=False if args.quiet else None, parallel=parallel,
                      **_settings(args, graph))
    trainer._checkpoint_pause = args.pause_before_rename
    result = trainer.fit(resume=args.resume)
    if parallel is not None and not parallel.is_root:
        return 0  # rank 0 writes the model
    graph.training = result.spec
    save(graph, args.output)
    if not args.quiet:
        summary = "  ".join(f"{k} {v:.4g}" for k, v in result.final.items()
                            if k.startswith(("train_", "val_")))
        print(f"trained {result.steps} steps{': ' + summary if summary else ''}; "
              f"wrote {args.output} (metrics log: {log})", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..serialize import load
    from ..training.evaluate import evaluate

    graph = load(args.file)
    settings = _settings(args, graph)
    del settings["batch_size"]  # here --batch-size sizes evaluation runs, not a setting
    results = evaluate(graph, args.data, batch_size=args.batch_size, **settings)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in results.items()))
    return 0
