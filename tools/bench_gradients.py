"""Benchmark: time to build the gradient graph of a 10,000-node forward graph.

The reference, measured in the same run, is the time to build the forward graph
itself through the public API (so machine noise affects both); the script
prints both times and their ratio.

    python tools/bench_gradients.py [--nodes 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of

import graphengine as ge


def build_forward(num_nodes: int) -> tuple[ge.Graph, ge.Tensor]:
    """A residual stack of small layers, each ~10 nodes, until num_nodes is reached."""
    g = ge.Graph("bench")
    x = g.placeholder("x", (None, 8))
    h = x
    layer = 0
    while len(g) < num_nodes - 4:
        with g.name_scope(f"layer{layer}"):
            w = g.parameter("w", shape=(8,))
            b = g.parameter("b", np.zeros(8, np.float32))
            z = ge.tanh(ge.sum(h * w, axis=1, keepdims=True) + b)
            h = h + z * 0.5
        layer += 1
    loss = ge.mean(h * h, name="loss")
    return g, loss



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    build_time, (g, loss) = best_of(args.repeat, lambda: build_forward(args.nodes))
    grad_time, tg = best_of(args.repeat, lambda: ge.gradients(g, loss))
    added = len(tg.gradient.nodes)
    print(f"forward graph: {len(g)} nodes, built in {build_time * 1e3:.0f} ms (reference)")
    print(f"gradient graph: {added} nodes added ({added / len(g):.2f} per forward node), "
          f"built in {grad_time * 1e3:.0f} ms")
    print(f"ratio gradient pass / forward build: {grad_time / build_time:.2f}")


if __name__ == "__main__":
    main()
