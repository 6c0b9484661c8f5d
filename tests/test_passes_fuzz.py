"""An adversarial property for the optimization passes: random float64 graphs drawn
from a wide slice of the op registry (broadcasting across ranks 0-3, reductions
with negative axes and keepdims, matmuls with transposes, shape-op chains,
softmax on several axes, cross-entropy by hand and fused, layer norm, dense
layers with every activation the fuser knows, scalar constants, duplicate
subexpressions, dead branches, and fetched intermediates that fusion must keep).

Each pass alone and the whole pipeline must leave every output and every
gradient unchanged (batch sizes 1 and 5), never add nodes, and give a graph that
saves and loads with the same results."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import graphengine as ge
from graphengine.passes import PASSES
from tests.test_passes import _compare, _gradient_graph

K, M = 4, 3  # feature widths; never square with each other
F64 = "float64"

UNARY = [
    "exp_tanh",
    "tanh",
    "sigmoid",
    "relu",
    "negative",
    "square",
    "sin",
    "cos",
    "abs",
    "softplus",
    "log_safe",
    "sqrt_safe",
    "leaky_relu",
    "elu",
    "gelu",
]
BINARY = ["add", "subtract", "multiply", "maximum", "minimum", "divide_safe"]
ACTIVATIONS = [None, "relu", "tanh", "sigmoid"]


def _unary(name, a):
    if name == "exp_tanh":  # exp, bounded so chains of it stay finite
        return ge.exp(ge.tanh(a))
    if name == "log_safe":
        return ge.log(ge.square(a) + 0.5)
    if name == "sqrt_safe":
        return ge.sqrt(ge.square(a) + 0.25)
    return getattr(ge, name)(a)


def _binary(name, a, b):
    if name == "divide_safe":
        return a / (ge.square(b) + 1.0)
    return getattr(ge, name)(a, b)


def _broadcasts(a, b):
    """numpy's broadcasting of two static shapes ('N' matches only itself or 1)."""
    for x, y in zip(reversed(a.shape), reversed(b.shape)):
        if x != y and x != 1 and y != 1:
            return False
    return True


def _last_is_k(t):
    return t.ndim >= 1 and t.shape[-1] == K


#: What the operand of each kind of step must be (others take any tensor).
NEEDS = {
    "reduce": lambda t: t.ndim >= 1,
    "dense": lambda t: t.ndim == 2 and t.shape[-1] == K,
    "matmul_t": lambda t: t.ndim == 2 and t.shape[-1] == K,
    "shape_chain": _last_is_k,
    "slice_concat": _last_is_k,
    "softmax": lambda t: t.ndim >= 1,
    "xent": lambda t: t.shape == ("N", K),
    "layer_norm": _last_is_k,
}


@st.composite
def fuzz_graphs(draw):
    """(graph, loss, fetched intermediates)."""
    g = ge.Graph("fuzz")
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def param(name, shape):
        return g.parameter(name, rng.uniform(-1, 1, shape).astype(np.float64))

    x = g.placeholder("x", (None, K), F64)
    y = g.placeholder("y", (None, 1, K), F64)
    labels = g.placeholder("labels", (None,), "int64")
    w = param("w", (K, K))
    w2 = param("w2", (M, K))
    b = param("b", (K,))
    b1 = param("b1", (1,))
    row = param("row", (1, K))
    s = param("s", ())
    scale, shift = param("scale", (K,)), param("shift", (K,))
    pool = [x, y, w, b, row, s]
    fetched = []
    steps = draw(st.integers(2, 12))
    kinds = st.sampled_from(
        [
            "unary",
            "binary",
            "const",
            "reduce",
            "dense",
            "matmul_t",
            "shape_chain",
            "slice_concat",
            "softmax",
            "xent",
            "layer_norm",
            "dup",
            "dead",
            "keep",
        ]
    )
    for _ in range(steps):
        kind = draw(kinds)
        fits = [t for t in pool if NEEDS.get(kind, lambda t: True)(t)] or [x]
        a = draw(st.sampled_from(fits[-4:] if draw(st.booleans()) else fits))
        rank = a.ndim
        out = None
        if kind == "unary":
            out = _unary(draw(st.sampled_from(UNARY)), a)
        elif kind == "binary":
            other = draw(st.sampled_from([t for t in pool if _broadcasts(a, t)]))
            pair = (a, other) if draw(st.booleans()) else (other, a)
            out = _binary(draw(st.sampled_from(BINARY)), *pair)
        elif kind == "const":
            c = draw(st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5]))
            const = draw(
                st.sampled_from(
                    [
                        c,
                        g.constant(np.float64(c)),
                        ge.broadcast_to(g.constant(np.float64(c)), (1, K)),
                        g.constant(np.full((1, K), c)),
                    ]
                )
            )
            if const is not c and not _broadcasts(a, const):
                const = c
            op = draw(st.sampled_from(["add", "multiply", "subtract", "divide"]))
            if op == "divide" and c == 0.0:
                op = "add"
            out = getattr(ge, op)(a, const)
        elif kind == "reduce" and rank >= 1:
            axis = draw(
                st.sampled_from(
                    [None, -1, 0, *([(0, -1), -2] if rank >= 2 else [])]
                    + ([1, (-3, -1)] if rank >= 3 else [])
                )
            )
            keepdims = draw(st.booleans())
            red = draw(st.sampled_from(["sum", "mean", "max"]))
            out = getattr(ge, red)(a, axis=axis, keepdims=keepdims)
        elif kind == "dense" and rank == 2 and a.shape[-1] == K:
            product = a @ w
            bias = draw(st.sampled_from([b, b, b1, row, s]))
            z = product + bias if draw(st.booleans()) else bias + product
            act = draw(st.sampled_from(ACTIVATIONS))
            out = z if act is None else getattr(ge, act)(z)
            inner = draw(st.sampled_from([None, None, product, z]))
            if inner is not None:  # fetched: the fusion must keep it
                fetched.append(inner)
        elif kind == "matmul_t" and rank == 2 and a.shape[-1] == K:
            form = draw(st.sampled_from(["a_wT", "aT_a", "wT_aT"]))
            if form == "a_wT":
                out = ge.matmul(a, ge.transpose(w2))
            elif form == "aT_a":
                out = ge.matmul(ge.transpose(a), a)
            else:
                out = ge.matmul(w2, ge.transpose(a))
        elif kind == "shape_chain" and a.shape[-1:] == (K,) and rank >= 1:
            if rank == 3:
                t = ge.transpose(ge.transpose(a, (0, 2, 1)), (0, 2, 1))
                out = ge.squeeze(t, axis=1) if a.shape[1] == 1 else t
            else:
                e = ge.expand_dims(a, -2)
                out = ge.reshape(ge.reshape(e, (-1, 2, 2)), (-1, K))
                if rank == 1:
                    out = ge.reshape(out, (K,))
        elif kind == "slice_concat" and a.shape[-1:] == (K,) and rank >= 1:
            lo = ge.ops.api.slice(a, axes=-1, starts=0, stops=2, steps=1)
            hi = ge.ops.api.slice(a, axes=-1, starts=2, stops=K, steps=1)
            out = ge.concatenate([hi, lo], axis=-1)
        elif kind == "softmax" and rank >= 1:
            axis = draw(st.integers(-rank, rank - 1))
            fn = draw(st.sampled_from([ge.softmax, ge.log_softmax]))
            out = fn(a, axis=axis)
        elif kind == "xent" and rank == 2 and a.shape == ("N", K):
            if draw(st.booleans()):
                out = ge.softmax_cross_entropy(a, labels)
            else:
                logp = ge.log_softmax(a, axis=-1)
                picked = ge.sum(logp * ge.one_hot(labels, K, F64), axis=-1)
                out = ge.negative(ge.mean(picked))
                inner = draw(st.sampled_from([None, None, logp, picked]))
                if inner is not None:
                    fetched.append(inner)
        elif kind == "layer_norm" and a.shape[-1:] == (K,) and rank >= 1:
            out = ge.layer_norm(a, scale, shift, axis=-1)
        elif kind == "dup":
            u = draw(st.sampled_from(UNARY))
            out = _unary(u, a) + _unary(u, a)
        elif kind == "dead":
            ge.exp(ge.sin(a)) * 3.0  # nothing reads it
        elif kind == "keep" and len(pool) > 6:
            fetched.append(pool[-1])
        if out is not None:
            pool.append(out)
    made = pool[6:]
    if draw(st.booleans()) and made:
        fetched.append(draw(st.sampled_from(made)))
    fetched = list(dict.fromkeys(t.name for t in fetched))
    read = {ref.split(":")[0] for n in g.nodes for ref in n.inputs}
    ends = [t for t in made if t.name.split(":")[0] not in read] or [x * row]
    loss = ge.add_n([ge.mean(t * t) for t in ends]) if len(ends) > 1 else ge.mean(ends[0] ** 2)
    if fetched:
        g.mark_output(*fetched, loss)
    return g, loss, fetched


def _feeds(batch):
    rng = np.random.default_rng(batch)
    return {
        "x": rng.uniform(-1, 1, (batch, K)),
        "y": rng.uniform(-1, 1, (batch, 1, K)),
        "labels": rng.integers(0, K, size=batch),
    }


PIPELINES = [[name] for name in PASSES] + [None]


def check_graph(built):
    g, loss, fetched = built
    tg = _gradient_graph(g, loss)  # every parameter: ranks 0, 1 and 2, broadcast
    fetches = [tg.gradient.loss, *tg.gradient.grads.values(), *fetched]
    for passes in PIPELINES:
        opt, report = ge.optimize(tg, passes, keep=fetched)
        assert len(opt) <= len(tg), f"{passes}: {len(tg)} -> {len(opt)} nodes\n{report}"
        assert opt.gradient.grads == tg.gradient.grads
        for batch in (1, 5):
            _compare(tg, opt, fetches, _feeds(batch), False, rtol=1e-9, atol=1e-11)
    # The forward graph optimized, then differentiated: the fused ops' own rules.
    kept = [*fetched, loss.name]
    fwd, _ = ge.optimize(g, keep=kept)
    assert len(fwd) <= len(g)
    ta, tb = _gradient_graph(g, loss), _gradient_graph(fwd, loss.name)
    assert ta.gradient.grads == tb.gradient.grads
    forward_fetches = [loss.name, *ta.gradient.grads.values(), *fetched]
    for batch in (1, 5):
        _compare(ta, tb, forward_fetches, _feeds(batch), False, rtol=1e-9, atol=1e-11)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opt.pb"
        ge.save(opt, path)
        loaded = ge.load(path)
    _compare(opt, loaded, fetches, _feeds(5), False, rtol=0, atol=0)


@seed(20261202)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_graphs())
def test_fuzz_passes_keep_values_gradients_and_size(built):
    check_graph(built)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(fuzz_graphs())
def test_fuzz_passes_many_examples(built):
    check_graph(built)
