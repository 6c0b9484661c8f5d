"""A matrix product that adds into its output, ``c += alpha * op(a) @ op(b)``, from
the OpenBLAS that numpy's own wheels bundle.

numpy's ``matmul`` always overwrites its output (BLAS's ``beta`` is 0), so a
plain SGD step on a dense layer's weight is three passes over the weight's size
after the product: the gradient written, ``lr * grad`` into scratch, and the
subtraction.  BLAS's gemm with ``alpha = -lr`` and ``beta = 1`` folds all three
into the product itself (:mod:`graphengine.training.folded_sgd` uses it).

The library is found next to numpy (``numpy.libs/libscipy_openblas*`` on Linux
and Windows, ``numpy/.dylibs`` on macOS) and loaded with ctypes the first time
it is asked for.  Other numpy builds (MKL, a system BLAS) name their symbols
differently or keep them private: then :func:`available` is False and callers
keep their numpy path.  Setting :data:`ENABLED` to False does the same (the
tests compare both paths).

>>> import numpy as np
>>> c = np.ones((2, 2), np.float32)
>>> a, b = np.eye(2, dtype=np.float32), np.full((2, 2), 2.0, np.float32)
>>> if available():
...     _ = add_product(c, a, b, -0.5, False, False)
... else:
...     c -= 0.5 * (a @ b)
>>> c.tolist()
[[0.0, 0.0], [0.0, 0.0]]
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np

#: Off: :func:`available` says False, so every caller takes its numpy path.
ENABLED = True

# CBLAS enum values (cblas.h).
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

#: (symbol prefix, integer type) of the interfaces tried, 64-bit integers first:
#: numpy >= 2 ships scipy-openblas64 (``scipy_cblas_sgemm64_``).
_INTERFACES = (("scipy_cblas_{}64_", ctypes.c_int64), ("scipy_cblas_{}", ctypes.c_int))

_gemm: dict[str, Any] | None = None


def available() -> bool:
    """True when :func:`add_product` can call BLAS (and :data:`ENABLED` is on)."""
    return ENABLED and bool(_load())


def _library_files() -> list[str]:
    base = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(base, os.pardir, "numpy.libs", "libscipy_openblas*"),
        os.path.join(base, ".dylibs", "libscipy_openblas*"),
    ]
    return sorted(f for p in patterns for f in glob.glob(p))


def _load() -> dict[str, Any]:
    """{dtype char: gemm function} from numpy's bundled OpenBLAS, {} when none is found."""
    global _gemm
    if _gemm is not None:
        return _gemm
    found: dict[str, Any] = {}
    for path in _library_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, integer in _INTERFACES:
            try:
                functions = {
                    "f": getattr(lib, prefix.format("sgemm")),
                    "d": getattr(lib, prefix.format("dgemm")),
                }
            except AttributeError:
                continue
            for char, fn in functions.items():
                real = ctypes.c_float if char == "f" else ctypes.c_double
                pointer = ctypes.c_void_p
                fn.restype = None
                fn.argtypes = [integer] * 6 + [real, pointer, integer, pointer, integer]
                fn.argtypes += [real, pointer, integer]
            found = functions
            break
        if found:
            break
    _gemm = found
    return found


def add_product(
    c: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    alpha: float,
    transpose_a: bool,
    transpose_b: bool,
) -> bool:
    """``c += alpha * op(a) @ op(b)`` in place, one BLAS gemm (``op`` transposes
    where asked).  Returns False, with ``c`` untouched, when BLAS cannot do it
    as given: not :func:`available`, a dtype other than float32/float64 shared
    by all three, operands not 2-D and C-contiguous, shapes that do not fit, or
    ``c`` not writeable or sharing memory with ``a`` or ``b``."""
    gemm = _load().get(c.dtype.char) if ENABLED else None
    if (
        gemm is None
        or a.dtype != c.dtype
        or b.dtype != c.dtype
        or c.ndim != 2
        or a.ndim != 2
        or b.ndim != 2
        or not (c.flags.c_contiguous and a.flags.c_contiguous and b.flags.c_contiguous)
        or not c.flags.writeable
    ):
        return False
    m, k = a.shape[::-1] if transpose_a else a.shape
    k2, n = b.shape[::-1] if transpose_b else b.shape
    if k != k2 or c.shape != (m, n) or np.may_share_memory(c, a) or np.may_share_memory(c, b):
        return False
    if m == 0 or n == 0:
        return True
    gemm(
        _ROW_MAJOR,
        _TRANS if transpose_a else _NO_TRANS,
        _TRANS if transpose_b else _NO_TRANS,
        m,
        n,
        k,
        alpha,
        a.ctypes.data,
        max(a.shape[1], 1),
        b.ctypes.data,
        max(b.shape[1], 1),
        1.0,
        c.ctypes.data,
        max(n, 1),
    )
    return True
