"""Benchmark: time to build the gradient graph of a 10,000-node forward graph,
and how that time grows up to 100,000 nodes.

Two references are timed in the same run, so machine noise affects all figures
alike: building the forward graph itself through the public API, and building a
NetworkX DiGraph with the same nodes and edges (plain Python work of the same
size that none of our code takes part in).  Each figure is the fastest of
``--repeat`` runs in wall-clock time (``time.perf_counter``) and, separately, in
this process's CPU time (``time.process_time``), which other processes on a
shared machine disturb less.  The script prints each time and the ratios;
``--scaling`` also prints the time per forward node at 10k, 30k and 100k nodes
(linear growth keeps it flat).

    python tools/bench_gradients.py [--nodes 10000] [--repeat 3] [--scaling]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

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


def build_networkx(graph: ge.Graph) -> nx.DiGraph:
    """The neutral reference: the same nodes and edges as a NetworkX DiGraph."""
    d = nx.DiGraph()
    for node in graph.nodes:
        d.add_node(node.name, op=node.op)
        for ref in node.inputs:
            d.add_edge(ref.partition(":")[0], node.name)
    return d


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """The fastest of ``repeat`` calls of ``fn`` in wall-clock seconds and in CPU
    seconds (each minimum taken on its own), and the last result."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        result = None  # the previous result is freed here, outside the timing
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpu = min(cpu, time.process_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start)
    return wall, cpu, result


def _ms(wall: float, cpu: float) -> str:
    return f"{wall * 1e3:.0f} ms ({cpu * 1e3:.0f} ms CPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--scaling", action="store_true", help="also time 10k, 30k and 100k forward nodes"
    )
    args = parser.parse_args()
    build_time, build_cpu, (g, loss) = best_of(args.repeat, lambda: build_forward(args.nodes))
    nx_time, nx_cpu, _ = best_of(args.repeat, lambda: build_networkx(g))
    grad_time, grad_cpu, tg = best_of(args.repeat, lambda: ge.gradients(g, loss))
    added = len(tg.gradient.nodes)
    print(f"forward graph: {len(g)} nodes, built in {_ms(build_time, build_cpu)} (reference 1)")
    print(f"networkx DiGraph of it: {_ms(nx_time, nx_cpu)} (reference 2)")
    print(
        f"gradient graph: {added} nodes added ({added / len(g):.2f} per forward node), "
        f"built in {_ms(grad_time, grad_cpu)}; target < 300 ms"
    )
    print(
        f"ratio gradient pass / forward build: {grad_time / build_time:.2f} "
        f"(CPU {grad_cpu / build_cpu:.2f})"
    )
    print(
        f"ratio gradient pass / networkx DiGraph: {grad_time / nx_time:.2f} "
        f"(CPU {grad_cpu / nx_cpu:.2f})"
    )
    if args.scaling:
        for size in (10_000, 30_000, 100_000):
            g, loss = build_forward(size)
            # Two runs at least even for the largest graph: the first one there
            # also pays for the memory it is the first to touch.
            repeat = args.repeat if size <= 30_000 else 2
            seconds, cpu, tg = best_of(repeat, lambda g=g, loss=loss: ge.gradients(g, loss))
            ref, ref_cpu, _ = best_of(repeat, lambda g=g: build_networkx(g))
            print(
                f"{len(g):>7} forward nodes: {len(tg.gradient.nodes):>7} added, "
                f"{seconds:.3f} s ({cpu:.3f} s CPU), {seconds / len(g) * 1e6:.1f} us "
                f"({cpu / len(g) * 1e6:.1f} us CPU) per forward node "
                f"({seconds / ref:.2f}x its networkx DiGraph, CPU {cpu / ref_cpu:.2f}x)"
            )


if __name__ == "__main__":
    main()
