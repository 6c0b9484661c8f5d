"""``graphengine grad`` and ``graphengine check``: build and verify gradient graphs.

graphengine grad model.pb --loss loss [--wrt w --wrt b] -o model_grad.pb
graphengine grad model.pb --data-parallel [--sync-batch-norm] -o model_dp.pb
graphengine check model.pb --loss loss --feed x=x.npy [--wrt w]
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import GradientError


def add_parser(subparsers) -> None:
    grad = subparsers.add_parser(
        "grad",
        help="build the gradient graph of a model file by the chain rule",
        description="Differentiate LOSS with respect to each --wrt tensor (default: every "
        "trainable parameter) and save the gradient graph. Gradient outputs are "
        "named gradients/<wrt>.",
    )
    grad.add_argument("file", help="model file (.pb or .pbtxt)")
    _add_loss_and_wrt(grad)
    grad.add_argument("-o", "--output", required=True, help="where to save the gradient graph")
    grad.add_argument(
        "--seed-placeholder",
        action="store_true",
        help="for a non-scalar loss: feed the seed gradient at run time as gradients/seed",
    )
    grad.add_argument(
        "--unconnected",
        choices=["zeros", "error"],
        default="zeros",
        help="what a wrt tensor the loss does not depend on gets (default zeros)",
    )
    grad.add_argument(
        "--data-parallel",
        action="store_true",
        help="the gradient graph each process of a data-parallel job runs: the "
        "seed fed as gradients/seed (its share of the batch), then the "
        "loss and gradients summed over the processes by fused allreduce "
        "nodes",
    )
    grad.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="with --data-parallel: sync_batch_norm in place of batch_norm",
    )
    grad.set_defaults(func=run_grad)

    check = subparsers.add_parser(
        "check",
        help="compare analytic gradients with finite differences (float64)",
        description="Exit 0 when every gradient matches central finite differences, 1 otherwise.",
    )
    check.add_argument("file", help="model file (.pb or .pbtxt)")
    _add_loss_and_wrt(check)
    from .run_cmd import add_feed_arguments

    add_feed_arguments(check)
    check.add_argument("--rtol", type=float, default=1e-5)
    check.add_argument("--atol", type=float, default=1e-7)
    check.add_argument("--eps", type=float, default=1e-6, help="finite-difference step")
    check.add_argument(
        "--training",
        action="store_true",
        help="run in training mode (dropout active, batch norm on batch statistics)",
    )
    check.set_defaults(func=run_check)


def _add_loss_and_wrt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loss", help="the scalar to differentiate (default: the loss of the file's training spec)"
    )
    parser.add_argument(
        "--wrt",
        action="append",
        metavar="NAME",
        help="a tensor to differentiate with respect to (repeatable; default: "
        "every trainable parameter)",
    )


def _loss_of(graph, args) -> str:
    if args.loss:
        return args.loss
    if graph.training is not None and getattr(graph.training, "loss", ""):
        return graph.training.loss
    raise GradientError(
        "name the tensor to differentiate with --loss (the file has no "
        "training spec that names a loss)"
    )


def run_grad(args: argparse.Namespace) -> int:
    from ..gradients import GradientWarning, gradients
    from ..serialize import load, save

    graph = load(args.file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradientWarning)
        if args.data_parallel:
            from ..training.distributed import data_parallel_gradients

            wrt = args.wrt or [n.name for n in graph.parameters(trainable=True)]
            result = data_parallel_gradients(
                graph, _loss_of(graph, args), wrt, sync_batch_norm=args.sync_batch_norm
            )
        else:
            result = gradients(
                graph,
                _loss_of(graph, args),
                args.wrt,
                grad_ys="placeholder" if args.seed_placeholder else None,
                unconnected=args.unconnected,
            )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    save(result, args.output)
    info = result.gradient
    print(f"wrote {args.output}: {len(info.nodes)} gradient nodes for {len(graph)} forward nodes")
    for wrt, grad in info.grads.items():
        print(f"  d {info.loss} / d {wrt}  ->  {grad}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..gradcheck import gradcheck
    from ..serialize import load
    from .run_cmd import read_feeds

    graph = load(args.file)
    feeds = read_feeds(args.feed, args.feed_npz)
    result = gradcheck(
        graph,
        _loss_of(graph, args),
        args.wrt,
        feeds,
        eps=args.eps,
        rtol=args.rtol,
        atol=args.atol,
        training=args.training,
    )
    print(result)
    if not result.ok:
        # Finite differences straddle kinks: relu or abs exactly at 0, max-pool ties.
        print(
            "gradient check FAILED (if inputs sit exactly on a kink, such as relu at 0 or "
            "tied maxima, try other feeds or --training)",
            file=sys.stderr,
        )
        return 1
    print("gradient check passed")
    return 0
