"""Reading ONNX models and their tensors, external data included.

External data (tensors stored in side files, named by a path relative to the
model) is read here and not by ``onnx.load``, so that the containment rules are
ours and are checked before a byte is read: a location must be a relative path
that stays inside the model's folder, symlinks included, and name a regular
file that holds the bytes the tensor declares.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto, numpy_helper

from ..errors import FileFormatError
from ..input_files import check_data_file, open_input
from .import_bounds import check_result
from .tensor_types import onnx_type_name, to_numpy_dtype


def load_model(source: Any, base_dir: Any = None) -> tuple[ModelProto, str | None]:
    """Read ``source`` (a path, bytes or a ModelProto) without its external data.

    Returns the model and the folder its external data may live in: the model
    file's own folder for a path, ``base_dir`` otherwise (None when not given).
    """
    if isinstance(source, ModelProto):
        return source, None if base_dir is None else os.fspath(base_dir)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "the given bytes"), (
            None if base_dir is None else os.fspath(base_dir)
        )
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open_input(path, "ONNX model", FileFormatError) as f:
                data = f.read()
        except OSError as exc:
            raise FileFormatError(
                f"cannot read ONNX model {path!r}: {exc.strerror or exc}"
            ) from None
        folder = os.path.dirname(os.path.abspath(path)) if base_dir is None else base_dir
        return _parse(data, repr(path)), os.fspath(folder)
    raise FileFormatError(
        f"expected a path, bytes or an onnx.ModelProto, got {type(source).__name__}"
    )


def _parse(data: bytes, what: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise FileFormatError(
            f"{what} is not an ONNX model (protobuf decoding failed: {exc})"
        ) from None
    if not model.HasField("graph"):
        raise FileFormatError(f"{what} is not an ONNX model: it has no graph")
    return model


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def tensor_to_array(tensor: TensorProto, base_dir: str | None, what: str) -> np.ndarray:
    """The value of a TensorProto as a numpy array, reading external data under the
    containment rules.  ``what`` names the tensor in messages.

    Raises FileFormatError for an unsupported dtype, data that does not fit the
    declared shape, or external data that is missing or outside ``base_dir``.
    """
    dtype = to_numpy_dtype(tensor.data_type)
    if dtype is None:
        raise FileFormatError(
            f"{what} has element type {onnx_type_name(tensor.data_type)}, "
            "which graphengine does not support"
        )
    if is_external(tensor):
        tensor = _with_external_data(tensor, base_dir, what, dtype)
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # malformed data
        raise FileFormatError(
            f"{what}: cannot decode its data ({type(exc).__name__}: {exc})"
        ) from None
    return np.array(array, dtype=dtype, order="C")  # ascontiguousarray would make 0-d 1-d


def _with_external_data(
    tensor: TensorProto, base_dir: str | None, what: str, dtype: np.dtype
) -> TensorProto:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise FileFormatError(f"{what} is stored externally but names no 'location'")
    if base_dir is None:
        raise FileFormatError(
            f"{what} is stored in external file {location!r}, but the model "
            "was not read from a file: pass its path, or base_dir="
        )
    path = _contained_path(location, base_dir, what)
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise FileFormatError(
            f"{what}: external data offset/length must be integers, got "
            f"{info.get('offset')!r}/{info.get('length')!r}"
        ) from None
    if any(d < 0 for d in tensor.dims):
        raise FileFormatError(f"{what} has negative dims {list(tensor.dims)[:8]}")
    count = math.prod(tensor.dims)  # exact: dims such as (2**62, 3) cannot overflow
    expected = count * dtype.itemsize
    if length is not None and length != expected:
        raise FileFormatError(
            f"{what}: external data length {length} does not match its "
            f"shape {tuple(tensor.dims)} of {dtype.name} ({expected} bytes)"
        )
    with open_input(path, f"{what}: external data file", FileFormatError) as f:
        st = os.fstat(f.fileno())
        check_data_file(
            location, st, None, f"{what}: external data file", FileFormatError, allow_linked=False
        )
        size = st.st_size
        if offset < 0 or offset + expected > size:
            raise FileFormatError(
                f"{what}: external file {location!r} has {size} bytes, too "
                f"few for {expected} bytes at offset {offset}"
            )
        check_result(what, tensor.dims, dtype)
        f.seek(offset)
        data = f.read(expected)
    out = TensorProto()
    out.CopyFrom(tensor)
    del out.external_data[:]
    out.data_location = TensorProto.DEFAULT
    out.raw_data = data
    return out


def _contained_path(location: str, base_dir: str, what: str) -> str:
    """Resolve an external data location, refusing any that leaves ``base_dir``."""
    if (
        os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or (len(location) > 1 and location[1] == ":")
    ):
        raise FileFormatError(
            f"{what}: external data location {location!r} is an absolute "
            "path; locations must be relative to the model's folder"
        )
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise FileFormatError(
            f"{what}: external data location {location!r} resolves to "
            f"{path!r}, outside the model's folder {root!r} (through '..' or "
            "a symlink); move the data file next to the model"
        )
    if not os.path.isfile(path):
        raise FileFormatError(
            f"{what}: external data file {location!r} does not exist in "
            f"{root!r} or is not a regular file"
        )
    return path
