"""Writing tensors to the data file as fast as the disk takes them.

Each tensor is cut into pieces of :data:`PIECE_BYTES`.  Worker threads take
one piece at a time: they compute its CRC-32 (zlib releases the GIL), write it
with ``os.pwrite`` straight from the array's buffer while those bytes are
still in the CPU cache, and, when the file is to be flushed, ask the kernel to
start writing that range to disk at once (Linux's ``sync_file_range``).  So the
disk works while later pieces are still being copied, and the final
``fdatasync`` waits only for the last few pieces instead of for the whole file:
a save with the flush costs about what the copy alone costs.  The pieces'
CRC-32s are joined into each tensor's with :func:`checksums.crc32_combine`.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .checksums import crc32, crc32_combine

#: Bytes per piece: large enough that the syscalls cost nothing, small enough
#: to stay in the cache between the checksum and the copy.
PIECE_BYTES = 4 * 2**20
#: At most this many threads write (writes to one file mostly serialize in the
#: kernel; the checksums run side by side).
MAX_THREADS = 4

# sync_file_range's flag: start write-out of dirty pages in the range, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def write_tensors(
    fd: int, tensors: list[tuple[memoryview, int]], start_writeback: bool
) -> list[int]:
    """Write each ``(bytes, offset)`` of ``tensors`` to ``fd``; return their CRC-32s.

    ``start_writeback`` asks the kernel to send each piece to disk as soon as it
    is written (nothing is waited for here: the caller's fdatasync does that).
    """
    kick = _writeback_starter() if start_writeback else None
    pieces = []  # (tensor index, bytes, file offset), tensor by tensor, in order
    for index, (data, offset) in enumerate(tensors):
        for start in range(0, len(data), PIECE_BYTES):
            pieces.append((index, data[start : start + PIECE_BYTES], offset + start))

    def write_piece(piece: tuple[int, memoryview, int]) -> int:
        _, data, offset = piece
        crc = crc32(data)
        _write_at(fd, data, offset)
        if kick is not None:
            kick(fd, offset, len(data))
        return crc

    threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(pieces)))
    if threads == 1:
        piece_crcs = [write_piece(piece) for piece in pieces]
    else:
        with ThreadPoolExecutor(threads) as pool:
            piece_crcs = list(pool.map(write_piece, pieces))
    crcs = [0] * len(tensors)
    for (index, data, _), crc in zip(pieces, piece_crcs):
        crcs[index] = crc32_combine(crcs[index], crc, len(data))
    return crcs


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (os.pwrite may write less than asked)."""
    while data:
        written = os.pwrite(fd, data, offset)
        if written <= 0:  # pragma: no cover - a regular file either writes or raises
            raise OSError(errno.EIO, "the data file accepted no bytes")
        data = data[written:]
        offset += written


def _writeback_starter() -> Callable[[int, int, int], None] | None:
    """A function (fd, offset, nbytes) that starts the write-out of that range, or
    None where the system has no such call (the final flush then does it all)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        sync_file_range = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has it
        return None
    sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    sync_file_range.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> None:
        # A failure only means the final flush does the work: ignore it.
        sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)

    return start
