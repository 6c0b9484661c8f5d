"""Benchmark: drawing the gallery and a 5,000-node graph, our DOT against Graphviz's layout.

For each gallery model (examples/gallery.py) in each view, and for an MLP-like
graph of 50 scopes of ~100 nodes (each scope holds nested layer scopes), times
separately our DOT generation (``to_dot``, best of ``--repeat``) and Graphviz's
layout (``dot -Tsvg``, once), and prints both, their ratio and the whole
``render`` time.  The drawing should spend its time in ``dot``, not in our code,
and every gallery view should take well under 10 s.

    python tools/bench_render.py [--repeat 3] [--format svg] [--skip-gallery]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import pathlib
import warnings

import numpy as np
from timing import best_of

import graphengine as ge
from graphengine.render import RenderWarning, run_dot

ROOT = pathlib.Path(__file__).resolve().parent.parent


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


def _gallery():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "examples" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(label: str, graph: ge.Graph, repeat: int, fmt: str, **options) -> None:
    """One line: units drawn, our DOT time, dot's time, their ratio."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RenderWarning)  # the automatic collapse
        ours, text = best_of(repeat, functools.partial(ge.to_dot, graph, **options))
    theirs, image = best_of(1, functools.partial(run_dot, text, fmt, None))
    units = sum(
        1
        for line in text.splitlines()
        if line.lstrip().startswith('"')
        and " -> " not in line
        and not line.lstrip().startswith('"#legend"')
    )
    print(
        f"{label:<36} {units:>5} {text.count(' -> '):>6} {ours * 1000:>9.1f} "
        f"{theirs * 1000:>9.1f} {ours / theirs:>7.3f} {(ours + theirs):>7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--format", default="svg", choices=["svg", "png"])
    parser.add_argument("--skip-gallery", action="store_true")
    args = parser.parse_args()

    print(
        f"{'drawing':<36} {'units':>5} {'edges':>6} {'ours ms':>9} {'dot ms':>9} "
        f"{'ratio':>7} {'total s':>7}"
    )
    if not args.skip_gallery:
        gallery = _gallery()
        for name, build in gallery.MODELS.items():
            graph = build()
            graph = ge.gradients(graph, graph.training.loss)
            for view in gallery.VIEWS:
                measure(f"{name} {view}", graph, args.repeat, args.format, view=view)
    graph = build_graph(50, 100)
    both = ge.gradients(graph, "loss")
    print(f"bench graph: {len(graph):,} forward nodes, {len(both):,} with its gradient")
    measure("5,000 nodes forward (auto collapse)", graph, args.repeat, args.format)
    measure("5,000 nodes forward, collapse 1", graph, args.repeat, args.format, collapse_depth=1)
    measure("5,000 nodes both (auto collapse)", both, args.repeat, args.format, view="both")


if __name__ == "__main__":
    main()
