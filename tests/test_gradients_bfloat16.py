"""Gradients through bfloat16, against the same computation in float32.

Every gradient row of the op spec tables (tests/ops/*.py) whose op takes
bfloat16 is run twice on the same inputs (rounded to bfloat16): once in
bfloat16, once in float32.  The bfloat16 gradients must match the float32 ones
to bfloat16's precision (8 significant bits; the tolerances are below).
The gradient pass applies each rule of a node with bfloat16 values in float32
and rounds once, so the rule's own arithmetic adds no error of its own (checked
on the graph: no arithmetic node of a rule is bfloat16).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import graphengine as ge  # noqa: E402
from tests.ops.spec import make_graph  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)

#: The families whose spec tables hold ops that take bfloat16 (the others,
#: conv, pooling, normalization, losses and matmul, refuse it at build time).
_FAMILIES = ["elementwise", "reduce", "shape", "indexing", "gather", "nn", "norm"]


def _gradient_rows():
    rows = []
    for family in _FAMILIES:
        module = importlib.import_module(f"tests.ops.test_{family}")
        rows += [s for s in module.SPECS if s.grad_positions() and not s.training]
    return rows


def _rounded(spec):
    """The spec's inputs with float ones rounded to bfloat16 (kept as float32)."""
    return [
        np.asarray(a).astype(BF16).astype(np.float32) if np.asarray(a).dtype.kind == "f" else a
        for a in spec.inputs
    ]


def _gradients(spec, dtype):
    """d(sum_k <w_k, out_k>)/d(each gradient input), in ``dtype``, as float32 arrays;
    None when the op refuses ``dtype``."""
    rounded = type(spec)(**{**spec.__dict__, "inputs": _rounded(spec)})
    try:
        g, out, feeds = make_graph(rounded, dtype)
    except ge.ShapeError:
        return None
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    rng = np.random.default_rng(1)
    terms = []
    for t in outs:
        if not ge.dtypes.is_float(t.dtype):
            continue
        shape = ge.run(g, t, feeds).shape
        weights = rng.uniform(0.5, 1.5, size=shape).astype(BF16).astype(t.dtype)
        terms.append(ge.sum(t * g.constant(weights)))
    loss = terms[0] if len(terms) == 1 else ge.add_n(terms)
    wrt = [f"p{i}" for i in spec.grad_positions()]
    tg = ge.gradients(g, loss, wrt)
    names = [tg.gradient.grads[w] for w in wrt]
    got = ge.run(tg, names, feeds)
    return tg, [np.asarray(got[n]).astype(np.float32) for n in names]


ROWS = _gradient_rows()


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in ROWS])
def test_bfloat16_gradients_match_float32(spec):
    narrow = _gradients(spec, BF16)
    if narrow is None:
        pytest.skip(f"{spec.op} takes no bfloat16")
    _, wide = _gradients(spec, np.float32)
    tg, ours = narrow
    for position, have, want in zip(spec.grad_positions(), ours, wide):
        what = f"{spec.name} p{position}"
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        # Norm-wise within 8 roundings (2**-5), and each element within 16 of the
        # largest (2**-4): the rounded forward outputs enter the rules, and a
        # difference such as softmax's dy - <dy, y> cancels (a wrong rule is off
        # by the whole gradient).
        error = float(np.linalg.norm(have - want))
        assert error <= 2**-5 * float(np.linalg.norm(want)) + 1e-30, (what, error)
        np.testing.assert_allclose(have, want, rtol=2**-6, atol=2**-4 * scale + 1e-30, err_msg=what)
    # Each rule's arithmetic ran in float32: the bfloat16 nodes the pass added
    # are the seed, the casts that round results back and the sums of fan-out.
    for node in tg.nodes:
        if node.name.startswith("gradients/") and node.types[0].dtype == BF16:
            assert node.op in ("constant", "cast", "add_n", "identity"), (
                f"{spec.name}: gradient node '{node.name}' ({node.op}) computes in bfloat16"
            )


def test_the_ops_users_differentiate_in_bfloat16_are_covered():
    covered = {s.op for s in ROWS if _gradients(s, BF16) is not None}
    expected = {
        "add", "multiply", "divide", "exp", "log", "tanh", "sigmoid", "relu", "gelu", "erf",
        "sqrt", "sum", "mean", "max", "softmax", "log_softmax", "reshape", "transpose",
        "concatenate", "take", "where", "clip", "cast",
    }  # fmt: skip
    assert expected <= covered, sorted(expected - covered)
