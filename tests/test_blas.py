"""graphengine.blas: c += alpha * op(a) @ op(b) from numpy's OpenBLAS, against numpy."""

import numpy as np
import pytest

from graphengine import blas

needs_blas = pytest.mark.skipif(not blas.available(), reason="numpy's OpenBLAS not found")


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_add_product_matches_numpy(dtype, transpose_a, transpose_b):
    rng = np.random.default_rng(0)
    m, k, n = 5, 7, 3  # all differ, so a swapped axis cannot pass
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = c - 0.25 * ((a.T if transpose_a else a) @ (b.T if transpose_b else b))
    assert blas.add_product(c, a, b, -0.25, transpose_a, transpose_b)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)


@needs_blas
def test_empty_inner_dimension_leaves_c_as_it_is():
    c = np.ones((2, 3), np.float32)
    assert blas.add_product(
        c, np.empty((2, 0), np.float32), np.empty((0, 3), np.float32), 1.0, False, False
    )
    assert np.array_equal(c, np.ones((2, 3), np.float32))


def _operands():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal((6, 5)).astype(np.float32)
    return a, b, np.zeros((4, 5), np.float32)


@pytest.mark.parametrize(
    "case",
    [
        "strided a",
        "float64 b",
        "wrong c shape",
        "read-only c",
        "c inside a",
        "1-D b",
        "float16",
    ],
)
def test_what_blas_cannot_do_is_refused_untouched(case):
    a, b, c = _operands()
    if case == "strided a":
        a = np.zeros((4, 12), np.float32)[:, ::2]
    elif case == "float64 b":
        b = b.astype(np.float64)
    elif case == "wrong c shape":
        c = np.zeros((5, 4), np.float32)
    elif case == "read-only c":
        c.flags.writeable = False
    elif case == "c inside a":
        a, b = np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)
        c = a  # square, so only the shared memory is wrong
    elif case == "1-D b":
        b = b[:, 0].copy()
    elif case == "float16":
        a, b, c = (v.astype(np.float16) for v in (a, b, c))
    before = c.copy()
    assert not blas.add_product(c, a, b, 1.0, False, False)
    assert np.array_equal(c, before)


def test_disabled_means_unavailable(monkeypatch):
    monkeypatch.setattr(blas, "ENABLED", False)
    a, b, c = _operands()
    assert not blas.available()
    assert not blas.add_product(c, a, b, 1.0, False, False)
    assert not c.any()
