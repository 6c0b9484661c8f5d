"""Reading ``.npy`` and ``.npz`` files without trusting them.

One reader for every array file graphengine opens (training data, checkpoints,
``--feed`` arrays).  Before anything is allocated it checks:

* the path is a regular file (:mod:`graphengine.input_files`);
* the zip archive's directory, and each member's ``.npy`` header: a plain
  numeric dtype (object arrays need pickle, which is refused), a rank of at most
  64, and a size that agrees exactly with the bytes the member holds, so a
  header that claims ``(2**33,)`` over a few bytes is refused, as is a
  truncated member;
* each array's size against ``max_tensor_bytes`` (:mod:`graphengine.limits`),
  which also caps what a compressed member may expand to (a zip bomb), and
  what the compressed members expand to together against ``max_inflated_bytes``
  (many members, each under the budget).

Then each array is read into memory of exactly its declared size, never more;
a member that inflates past its declared size, or fails its CRC, is an error.
Every problem is the caller's error type (TrainingError for data and
checkpoints, FileFormatError for feeds) naming the file and the member.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import BinaryIO

import numpy as np

from .errors import GraphEngineError
from .input_files import open_input
from .limits import MAX_RANK, format_dims, get_limits

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
#: Bytes read at a time into an array's memory.
_CHUNK = 16 * 2**20


def read_npz(
    path: str | os.PathLike, what: str, error: type[GraphEngineError], only: str | None = None
) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``path``, by name (without ``.npy``), or
    only the array ``only`` (an empty dict when the archive lacks it).

    ``what`` names the file in messages ("data file", "checkpoint").
    """
    with open_input(path, what, error) as f:
        magic = f.read(4)
        if magic not in _ZIP_MAGICS:
            hint = " (it is a single .npy array)" if magic == _NPY_MAGIC[:4] else ""
            raise error(
                f"{what} '{path}' is not a readable .npz file: no zip header{hint}; "
                "write it with numpy.savez"
            )
        f.seek(0)
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise error(
                f"{what} '{path}' is not a readable .npz file: its zip directory is "
                f"damaged or missing ({exc}); the file is truncated or corrupt"
            ) from None
        with archive:
            return _members(archive, path, what, error, only)


def npz_names(path: str | os.PathLike, what: str, error: type[GraphEngineError]) -> list[str]:
    """The array names of the ``.npz`` archive ``path``, reading only its directory."""
    with open_input(path, what, error) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                return [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise error(f"{what} '{path}' is not a readable .npz file ({exc})") from None


def _members(
    archive: zipfile.ZipFile, path, what: str, error: type[GraphEngineError], only: str | None
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    budget = get_limits().max_tensor_bytes
    infos = [i for i in archive.infolist() if only is None or _array_name(i) == only]
    # Compressed members could each stay under the per-array budget and still
    # inflate to more than the machine holds together; their sizes are known
    # from the directory, so the total is refused before anything is read.
    inflated = sum(i.file_size for i in infos if i.compress_type != zipfile.ZIP_STORED)
    if inflated > get_limits().max_inflated_bytes:
        raise error(
            f"{what} '{path}': its compressed arrays would inflate to {inflated:,} bytes "
            f"together, over the limit of {get_limits().max_inflated_bytes:,}; store it "
            "with numpy.savez (uncompressed), or raise "
            "ge.set_limits(max_inflated_bytes=...) if the file is trusted"
        )
    for info in infos:
        name = _array_name(info)
        where = f"{what} '{path}', array {name!r}"
        if name in arrays:
            raise error(f"{where} is stored twice in the archive")
        if info.flag_bits & 0x1:
            raise error(f"{where} is encrypted")
        if info.file_size > budget + 2**16:
            raise error(
                f"{where} expands to {info.file_size:,} bytes, over the limit of "
                f"{budget:,} bytes per array; raise it with "
                "ge.set_limits(max_tensor_bytes=...) if the file is trusted"
            )
        try:
            with archive.open(info) as member:
                arrays[name] = _read_array(member, info.file_size, where, error)
        except GraphEngineError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise error(
                f"{where} cannot be read: {type(exc).__name__}: {exc}; the file is "
                "damaged or truncated"
            ) from None
    return arrays


def _array_name(info: zipfile.ZipInfo) -> str:
    return info.filename[:-4] if info.filename.endswith(".npy") else info.filename


def read_npy(path: str | os.PathLike, what: str, error: type[GraphEngineError]) -> np.ndarray:
    """The array of the ``.npy`` file ``path``."""
    with open_input(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            return _read_array(f, size, f"{what} '{path}'", error)
        except (OSError, EOFError, ValueError) as exc:
            raise error(f"{what} '{path}' cannot be read: {exc}") from None


def _read_array(
    stream: BinaryIO, size: int, where: str, error: type[GraphEngineError]
) -> np.ndarray:
    """An array from ``stream``, which holds exactly ``size`` bytes of ``.npy`` data."""
    if stream.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise error(f"{where} is not .npy data (no NumPy signature)")
    version = stream.read(2)
    if len(version) != 2:
        raise error(f"{where} is truncated inside its .npy header")
    try:
        if version[0] == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version[0] in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise error(
                f"{where} uses .npy format version {version[0]}.{version[1]}, "
                "which this numpy cannot read"
            )
    except GraphEngineError:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        raise error(f"{where} has a damaged or truncated .npy header ({exc})") from None
    header_bytes = stream.tell() if stream.seekable() else None
    if dtype.hasobject:
        raise error(
            f"{where} holds objects ({dtype}): it needs pickle to load, and "
            "graphengine never unpickles: store plain numeric arrays"
        )
    if len(shape) > MAX_RANK:
        raise error(f"{where} has rank {len(shape)}; at most {MAX_RANK} is supported")
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    if header_bytes is not None and header_bytes + nbytes != size:
        held = size - header_bytes
        problem = "is truncated" if held < nbytes else "has bytes past its end"
        raise error(
            f"{where} {problem}: its header says {format_dims(shape)} of "
            f"{dtype.name} ({nbytes:,} bytes), but {held:,} bytes follow the header"
        )
    if nbytes > get_limits().max_tensor_bytes:
        raise error(
            f"{where} would take {nbytes:,} bytes, over the limit of "
            f"{get_limits().max_tensor_bytes:,} bytes per array; raise it with "
            "ge.set_limits(max_tensor_bytes=...) if the file is trusted"
        )
    array = np.empty(shape, dtype, order="F" if fortran else "C")
    buffer = memoryview(array.reshape(-1, order="A").view(np.uint8)) if nbytes else None
    got = 0
    while buffer is not None and got < nbytes:
        n = stream.readinto(buffer[got : got + _CHUNK])
        if not n:
            break
        got += n
    if got != nbytes:
        raise error(
            f"{where} is truncated: its header says {format_dims(shape)} of "
            f"{dtype.name} ({nbytes:,} bytes), but only {got:,} bytes are there"
        )
    if stream.read(1):
        raise error(f"{where} has bytes past the end of its array")
    return array
