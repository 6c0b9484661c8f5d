"""Benchmark: drawing a 5,000-node graph to SVG, collapsed by scope.

Builds an MLP-like graph of 50 scopes of ~100 nodes (each scope holds ten
nested layer scopes), then times separately our DOT generation (``to_dot``)
and Graphviz's layout (``dot -Tsvg``), and prints both and their ratio.  The
drawing should spend its time in ``dot``, not in our code.

    python tools/bench_render.py [--scopes 50] [--nodes-per-scope 100] [--depth 0 1]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from timing import best_of

import graphengine as ge
from graphengine.render import run_dot


def build_graph(scopes: int, nodes_per_scope: int) -> ge.Graph:
    """``scopes`` blocks, each of nested ``layer<j>`` scopes of 5 nodes, ``tanh(h*w + b)``."""
    g = ge.Graph("bench")
    h = g.placeholder("x", (None, 16))
    for i in range(scopes):
        with g.name_scope(f"block{i}"):
            start, j = len(g), 0
            while len(g) - start < nodes_per_scope:
                with g.name_scope(f"layer{j}"):
                    w = g.parameter("w", shape=(16,))
                    b = g.parameter("b", np.zeros(16, np.float32))
                    h = ge.tanh(h * w + b)
                j += 1
    ge.mean(h * h, name="loss")
    return g



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, default=50)
    parser.add_argument("--nodes-per-scope", type=int, default=100)
    parser.add_argument("--depth", type=int, nargs="+", default=[0, 1],
                        help="collapse depths to measure")
    parser.add_argument("--view", choices=["forward", "both"], default="forward")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    graph = build_graph(args.scopes, args.nodes_per_scope)
    if args.view == "both":
        graph = ge.gradients(graph, "loss")
    print(f"graph: {len(graph)} nodes, {args.scopes} scopes, view {args.view}")
    for depth in args.depth:
        ours, text = best_of(args.repeat, functools.partial(
            ge.to_dot, graph, view=args.view, collapse_depth=depth))
        theirs, svg = best_of(1, functools.partial(run_dot, text, "svg"))
        print(f"collapse depth {depth}: {text.count(' -> ')} edges, DOT {len(text):,} bytes, "
              f"SVG {len(svg):,} bytes")
        print(f"  our DOT generation {ours * 1000:8.1f} ms")
        print(f"  dot -Tsvg          {theirs * 1000:8.1f} ms")
        print(f"  ratio ours / dot   {ours / theirs:8.3f}")


if __name__ == "__main__":
    main()
