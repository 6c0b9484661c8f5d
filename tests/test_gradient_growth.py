"""The benchmark graph of tools/bench_gradients.py: its gradient graph grows
exactly linearly in node count (the timing itself is a benchmark, not a test)."""

import importlib.util
import pathlib
import sys

import graphengine as ge

TOOLS = pathlib.Path(__file__).resolve().parent.parent / "tools"


def _bench():
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_gradients", TOOLS / "bench_gradients.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TOOLS))


def test_gradient_nodes_grow_linearly_with_the_forward_graph():
    bench = _bench()
    added = {}
    for size in (1_000, 2_000, 4_000):
        g, loss = bench.build_forward(size)
        added[len(g)] = len(ge.gradients(g, loss).gradient.nodes)
    sizes = sorted(added)
    per_node = [(added[b] - added[a]) / (b - a) for a, b in zip(sizes, sizes[1:])]
    # Each extra layer adds the same nodes: the increments per forward node agree.
    assert abs(per_node[0] - per_node[1]) < 0.01, per_node
    assert per_node[0] < 1.6
