"""The dtypes graphengine knows, and the groups that op schemas accept.

In memory a dtype is a ``numpy.dtype``; in files it is the ``DataType`` enum of
``proto/graphengine.proto``.  Only the dtypes listed here may appear in a graph,
so a kernel never meets an object, string or complex array.

``bfloat16`` comes from ``ml_dtypes`` (onnx depends on it; ``pip install
ml_dtypes`` otherwise), imported only when a bfloat16 tensor is made or read.  It
is stored, cast, fed, fetched and computed with by the elementwise ops,
reductions, softmax and the shape ops (each computed in float32 and rounded
back, as ml_dtypes does), and gradients flow through it
(:data:`DIFFERENTIABLE_TYPES`): the gradient pass applies the rule of a node
with bfloat16 values in float32 and rounds the results back (see
:mod:`graphengine.gradients`).  It is not in :data:`FLOAT_TYPES`, the dtypes of
the ops that compute in their input's own precision (matmul, conv, pooling,
normalization and the losses refuse bfloat16: cast to float32 around them, as
the ONNX importer does for a bfloat16 MatMul).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ShapeError

#: Every dtype a tensor may have, by name, in the order of the proto enum.
DTYPE_NAMES: tuple[str, ...] = (
    "float32",
    "float64",
    "float16",
    "int32",
    "int64",
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "uint32",
    "uint64",
    "bfloat16",
)

#: The IEEE floating-point dtypes, which every float op accepts.
FLOAT_TYPES = frozenset({"float16", "float32", "float64"})
#: FLOAT_TYPES plus bfloat16: what the elementwise math ops (exp, tanh ...) accept.
ARITH_FLOAT_TYPES = FLOAT_TYPES | {"bfloat16"}
#: The dtypes gradients flow through (bfloat16's rules run in float32).
DIFFERENTIABLE_TYPES = ARITH_FLOAT_TYPES
INT_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
BOOL_TYPES = frozenset({"bool"})
NUMERIC_TYPES = ARITH_FLOAT_TYPES | INT_TYPES
ALL_TYPES = NUMERIC_TYPES | BOOL_TYPES
INDEX_TYPES = frozenset({"int32", "int64"})


# numpy computes dtype.name on every access; hot paths look it up here instead.
# bfloat16 joins when ml_dtypes is first imported (see _bfloat16).
_NAMES = {np.dtype(name): name for name in DTYPE_NAMES if name != "bfloat16"}


def _bfloat16() -> np.dtype:
    """numpy's bfloat16 dtype, from ml_dtypes (imported on first use)."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ShapeError(
            "dtype 'bfloat16' needs the ml_dtypes package: pip install ml_dtypes (onnx installs it)"
        ) from exc
    dtype = np.dtype(ml_dtypes.bfloat16)
    _NAMES[dtype] = "bfloat16"
    return dtype


def as_dtype(value: Any) -> np.dtype:
    """Return the numpy dtype for ``value`` (a name, a numpy dtype or type).

    Raises ShapeError when the dtype is not one graphengine supports.

    >>> as_dtype("float32")
    dtype('float32')
    """
    if isinstance(value, np.dtype) and value in _NAMES:
        return value  # the common case: already a supported numpy dtype
    if isinstance(value, str) and value == "bfloat16":
        return _bfloat16()
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ShapeError(f"unknown dtype {value!r}; use one of {', '.join(DTYPE_NAMES)}") from exc
    if dtype.name == "bfloat16" and dtype.kind == "V":
        return _bfloat16()  # an ml_dtypes bfloat16, registered under its name
    if dtype.name not in DTYPE_NAMES:
        raise ShapeError(
            f"dtype {dtype.name!r} is not supported; use one of {', '.join(DTYPE_NAMES)}"
        )
    return dtype


def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, fast, for the supported dtypes."""
    return _NAMES.get(dtype) or dtype.name


def is_float(dtype: np.dtype) -> bool:
    """True for the floating-point dtypes (bfloat16 included), the only ones
    gradients flow through."""
    return dtype_name(dtype) in DIFFERENTIABLE_TYPES
