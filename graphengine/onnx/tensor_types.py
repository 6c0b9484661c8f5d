"""Dtypes and tensor types between ONNX and graphengine.

ONNX names element types with the ``TensorProto.DataType`` enum; graphengine
with numpy dtypes (:data:`graphengine.dtypes.DTYPE_NAMES`).  The types that
have no graphengine counterpart (float8, float4, int4, int2, string, complex
...) are refused by name.  bfloat16 is ml_dtypes' (an onnx dependency).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto, TypeProto, ValueInfoProto, helper

from ..dtypes import DTYPE_NAMES
from ..shapes import Shape, TensorType

#: ONNX element type -> numpy dtype, for every dtype graphengine has.
ONNX_TO_NUMPY: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype("float32"),
    TensorProto.DOUBLE: np.dtype("float64"),
    TensorProto.FLOAT16: np.dtype("float16"),
    TensorProto.INT8: np.dtype("int8"),
    TensorProto.INT16: np.dtype("int16"),
    TensorProto.INT32: np.dtype("int32"),
    TensorProto.INT64: np.dtype("int64"),
    TensorProto.UINT8: np.dtype("uint8"),
    TensorProto.UINT16: np.dtype("uint16"),
    TensorProto.UINT32: np.dtype("uint32"),
    TensorProto.UINT64: np.dtype("uint64"),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    TensorProto.BOOL: np.dtype("bool"),
}
NUMPY_TO_ONNX: dict[str, int] = {dtype.name: code for code, dtype in ONNX_TO_NUMPY.items()}
assert set(NUMPY_TO_ONNX) == set(DTYPE_NAMES)


def onnx_type_name(code: int) -> str:
    """The ONNX name of an element type code (``FLOAT``, ``BFLOAT16`` ...)."""
    try:
        return TensorProto.DataType.Name(code)
    except ValueError:
        return f"element type {code}"


def to_numpy_dtype(code: int) -> np.dtype | None:
    """The numpy dtype for an ONNX element type, or None where we have none."""
    return ONNX_TO_NUMPY.get(code)


def to_onnx_dtype(dtype: np.dtype) -> int:
    """The ONNX element type of one of our dtypes."""
    return NUMPY_TO_ONNX[np.dtype(dtype).name]


def value_info(name: str, ttype: TensorType) -> ValueInfoProto:
    """A ValueInfoProto for one of our tensor types: int dims become ``dim_value``,
    symbolic ones ``dim_param``, unknown ones stay unset."""
    dims = [d if isinstance(d, (int, str)) else None for d in ttype.shape]
    return helper.make_tensor_value_info(name, to_onnx_dtype(ttype.dtype), dims)


def shape_of(type_proto: TypeProto) -> Shape | None:
    """The dims of a tensor TypeProto: ints, ``dim_param`` strings, or None for a
    dim that is not given; None when the rank itself is unknown."""
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)
