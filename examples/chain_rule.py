"""The chain rule as a graph: y = f(g(x)) and dy/dx = f'(g(x)) * g'(x).

Equation 1.1 of the chapter this project grew from.  Here g(x) = x**2 and
f(u) = sin(u), so dy/dx = cos(x**2) * 2x.  The script builds the forward graph,
saves it, builds the gradient graph by the chain rule, saves and draws it, and
checks that the nodes of the gradient graph compute the two factors:

    gradients/g/...   g'(x) = 2x         (the rule of square)
    gradients/f/...   f'(g(x)) = cos(u)  (the rule of sin, reading u = g(x))

Run it:  python examples/chain_rule.py [--out out/chain_rule]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import graphengine as ge


def build() -> ge.Graph:
    """y = f(g(x)) with g(x) = x**2 and f(u) = sin(u), one name scope each."""
    graph = ge.Graph("chain_rule")
    x = graph.placeholder("x", shape=(), dtype="float64")
    with graph.name_scope("g"):
        u = ge.square(x, name="u")  # g(x) = x**2
    with graph.name_scope("f"):
        ge.sin(u, name="y")  # y = f(u) = sin(u)
    graph.mark_output("f/y")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/chain_rule", help="output folder")
    parser.add_argument("--x", type=float, default=1.5, help="where to evaluate dy/dx")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    graph = build()
    graph.save(out / "chain_rule.pb")
    forward = ge.load(out / "chain_rule.pb")

    grad = ge.gradients(forward, loss="f/y", wrt=["x"])
    grad.save(out / "chain_rule_grad.pb")
    ge.render(grad, out / "chain_rule_grad.svg", view="both")
    ge.render(grad, out / "chain_rule_grad.png", view="both")

    # Each gradient node records the forward node it derives from: the factor
    # computed for f reads u = g(x), the factor for g reads x.
    saved = ge.load(out / "chain_rule_grad.pb")
    for name in saved.gradient.nodes:
        node = saved.node(name)
        print(
            f"  {name:<28} {node.op:<10} inputs {', '.join(node.inputs):<32} "
            f"derives from {node.derived_from}"
        )

    x = np.float64(args.x)
    got = ge.run(saved, ["f/y", "gradients/x"], {"x": x})
    expected = np.cos(x**2) * 2 * x
    print(f"y = sin(x**2) at x = {x}: {got['f/y']:.10f}")
    print(f"dy/dx from the gradient graph: {got['gradients/x']:.10f}")
    print(f"f'(g(x)) * g'(x) = cos(x**2) * 2x: {expected:.10f}")
    assert np.isclose(got["gradients/x"], expected, rtol=1e-12), "chain rule mismatch"
    print(f"wrote {out}/chain_rule.pb, chain_rule_grad.pb and chain_rule_grad.svg/.png")


if __name__ == "__main__":
    main()
