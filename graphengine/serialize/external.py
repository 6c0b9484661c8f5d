"""External data on load: tensors read from a data file beside the model.

The rules, each checked before a tensor's bytes are touched:

* the location is a relative path that stays inside the model's folder
  (no ``..``, no absolute path, no symbolic link leading out);
* the file is a regular file with one hard link and the model file's owner
  (:func:`graphengine.input_files.check_data_file`), unless the caller passes
  ``allow_linked_data=True``;
* each tensor lies inside the file, and no two tensors share bytes, so the
  bytes a model makes us read never exceed the real size of its data files.
  Overlaps are refused rather than counted once: tensors sharing bytes would
  be views of one array, and training one parameter would change the other;
* the recorded crc32 (or, in older files, sha256) matches, unless the caller
  passes ``verify_data=False``; the checks of all tensors run in threads once
  every tensor is mapped (:meth:`_DataFiles.verify_pending`), before the graph
  is built, a large tensor's crc32 in pieces that threads share.

Tensors are not copied: each data file is mapped once, copy-on-write
(``mmap.ACCESS_COPY``), and every tensor is an ``np.frombuffer`` view of the
map, so loading costs no more than the checksums, and writing into a
parameter (training does) changes memory of this process only, never the file.

The data file is written by tensors._TensorWriter.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ..errors import FileFormatError
from ..input_files import check_data_file, open_input
from ..proto import graphengine_pb2 as pb
from .checksums import crc32, join_pieces

#: Threads checking checksums on load, and the total size below which one is enough.
_VERIFY_THREADS = 4
_THREADED_BYTES = 16 * 2**20
#: A tensor's crc32 is computed in pieces of this many bytes, so that the threads
#: share a large tensor (a model of one 400 MB embedding would leave all but one
#: idle); the pieces' crc32s are joined (checksums.join_pieces).
_VERIFY_PIECE_BYTES = 4 * 2**20


class _DataFiles:
    """Maps external tensor bytes, confined to the model's folder."""

    def __init__(
        self,
        model_path: Path,
        owner: int | None = None,
        *,
        verify: bool = True,
        allow_linked: bool = False,
    ) -> None:
        self.model_path = model_path
        self.folder = model_path.parent
        self.owner = owner
        self.verify = verify
        self.allow_linked = allow_linked
        self.used: list[str] = []
        self._maps: dict[Path, mmap.mmap | None] = {}
        self._regions: dict[Path, list[tuple[int, int, str]]] = {}
        self._unverified: list[tuple[np.ndarray, pb.ExternalData, str]] = []

    def read(
        self, ext: pb.ExternalData, dtype: np.dtype, dims: list[int], where: str
    ) -> np.ndarray:
        """The tensor ``ext`` points to, a writable copy-on-write view of the data file;
        FileFormatError if its bytes are not there or are claimed twice."""
        nbytes = dtype.itemsize
        for d in dims:
            nbytes *= d
        if ext.length != nbytes:
            raise self._error(
                where,
                f"external data length is {ext.length} bytes, but its dims and dtype need {nbytes}",
            )
        path = self._resolve(ext.location, where)
        mapped = self._map(path, ext.location, where)
        size = 0 if mapped is None else len(mapped)
        if ext.offset + ext.length > size:
            raise self._error(
                where,
                f"external data at offset {ext.offset}, length "
                f"{ext.length} lies past the end of '{ext.location}' "
                f"({size} bytes); the data file is truncated or belongs "
                "to another save",
            )
        if ext.offset % dtype.itemsize:
            raise self._error(
                where,
                f"external data offset {ext.offset} is not a multiple of "
                f"the item size of {dtype.name} ({dtype.itemsize})",
            )
        self._claim(path, ext, where)
        if ext.location not in self.used:
            self.used.append(ext.location)
        if ext.length == 0:
            return np.zeros(dims, dtype)
        array = np.frombuffer(
            mapped,
            dtype=dtype.newbyteorder("<"),
            count=ext.length // dtype.itemsize,
            offset=ext.offset,
        )
        if self.verify:
            self._unverified.append((array, ext, where))
        if not dtype.isnative:  # pragma: no cover - every platform we run on is little-endian
            return array.reshape(dims).astype(dtype)
        return array.reshape(dims)

    def _map(self, path: Path, location: str, where: str) -> mmap.mmap | None:
        """The data file mapped copy-on-write (None for an empty file), mapped once."""
        if path in self._maps:
            return self._maps[path]
        try:
            opened = open_input(path, "external data file", FileFormatError)
        except FileFormatError as exc:
            raise self._error(where, str(exc)) from None
        with opened as data:
            st = os.fstat(data.fileno())
            try:
                check_data_file(
                    location,
                    st,
                    self.owner,
                    "external data file",
                    FileFormatError,
                    self.allow_linked,
                )
            except FileFormatError as exc:
                raise self._error(where, str(exc)) from None
            try:
                mapped = (
                    mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_COPY) if st.st_size else None
                )
            except (OSError, ValueError) as exc:
                raise self._error(
                    where, f"cannot map external data file '{location}': {exc}"
                ) from exc
        self._maps[path] = mapped
        return mapped

    def _claim(self, path: Path, ext: pb.ExternalData, where: str) -> None:
        """Record the tensor's byte range; refuse one that overlaps another tensor's."""
        if ext.length == 0:
            return
        regions = self._regions.setdefault(path, [])
        start, stop = ext.offset, ext.offset + ext.length
        i = bisect.bisect_left(regions, (start, stop, where))
        for j in (i - 1, i):
            if 0 <= j < len(regions):
                other_start, other_stop, other = regions[j]
                if other_start < stop and start < other_stop:
                    raise self._error(
                        where,
                        f"its external data (bytes {start} to {stop} of "
                        f"'{ext.location}') overlaps that of {other} (bytes "
                        f"{other_start} to {other_stop}); each tensor needs bytes of "
                        "its own (shared bytes would make the two tensors one "
                        "array, and let a small file claim more bytes than it "
                        "holds). The file was edited or written by another tool: "
                        "save the model again with ge.save",
                    )
        regions.insert(i, (start, stop, where))

    def verify_pending(self) -> None:
        """Check the checksums of every tensor read since the last call.

        The checks run in threads (zlib and hashlib release the GIL, and each
        thread takes the page faults of its own pieces), a tensor's crc32 in
        pieces of :data:`_VERIFY_PIECE_BYTES`; then the first tensor in file
        order that fails is reported; nothing is returned before every tensor
        has been checked.
        """
        pending, self._unverified = self._unverified, []
        # (tensor, bytes, sha256?): a crc32 in pieces, a sha256 (older files) whole.
        jobs: list[tuple[int, memoryview, bool]] = []
        for index, (array, ext, _) in enumerate(pending):
            data = memoryview(array.reshape(-1).view(np.uint8))
            if ext.HasField("crc32"):
                jobs.extend(
                    (index, data[i : i + _VERIFY_PIECE_BYTES], False)
                    for i in range(0, len(data), _VERIFY_PIECE_BYTES)
                )
            elif ext.sha256:
                jobs.append((index, data, True))
        if len(jobs) <= 1 or sum(a.nbytes for a, _, _ in pending) < _THREADED_BYTES:
            digests = [_digest(job) for job in jobs]
        else:
            with ThreadPoolExecutor(min(_VERIFY_THREADS, len(jobs))) as pool:
                digests = list(pool.map(_digest, jobs))
        crcs = join_pieces(
            len(pending),
            (
                (index, int(digest), len(piece))
                for (index, piece, is_sha256), digest in zip(jobs, digests)
                if not is_sha256
            ),
        )
        intact = [True] * len(pending)  # as far as a sha256 tells
        for (index, _, is_sha256), digest in zip(jobs, digests):
            if is_sha256:
                intact[index] = digest == pending[index][1].sha256.lower()
        for (_, ext, where), crc, sha256_intact in zip(pending, crcs, intact):
            if not sha256_intact or (ext.HasField("crc32") and crc != ext.crc32):
                raise self._error(where, _mismatch(ext))

    def _resolve(self, location: str, where: str) -> Path:
        """The data file ``location`` names, refused unless it stays in the model's folder."""
        if not location or "\0" in location or "\\" in location:
            raise self._error(
                where,
                f"external data location {location!r} is not a relative path with '/' separators",
            )
        pure = PurePosixPath(location)
        if pure.is_absolute() or PureWindowsPath(location).drive:
            raise self._error(
                where,
                f"external data location {location!r} is absolute; it "
                "must be relative to the model's folder",
            )
        if ".." in pure.parts:
            raise self._error(
                where,
                f"external data location {location!r} contains '..'; it "
                "must stay inside the model's folder",
            )
        folder = self.folder.resolve()
        try:
            path = (folder / pure).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing, or a symbolic link loop
            raise self._error(
                where,
                f"external data file '{location}' is missing next to "
                f"the model ({exc.__class__.__name__})",
            ) from exc
        if not path.is_relative_to(folder):
            raise self._error(
                where,
                f"external data location {location!r} leads outside the "
                "model's folder through a symbolic link",
            )
        return path

    def _error(self, where: str, message: str) -> FileFormatError:
        return FileFormatError(f"'{self.model_path}': {where}: {message}")


def _digest(job: tuple[int, memoryview, bool]) -> int | str:
    """The crc32 of a job's bytes, or their sha256 (hex) when the job says so."""
    _, data, is_sha256 = job
    return hashlib.sha256(data).hexdigest() if is_sha256 else crc32(data)


def _mismatch(ext: pb.ExternalData) -> str:
    """Why a tensor was refused: its bytes do not match its checksum."""
    if ext.HasField("crc32"):
        return (
            f"the bytes in '{ext.location}' do not match the "
            "recorded crc32; the data file is damaged or belongs "
            "to another save of the model"
        )
    return (
        f"the bytes in '{ext.location}' do not match the recorded "
        "sha256; the data file belongs to another save of the "
        "model: save it again"
    )
