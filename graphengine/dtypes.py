"""The dtypes graphengine knows, and the groups that op schemas accept.

In memory a dtype is a ``numpy.dtype``; in files it is the ``DataType`` enum of
``proto/graphengine.proto``.  Only the dtypes listed here may appear in a graph,
so a kernel never meets an object, string or complex array.
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
)

FLOAT_TYPES = frozenset({"float16", "float32", "float64"})
INT_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8"})
BOOL_TYPES = frozenset({"bool"})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
ALL_TYPES = NUMERIC_TYPES | BOOL_TYPES
INDEX_TYPES = frozenset({"int32", "int64"})


# numpy computes dtype.name on every access; hot paths look it up here instead.
_NAMES = {np.dtype(name): name for name in DTYPE_NAMES}


def as_dtype(value: Any) -> np.dtype:
    """Return the numpy dtype for ``value`` (a name, a numpy dtype or type).

    Raises ShapeError when the dtype is not one graphengine supports.

    >>> as_dtype("float32")
    dtype('float32')
    """
    if isinstance(value, np.dtype) and value in _NAMES:
        return value  # the common case: already a supported numpy dtype
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ShapeError(f"unknown dtype {value!r}; use one of {', '.join(DTYPE_NAMES)}") from exc
    if dtype.name not in DTYPE_NAMES:
        raise ShapeError(
            f"dtype {dtype.name!r} is not supported; use one of {', '.join(DTYPE_NAMES)}"
        )
    return dtype


def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, fast, for the supported dtypes."""
    return _NAMES.get(dtype) or dtype.name


def is_float(dtype: np.dtype) -> bool:
    """True for the floating-point dtypes, the only ones gradients flow through."""
    return dtype_name(dtype) in FLOAT_TYPES
