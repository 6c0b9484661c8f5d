"""Spec tables for ops: one row per case, shared checks for every family.

A family's test module declares ``SPECS = [OpSpec(...), ...]`` and calls
``forward_tests(SPECS)`` / ``gradient_tests(SPECS)`` to get parametrized tests.
``tests/ops/test_registry.py`` walks the registry and fails when an op has no
row, or a differentiable op no gradient row.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import graphengine as ge


@dataclass
class OpSpec:
    """One case of one op.

    ``build(*tensors)`` builds the op on placeholders made from ``inputs``;
    ``reference(*arrays)`` is the plain numpy answer.  ``inputs`` are arrays
    (float64 for float inputs; the forward check also runs them as float32).
    ``grad`` lists the input positions to gradient-check (default: every float
    input; ``()`` for none).  ``batch`` makes dimension 0 of every input symbolic.
    Every gradient row also checks second order (a Hessian-vector product against
    finite differences of the gradient); ``order2=False`` opts out, with the
    reason beside it (a tie, where the gradient itself jumps).
    """

    op: str
    build: Callable[..., Any]
    reference: Callable[..., Any]
    inputs: Sequence[np.ndarray]
    id: str = ""
    grad: Sequence[int] | None = None
    batch: bool = False
    rtol: float = 1e-6
    atol: float = 1e-9
    grad_rtol: float = 1e-5
    grad_atol: float = 1e-7
    eps: float = 1e-6
    check_float32: bool = True
    training: bool = False
    order2: bool = True
    marks: tuple = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.op}-{self.id}" if self.id else self.op

    def grad_positions(self) -> list[int]:
        if self.grad is not None:
            return list(self.grad)
        opdef = ge.ops.get_op(self.op)
        if not opdef.differentiable:
            return []
        return [
            i
            for i, a in enumerate(self.inputs)
            if np.asarray(a).dtype.kind == "f" and opdef.input_spec(i).differentiable
        ]


def make_graph(spec: OpSpec, dtype=None):
    """Placeholders p0, p1, ... for the spec's inputs, and the built output."""
    g = ge.Graph("spec")
    tensors, feeds = [], {}
    for i, value in enumerate(spec.inputs):
        value = np.asarray(value)
        if dtype is not None and value.dtype.kind == "f":
            value = value.astype(dtype)
        shape = list(value.shape)
        if spec.batch and shape:
            shape[0] = None
        tensors.append(g.placeholder(f"p{i}", shape, value.dtype))
        feeds[f"p{i}"] = value
    out = spec.build(*tensors)
    return g, out, feeds


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_forward(spec: OpSpec, dtype=None) -> None:
    g, out, feeds = make_graph(spec, dtype)
    outs = _outputs(out)
    got = ge.run(g, outs, feeds, training=spec.training)
    expected = _outputs(spec.reference(*feeds.values()))
    assert len(expected) == len(outs), spec.name
    for tensor, want in zip(outs, expected):
        have = got[tensor.name]
        want = np.asarray(want)
        assert have.shape == want.shape, f"{spec.name}: shape {have.shape} != {want.shape}"
        assert have.dtype == want.dtype, f"{spec.name}: dtype {have.dtype} != {want.dtype}"
        # The inferred type must agree with what the kernel produced.
        assert tensor.dtype == have.dtype, f"{spec.name}: inferred dtype {tensor.dtype}"
        for dim, size in zip(tensor.shape, have.shape):
            assert not isinstance(dim, int) or dim == size, (
                f"{spec.name}: inferred shape {tensor.shape}, kernel gave {have.shape}"
            )
        assert len(tensor.shape) == have.ndim
        tol = (spec.rtol, spec.atol) if have.dtype != np.float32 else (1e-5, 1e-6)
        np.testing.assert_allclose(have, want, rtol=tol[0], atol=tol[1], err_msg=spec.name)


def check_gradient(spec: OpSpec) -> None:
    g, out, feeds = make_graph(spec)
    rng = np.random.default_rng(1)
    # A random linear functional of every float output makes a scalar loss whose
    # gradient exercises each output element with a different weight.
    terms = []
    for t in _outputs(out):
        if t.dtype.kind != "f":
            continue
        value = ge.run(g, t, feeds, training=spec.training)
        weights = g.constant(rng.uniform(0.5, 1.5, size=value.shape).astype(t.dtype))
        terms.append(ge.sum(t * weights))
    loss = terms[0] if len(terms) == 1 else ge.add_n(terms)
    wrt = [f"p{i}" for i in spec.grad_positions()]
    result = ge.gradcheck(
        g,
        loss,
        wrt,
        feeds,
        eps=spec.eps,
        rtol=spec.grad_rtol,
        atol=spec.grad_atol,
        training=spec.training,
    )
    assert result.ok, f"{spec.name}:\n{result}"
    if spec.order2:
        check_hvp(g, loss, wrt, feeds, spec)


def check_hvp(g, loss, wrt, feeds, spec: OpSpec) -> None:
    """Second order: the gradient of <grad f, v> is H v; compare it with finite
    differences of the gradient."""
    from graphengine.gradcheck import to_float64

    g64 = to_float64(g)
    feeds = {
        k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
        for k, v in feeds.items()
    }
    rng = np.random.default_rng(2)
    tg = ge.gradients(g64, loss.name, wrt)
    vs = {w: rng.standard_normal(np.shape(feeds[w])) for w in wrt}
    dot = ge.add_n([ge.sum(tg.tensor(tg.gradient.grads[w]) * tg.constant(vs[w])) for w in wrt])
    with warnings.catch_warnings():
        # A linear op has a zero Hessian: no gradient reaches wrt the second time.
        warnings.simplefilter("ignore", ge.GradientWarning)
        hg = ge.gradients(tg, dot, wrt)
    hv = ge.run(hg, [hg.gradient.grads[w] for w in wrt], feeds)
    eps = 1e-5
    plus = {w: feeds[w] + eps * vs[w] for w in wrt}
    minus = {w: feeds[w] - eps * vs[w] for w in wrt}
    gp = ge.run(tg, [tg.gradient.grads[w] for w in wrt], {**feeds, **plus})
    gm = ge.run(tg, [tg.gradient.grads[w] for w in wrt], {**feeds, **minus})
    for w in wrt:
        numeric = (gp[tg.gradient.grads[w]] - gm[tg.gradient.grads[w]]) / (2 * eps)
        np.testing.assert_allclose(
            hv[hg.gradient.grads[w]],
            numeric,
            rtol=1e-4,
            atol=1e-6,
            err_msg=f"{spec.name}: Hessian-vector product wrt {w}",
        )


def planned_ops_matching_unplanned(graph, fetches, feed) -> set[str]:
    """Three runs of a plan that reuses its buffers (recording, then planned twice)
    each equal, bit for bit, to an unplanned plan's run; returns the ops of the
    steps that got a planned buffer."""
    from graphengine.executor import compile_plan

    want = compile_plan(graph, fetches, list(feed)).run(feed)
    plan = compile_plan(graph, fetches, list(feed), reuse_fetch_buffers=True)
    for _ in range(3):
        for have, expected in zip(plan.run(feed), want):
            assert have.dtype == expected.dtype and have.shape == expected.shape
            np.testing.assert_array_equal(have, expected)
    (buffers,) = [b for b in plan._memory.values() if b]
    return {s.node.op for s, b in zip(plan.steps, buffers) if b is not None}


def check_build_error(build, fragment: str, shape) -> None:
    """``build(graph, x)`` on a float32 placeholder of ``shape`` must raise a
    ShapeError that names the node and contains ``fragment``."""
    g = ge.Graph()
    x = g.placeholder("x", shape)
    with pytest.raises(ge.ShapeError, match="node '") as info:
        build(g, x)
    assert fragment in str(info.value)


def _params(specs, keep=lambda s: True):
    return [pytest.param(s, id=s.name, marks=s.marks) for s in specs if keep(s)]


def forward_tests(specs: Sequence[OpSpec]):
    """Parametrized forward tests (float64, and float32 where asked) for a module."""

    @pytest.mark.parametrize("spec", _params(specs))
    def test_forward(spec):
        check_forward(spec)
        if spec.check_float32 and any(np.asarray(a).dtype == np.float64 for a in spec.inputs):
            check_forward(spec, np.float32)

    return test_forward


def gradient_tests(specs: Sequence[OpSpec]):
    """Parametrized finite-difference gradient tests for a module."""

    @pytest.mark.parametrize("spec", _params(specs, lambda s: s.grad_positions()))
    def test_gradient(spec):
        check_gradient(spec)

    return test_gradient
