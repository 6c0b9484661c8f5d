"""``graphengine optimize``: run the optimization passes over a model file.

graphengine optimize model.pb -o model_opt.pb [--passes dce,cse,fuse] [--report]
"""

from __future__ import annotations

import argparse

from .main import CommandError

_PASS_NAMES = ("dce", "fold", "cse", "simplify", "fuse")  # graphengine.passes.PASSES
_DEFAULT = ("dce", "fold", "cse", "simplify", "cse", "fuse")  # passes.DEFAULT_PASSES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="simplify and fuse a graph (constant folding, CSE, fusion ...)",
        description="Run optimization passes over FILE and save the result. The passes "
        f"({', '.join(_PASS_NAMES)}) keep the declared outputs, the gradient "
        "and training tensors, placeholders and parameters under their names.",
    )
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    parser.add_argument("-o", "--output", required=True, help="where to save the result")
    parser.add_argument(
        "--passes",
        metavar="LIST",
        help=f"comma-separated passes, run in that order (default: {','.join(_DEFAULT)})",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="NAME",
        help="a tensor that must survive under its name (repeatable)",
    )
    parser.add_argument(
        "--max-fold-elements",
        type=int,
        default=None,
        metavar="N",
        help="largest tensor constant folding may create (default 65536)",
    )
    parser.add_argument(
        "--report", action="store_true", help="print each pass with its node counts and time"
    )
    parser.set_defaults(func=run_optimize)


def run_optimize(args: argparse.Namespace) -> int:
    from ..passes import MAX_FOLD_ELEMENTS, optimize
    from ..serialize import load, save

    passes = None
    if args.passes is not None:
        passes = [p.strip() for p in args.passes.split(",") if p.strip()]
        if not passes:
            raise CommandError("--passes: give at least one pass name")
    limit = MAX_FOLD_ELEMENTS if args.max_fold_elements is None else args.max_fold_elements
    if limit < 0:
        raise CommandError("--max-fold-elements must be >= 0")
    graph = load(args.file)
    result, report = optimize(graph, passes, keep=args.keep, max_fold_elements=limit)
    save(result, args.output)
    if args.report:
        print(report)
    print(f"wrote {args.output}: {report.nodes_before} -> {report.nodes_after} nodes")
    return 0
