"""Tensors in a model file: their dtype enum values, which of them go to the
data file beside the model, and writing each one inline or there.

Reading them back is decode.py's (sizes checked before allocating) and
external.py's (the data file, confined to the model's folder).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..dtypes import DTYPE_NAMES, as_dtype
from ..errors import FileFormatError
from ..graph import Graph
from ..proto import graphengine_pb2 as pb
from .files import atomic_file

#: With the default threshold, tensors stay in the model file while together
#: they need at most this much, which leaves headroom under the 2 GiB limit.
INLINE_LIMIT = 1536 * 2**20
#: Tensors in a data file start at multiples of this, so they can be mapped.
DATA_ALIGNMENT = 64

_ENUM_OF_DTYPE = {name: i + 1 for i, name in enumerate(DTYPE_NAMES)}
_DTYPE_OF_ENUM = {i + 1: np.dtype(name) for i, name in enumerate(DTYPE_NAMES)}
assert all(pb.DataType.Value(f"DT_{name.upper()}") == value
           for name, value in _ENUM_OF_DTYPE.items()), "DataType enum out of step with dtypes"


def _tensor_sizes(graph: Graph) -> list[int]:
    """Byte sizes of every tensor the file will hold (parameters, tensor attributes)."""
    sizes = [np.asarray(graph.values[n.name]).nbytes for n in graph.parameters()
             if n.name in graph.values]
    for node in graph.nodes:
        for attr in node.opdef.attrs:
            if attr.kind == "tensor" and node.attrs.get(attr.name) is not None:
                sizes.append(node.attrs[attr.name].nbytes)
    return sizes


def _choose_threshold(sizes: list[int], requested: int | None) -> int | None:
    """The byte size above which tensors go to the data file; None for "none do"."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise FileFormatError(f"external_data_threshold must be an int >= 0 (bytes), "
                                  f"got {requested!r}")
        return requested
    inline = sum(sizes)
    if inline <= INLINE_LIMIT:
        return None
    # Move the largest tensors out first, a whole size class at a time, so that
    # "larger than the threshold" describes exactly what moved.
    counts = Counter(sizes)
    for size in sorted(counts, reverse=True):
        inline -= size * counts[size]
        if inline <= INLINE_LIMIT:
            return size - 1
    return 0  # unreachable: the loop ends with inline == 0


def _little_endian(array: Any) -> np.ndarray:
    """A C-ordered, little-endian copy of ``array`` (or the array itself if it is one)."""
    array = np.asarray(array, order="C")
    dtype = as_dtype(array.dtype)
    return array.astype(dtype.newbyteorder("<"), copy=False)


class _TensorWriter:
    """Fills TensorProtos, writing tensors over the threshold to the data file.

    The data file is opened on first use, inside ``stack``, so it is renamed into
    place when the stack closes and removed if saving fails.
    """

    def __init__(self, threshold: int | None, data_path: Path,
                 stack: contextlib.ExitStack) -> None:
        self.threshold = threshold
        self.data_path = data_path
        self._stack = stack
        self._out: BinaryIO | None = None
        self._offset = 0

    @property
    def used(self) -> bool:
        return self._out is not None

    def encode(self, value: Any, proto: pb.TensorProto) -> None:
        array = _little_endian(value)
        proto.dtype = _ENUM_OF_DTYPE[array.dtype.name]
        proto.dims.extend(array.shape)
        if self.threshold is not None and array.nbytes > self.threshold:
            self._write_external(array, proto.external)
        else:
            proto.raw_data = array.tobytes()

    def _write_external(self, array: np.ndarray, ext: pb.ExternalData) -> None:
        if self._out is None:
            self._out = self._stack.enter_context(atomic_file(self.data_path))
        padding = -self._offset % DATA_ALIGNMENT
        self._out.write(b"\0" * padding)
        self._offset += padding
        data = array.reshape(-1).view(np.uint8)  # the bytes, without a copy
        self._out.write(data)
        ext.location = self.data_path.name
        ext.offset = self._offset
        ext.length = data.nbytes
        ext.sha256 = hashlib.sha256(data).hexdigest()
        self._offset += data.nbytes
