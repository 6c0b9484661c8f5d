"""Reading ONNX models and their tensors, external data included.

External data (tensors stored in side files, named by a path relative to the
model) is read here and not by ``onnx.load``, so that the rules are ours and
are checked before a byte is read, as for our own files
(:mod:`graphengine.serialize.external`):

* a location is a relative path that stays inside the model's folder,
  symlinks included, and names a regular file (never a FIFO or a device);
* the file has one hard link and the model file's owner, unless linked data is
  allowed (:func:`graphengine.input_files.allowing_linked_data`);
* each tensor lies inside its file and no two tensors share bytes, so the bytes
  a model makes us read never exceed the real size of its data files (shared
  bytes would also make two parameters one array).

Every refusal is an :class:`~graphengine.onnx.errors.OnnxFileError` naming the
tensor (``initializer 'w'``, ``attribute 'value' of node 'c' (Constant)``) and
the file; an element type we have no dtype for is an OnnxConversionError.
"""

from __future__ import annotations

import bisect
import math
import os
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto, numpy_helper

from ..input_files import check_data_file, open_input
from .errors import OnnxConversionError, OnnxFileError
from .import_bounds import check_result
from .tensor_types import onnx_type_name, to_numpy_dtype


class ModelFile:
    """A model read without its external data, and where that data may live.

    ``folder`` is the model file's own folder for a path, ``base_dir`` otherwise
    (None when neither is known); ``owner`` the user id owning the model file
    (None for a model not read from a file: data files are then not checked
    for their owner).
    """

    def __init__(self, model: ModelProto, folder: str | None, owner: int | None) -> None:
        self.model = model
        self.folder = folder
        self.owner = owner


def load_model(source: Any, base_dir: Any = None) -> ModelFile:
    """Read ``source`` (a path, bytes or a ModelProto) without its external data.

    Raises OnnxFileError for a file that cannot be read or is no ONNX model.
    """
    given = None if base_dir is None else os.fspath(base_dir)
    if isinstance(source, ModelProto):
        return ModelFile(source, given, None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ModelFile(_parse(bytes(source), "the given bytes"), given, None)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open_input(path, "ONNX model", OnnxFileError) as f:
                owner = os.fstat(f.fileno()).st_uid
                data = f.read()
        except OSError as exc:
            raise OnnxFileError(f"cannot read ONNX model {path!r}: {exc.strerror or exc}") from None
        folder = os.path.dirname(os.path.abspath(path)) if given is None else given
        return ModelFile(_parse(data, repr(path)), folder, owner)
    raise OnnxFileError(
        f"expected a path, bytes or an onnx.ModelProto, got {type(source).__name__}"
    )


def _parse(data: bytes, what: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise OnnxFileError(
            f"{what} is not an ONNX model (protobuf decoding failed: {exc})"
        ) from None
    if not model.HasField("graph"):
        raise OnnxFileError(f"{what} is not an ONNX model: it has no graph")
    return model


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


class TensorReader:
    """Reads the TensorProtos of one model, external data under the rules above.

    One reader serves a whole import, so that it sees every tensor's byte range
    and can refuse two that overlap.
    """

    def __init__(self, file: ModelFile) -> None:
        self.folder = file.folder
        self.owner = file.owner
        #: Real path of each data file -> sorted (start, stop, tensor) byte ranges.
        self._regions: dict[str, list[tuple[int, int, str]]] = {}

    def read(self, tensor: TensorProto, what: str) -> np.ndarray:
        """The value of ``tensor`` as a numpy array; ``what`` names it in messages.

        Raises OnnxConversionError for an element type we have no dtype for, and
        OnnxFileError for data that does not fit the declared shape or external
        data that breaks a rule.
        """
        dtype = to_numpy_dtype(tensor.data_type)
        if dtype is None:
            raise OnnxConversionError(
                f"{what} has element type {onnx_type_name(tensor.data_type)}, "
                "which graphengine does not support"
            )
        if is_external(tensor):
            tensor = self._with_external_data(tensor, what, dtype)
        try:
            array = numpy_helper.to_array(tensor)
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # malformed data
            raise OnnxFileError(
                f"{what}: cannot decode its data ({type(exc).__name__}: {exc})"
            ) from None
        return np.array(array, dtype=dtype, order="C")  # ascontiguousarray would make 0-d 1-d

    def _with_external_data(self, tensor: TensorProto, what: str, dtype: np.dtype) -> TensorProto:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise OnnxFileError(f"{what} is stored externally but names no 'location'")
        if self.folder is None:
            raise OnnxFileError(
                f"{what} is stored in external file {location!r}, but the model "
                "was not read from a file: pass its path, or base_dir="
            )
        path = self._contained_path(location, what)
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise OnnxFileError(
                f"{what}: external data offset/length must be integers, got "
                f"{info.get('offset')!r}/{info.get('length')!r}"
            ) from None
        if any(d < 0 for d in tensor.dims):
            raise OnnxFileError(f"{what} has negative dims {list(tensor.dims)[:8]}")
        count = math.prod(tensor.dims)  # exact: dims such as (2**62, 3) cannot overflow
        expected = count * dtype.itemsize
        if length is not None and length != expected:
            raise OnnxFileError(
                f"{what}: external data length {length} does not match its "
                f"shape {tuple(tensor.dims)} of {dtype.name} ({expected} bytes)"
            )
        if offset < 0:
            raise OnnxFileError(f"{what}: external data offset {offset} is negative")
        with open_input(path, f"{what}: external data file", OnnxFileError) as f:
            st = os.fstat(f.fileno())
            check_data_file(
                location, st, self.owner, f"{what}: external data file", OnnxFileError, False
            )
            size = st.st_size
            if offset + expected > size:
                raise OnnxFileError(
                    f"{what}: external file {location!r} has {size} bytes, too "
                    f"few for {expected} bytes at offset {offset}; the file is "
                    "truncated or belongs to another model"
                )
            check_result(what, tensor.dims, dtype)
            self._claim(path, location, offset, offset + expected, what)
            try:
                f.seek(offset)
                data = f.read(expected)
            except OSError as exc:
                raise OnnxFileError(
                    f"{what}: cannot read external file {location!r}: {exc.strerror or exc}"
                ) from None
        if len(data) != expected:  # the file shrank after fstat
            raise OnnxFileError(
                f"{what}: read {len(data)} of {expected} bytes at offset {offset} "
                f"of external file {location!r}; it was truncated while being read"
            )
        out = TensorProto()
        out.CopyFrom(tensor)
        del out.external_data[:]
        out.data_location = TensorProto.DEFAULT
        out.raw_data = data
        return out

    def _claim(self, path: str, location: str, start: int, stop: int, what: str) -> None:
        """Record a tensor's byte range; refuse one that overlaps another tensor's."""
        if start == stop:
            return
        regions = self._regions.setdefault(path, [])
        entry = (start, stop, what)
        i = bisect.bisect_left(regions, entry)
        if i < len(regions) and regions[i] == entry:
            return  # the same tensor read again (an attribute looked up twice)
        for j in (i - 1, i):
            if 0 <= j < len(regions):
                other_start, other_stop, other = regions[j]
                if other_start < stop and start < other_stop:
                    raise OnnxFileError(
                        f"{what}: its external data (bytes {start} to {stop} of "
                        f"{location!r}) overlaps that of {other} (bytes {other_start} "
                        f"to {other_stop}); each tensor needs bytes of its own (shared "
                        "bytes would make two parameters one array, and let a small "
                        "file claim more bytes than it holds). Save the model again "
                        "with onnx.save_model(..., save_as_external_data=True)"
                    )
        regions.insert(i, entry)

    def _contained_path(self, location: str, what: str) -> str:
        """Resolve an external data location, refusing any that leaves the folder."""
        assert self.folder is not None
        if (
            os.path.isabs(location)
            or location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":")
        ):
            raise OnnxFileError(
                f"{what}: external data location {location!r} is an absolute "
                "path; locations must be relative to the model's folder"
            )
        if "\0" in location:
            raise OnnxFileError(f"{what}: external data location {location!r} holds a NUL byte")
        root = os.path.realpath(self.folder)
        path = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, path]) != root:
            raise OnnxFileError(
                f"{what}: external data location {location!r} resolves to "
                f"{path!r}, outside the model's folder {root!r} (through '..' or "
                "a symlink); move the data file next to the model"
            )
        if not os.path.exists(path):
            raise OnnxFileError(
                f"{what}: external data file {location!r} does not exist in {root!r}"
            )
        return path
