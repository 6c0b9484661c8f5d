"""``graphengine render``: draw a model file with Graphviz.

    graphengine render model.pb -o model.svg
    graphengine render model.pb -o grad.png --view both --loss loss --feed x=x.npy --grad
    graphengine render big.pb -o big.svg --collapse-depth 0 --legend
"""

from __future__ import annotations

import argparse

from ..render import FORMATS, VIEWS, render
from .main import CommandError
from .run_cmd import read_feeds


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="draw the forward graph, the gradient graph or both with Graphviz",
        description="Draw a model file as an image (.svg, .png, .pdf; needs Graphviz's dot) "
                    "or as DOT text (.dot, no Graphviz needed).")
    parser.add_argument("file", help="model file (.pb or .pbtxt)")
    parser.add_argument("-o", "--output", required=True,
                        help=f"the drawing: a file ending in {', '.join('.' + f for f in FORMATS)}")
    parser.add_argument("--view", choices=VIEWS, default="forward",
                        help="forward nodes, gradient nodes (with the forward nodes they read), "
                             "or both (default forward)")
    parser.add_argument("--loss", help="the loss to differentiate for the gradient views of a "
                                       "forward graph (default: the file's training loss)")
    parser.add_argument("--feed", action="append", default=[], metavar="NAME=FILE",
                        help="run the graph with placeholder NAME fed from FILE.npy, "
                             "FILE.npz:ARRAY or FILE.npz, and write values on the nodes "
                             "(repeatable)")
    parser.add_argument("--grad", action="store_true",
                        help="with --feed: write d loss / d tensor beside each value")
    parser.add_argument("--legend", action="store_true", help="add a legend of the styles")
    parser.add_argument("--collapse-depth", type=int, metavar="K",
                        help="draw each scope deeper than K as one box (0: every top-level "
                             "scope is a box)")
    parser.add_argument("--scope", metavar="NAME", help="draw this scope alone")
    parser.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from ..serialize import load

    graph = load(args.file)
    feeds = read_feeds(args.feed, [])
    if args.grad and not feeds:
        raise CommandError("--grad writes gradients computed from data: give the inputs "
                           "with --feed NAME=FILE")
    path = render(graph, args.output, view=args.view, loss=args.loss, feeds=feeds or None,
                  grad=args.grad, legend=args.legend, collapse_depth=args.collapse_depth,
                  scope=args.scope)
    print(f"wrote {path}")
    return 0
