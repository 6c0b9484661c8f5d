"""``graphengine render``: draw a model file with Graphviz.

graphengine render model.pb -o model.svg
graphengine render model.pb -o grad.png --view both --loss loss --feed x=x.npy --grad
graphengine render big.pb -o big.svg --collapse-depth 1 --no-legend
"""

from __future__ import annotations

import argparse
import warnings

from ..render import DOT_TIMEOUT, FORMATS, NODE_BUDGET, VIEWS, RenderWarning, render
from ..render.dot import DIRECTIONS
from .main import CommandError
from .run_cmd import read_feeds


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="draw the forward graph, the gradient graph or both with Graphviz",
        description="Draw a model file as an image (.svg, .png, .pdf; needs Graphviz's dot) "
        "or as DOT text (.dot, no Graphviz needed).",
    )
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help=f"the drawing: a file ending in {', '.join('.' + f for f in FORMATS)}",
    )
    parser.add_argument(
        "--view",
        choices=VIEWS,
        default="forward",
        help="forward nodes, the backward pass, or both (default forward)",
    )
    parser.add_argument(
        "--loss",
        help="the loss to differentiate for the gradient views of a "
        "forward graph (default: the file's training loss)",
    )
    parser.add_argument(
        "--feed",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="run the graph with placeholder NAME fed from FILE.npy, "
        "FILE.npz:ARRAY or FILE.npz, and write values on the nodes "
        "(repeatable)",
    )
    parser.add_argument(
        "--grad", action="store_true", help="with --feed: write d loss / d tensor beside each value"
    )
    parser.add_argument(
        "--legend",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw a legend of the styles (default on)",
    )
    parser.add_argument(
        "--collapse-depth",
        type=int,
        metavar="K",
        help="draw each scope nested K or more deep as one box (1: every top-level scope is a box)",
    )
    parser.add_argument("--scope", metavar="NAME", help="draw this scope alone")
    parser.add_argument(
        "--expand",
        action="append",
        metavar="NODE",
        help="draw the gradient of forward node NODE node by node instead of "
        "as one box; 'all' or 'none' for every one (default: all when "
        "the view has at most 40 gradient nodes; repeatable)",
    )
    parser.add_argument(
        "--derived",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="link each forward op to the box of its gradient (default on)",
    )
    parser.add_argument(
        "--reads", action="store_true", help="also draw the forward values that gradient rules read"
    )
    parser.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="auto",
        help="TB: forward flow downwards; LR: rightwards; auto (default): "
        "whichever keeps the picture nearer 4:3",
    )
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=NODE_BUDGET,
        metavar="N",
        help=f"collapse scopes automatically above N drawn nodes (default "
        f"{NODE_BUDGET}; 0: no limit)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DOT_TIMEOUT,
        metavar="SECONDS",
        help=f"stop Graphviz's dot after SECONDS (default {DOT_TIMEOUT:g})",
    )
    parser.set_defaults(func=run_render)


def _expand_option(values: list[str] | None) -> bool | list[str] | None:
    if not values:
        return None
    if values == ["all"]:
        return True
    if values == ["none"]:
        return False
    if "all" in values or "none" in values:
        raise CommandError(
            "--expand all and --expand none stand alone: give either one of "
            "them or forward node names"
        )
    return values


def run_render(args: argparse.Namespace) -> int:
    from ..serialize import load

    graph = load(args.file)
    feeds = read_feeds(args.feed, [])
    if args.grad and not feeds:
        raise CommandError(
            "--grad writes gradients computed from data: give the inputs with --feed NAME=FILE"
        )
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be positive, got {args.timeout:g}")
    if args.max_nodes < 0:
        raise CommandError(f"--max-nodes must be 0 (no limit) or more, got {args.max_nodes}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RenderWarning)
        path = render(
            graph,
            args.output,
            view=args.view,
            loss=args.loss,
            feeds=feeds or None,
            grad=args.grad,
            legend=args.legend,
            collapse_depth=args.collapse_depth,
            scope=args.scope,
            expand=_expand_option(args.expand),
            derived=args.derived,
            reads=args.reads,
            direction=args.direction,
            max_nodes=args.max_nodes or None,
            timeout=args.timeout,
        )
    for warning in caught:
        if issubclass(warning.category, RenderWarning):
            print(f"graphengine render: note: {warning.message}")
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    print(f"wrote {path}")
    return 0
