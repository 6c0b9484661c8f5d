"""Tensors in a model file: their dtype enum values, which of them go to the
data file beside the model, and writing each one inline or there.

Reading them back is decode.py's (sizes checked before allocating) and
external.py's (the data file, confined to the model's folder).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DTYPE_NAMES, as_dtype
from ..errors import FileFormatError
from ..graph import Graph
from ..proto import graphengine_pb2 as pb
from .checksums import crc32
from .data_writes import write_tensors
from .files import flush_data, temporary_path

#: Tensors larger than this many bytes go to the data file beside the model by
#: default, as raw little-endian bytes that a load maps without copying.
EXTERNAL_THRESHOLD = 2**20
#: Whatever the threshold, tensors stay in the model file while together they
#: need at most this much, which leaves headroom under the 2 GiB limit.
INLINE_LIMIT = 1536 * 2**20
#: Tensors in a data file start at multiples of this, so they can be mapped.
DATA_ALIGNMENT = 64

_ENUM_OF_DTYPE = {name: i + 1 for i, name in enumerate(DTYPE_NAMES)}
#: Enum value -> dtype name (as_dtype makes the dtype: bfloat16 imports ml_dtypes).
_DTYPE_OF_ENUM = {i + 1: name for i, name in enumerate(DTYPE_NAMES)}
assert all(
    pb.DataType.Value(f"DT_{name.upper()}") == value for name, value in _ENUM_OF_DTYPE.items()
), "DataType enum out of step with dtypes"


def _tensor_sizes(graph: Graph) -> list[int]:
    """Byte sizes of every tensor the file will hold (parameters, tensor attributes)."""
    sizes = [
        np.asarray(graph.values[n.name]).nbytes
        for n in graph.parameters()
        if n.name in graph.values
    ]
    for node in graph.nodes:
        for attr in node.opdef.attrs:
            if attr.kind == "tensor" and node.attrs.get(attr.name) is not None:
                sizes.append(node.attrs[attr.name].nbytes)
    return sizes


def _choose_threshold(sizes: list[int], requested: int | None) -> int:
    """The byte size above which tensors go to the data file.

    ``requested`` None means :data:`EXTERNAL_THRESHOLD`; either way the
    threshold is lowered while the tensors left inline need more than
    :data:`INLINE_LIMIT`.
    """
    if requested is None:
        requested = EXTERNAL_THRESHOLD
    elif isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise FileFormatError(
            f"external_data_threshold must be an int >= 0 (bytes), got {requested!r}"
        )
    inline = sum(size for size in sizes if size <= requested)
    if inline <= INLINE_LIMIT:
        return requested
    # Move the largest tensors out first, a whole size class at a time, so that
    # "larger than the threshold" describes exactly what moved.
    counts = Counter(size for size in sizes if size <= requested)
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
    """Fills TensorProtos; tensors over the threshold are kept to be written to the
    data file by :meth:`write_data`, once the model knows every offset.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._pending: list[tuple[np.ndarray, pb.ExternalData]] = []
        self._offset = 0

    @property
    def used(self) -> bool:
        return bool(self._pending)

    @property
    def size(self) -> int:
        """The data file's size in bytes: the end of the last pending tensor."""
        return self._offset

    def encode(self, value: Any, proto: pb.TensorProto) -> None:
        array = _little_endian(value)
        proto.dtype = _ENUM_OF_DTYPE[array.dtype.name]
        proto.dims.extend(array.shape)
        if array.nbytes > self.threshold:
            self._offset += -self._offset % DATA_ALIGNMENT
            proto.external.offset = self._offset
            proto.external.length = array.nbytes
            self._pending.append((array, proto.external))
            self._offset += array.nbytes
        else:
            proto.raw_data = array.tobytes()
            proto.crc32 = crc32(proto.raw_data)

    def write_data(
        self,
        model_path: Path,
        sync: bool = True,
        direct: bool = False,
        make_room: Callable[[int, int], None] | None = None,
    ) -> tuple[Path, Path]:
        """Write the pending tensors to a temporary file beside ``model_path``; fill in
        each one's location and crc32.  Returns (temporary file, final name).

        The file's blocks are reserved first (a full disk fails before any
        write); then each tensor goes from its array's buffer to the file in
        pieces, checksummed and written by worker threads, with the write-out
        to disk started as each piece lands, or with ``direct`` around the page
        cache (O_DIRECT, where the file system takes it; data_writes.py).
        Through the cache, ``make_room(offset, nbytes)`` runs before each piece
        is written.  The gaps between tensors are zeros.  ``sync`` flushes the file to disk
        (fdatasync) before returning.

        The final name is ``<model name>.<hash>.data``, the hash taken over every
        tensor's offset, length and crc32, so the same tensors give the same name
        and a new save never overwrites the data file the old model reads.
        """
        tmp = temporary_path(model_path.with_name(model_path.name + ".data"))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except OSError as exc:
            raise _named(exc, model_path) from None
        try:
            try:
                end = self.size
                if end and hasattr(os, "posix_fallocate"):
                    # Blocks reserved at once: a full disk fails here, before any write,
                    # and the file system lays the file out in one piece.
                    try:
                        os.posix_fallocate(fd, 0, end)
                    except OSError as exc:
                        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                            raise  # ENOSPC above all: the disk cannot hold the file
                tensors = [(_bytes_of(array), ext.offset) for array, ext in self._pending]
                crcs = write_tensors(
                    fd, tensors, end, sync=sync, direct=direct, make_room=make_room
                )
                for (_, ext), crc in zip(self._pending, crcs):
                    ext.crc32 = crc
                if sync:
                    flush_data(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _named(exc, model_path) from None
            raise
        digest = hashlib.sha256()
        for _, ext in self._pending:
            digest.update(f"{ext.offset},{ext.length},{ext.crc32};".encode())
        final = model_path.with_name(f"{model_path.name}.{digest.hexdigest()[:12]}.data")
        for _, ext in self._pending:
            ext.location = final.name
        return tmp, final


_O_BINARY = getattr(os, "O_BINARY", 0)


def _bytes_of(array: np.ndarray) -> memoryview:
    """The array's bytes, without a copy (it is C-ordered: see _little_endian)."""
    return memoryview(array.reshape(-1).view(np.uint8))


def _named(exc: OSError, model_path: Path) -> OSError:
    """``exc`` about the model's data file, naming the model, not the temporary file."""
    return OSError(
        exc.errno, f"cannot write the data file of the model ({exc.strerror})", str(model_path)
    )
