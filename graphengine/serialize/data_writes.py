"""Writing tensors to the data file as fast as the disk takes them.

Each tensor is cut into pieces of :data:`PIECE_BYTES`.  Worker threads take
one piece at a time: they compute its CRC-32 (zlib releases the GIL), write it
with ``os.pwrite`` straight from the array's buffer while those bytes are
still in the CPU cache, and, when the file is to be flushed, ask the kernel to
start writing that range to disk at once (Linux's ``sync_file_range``).  So the
disk works while later pieces are still being copied, and the final
``fdatasync`` waits only for the last few pieces instead of for the whole file:
a save with the flush costs about what the copy alone costs.  The pieces'
CRC-32s are joined into each tensor's (:func:`checksums.join_pieces`).

A large file saved with the flush can go around the page cache instead
(:func:`write_tensors_direct`, ``O_DIRECT``): the threads copy the file's bytes
into small aligned buffers, reused from chunk to chunk, and the disk reads them
from there.  Writing through the cache takes as many pages as the file has
bytes, and fresh pages can be slow to touch: in a virtual machine that hands
free memory back to its host (virtio-balloon free page reporting), each is a
host page fault.  Where this was measured, a first save of 400 MB took
0.6-1.3 s through the cache and 0.23-0.28 s direct, flush included.  The price:
the new file is not in the cache, so a load that checks the checksums right
after reads it from disk.  So ge.save writes direct only where it has no warm
pages to reuse: a save over files that are in the cache drops their pages and
writes through it (serialize/__init__.py).  Where ``O_DIRECT`` is refused (a
file system without it, a system without the flag), the save goes through the
cache.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .checksums import crc32, join_pieces

#: Bytes per piece: large enough that the syscalls cost nothing, small enough
#: to stay in the cache between the checksum and the copy.
PIECE_BYTES = 4 * 2**20
#: At most this many threads write (writes to one file mostly serialize in the
#: kernel; the checksums run side by side).
MAX_THREADS = 4

#: Data files of at least this many bytes, saved with a flush, are written with
#: O_DIRECT: below it the fresh pages cost little, and the file stays in the
#: cache for a load that follows.
DIRECT_MIN_BYTES = 32 * 2**20
#: False writes every data file through the page cache (tests compare the two).
USE_DIRECT = True
#: Bytes per O_DIRECT write, the size of each thread's buffer.
DIRECT_CHUNK_BYTES = 2**20
#: O_DIRECT needs the buffer, the file offset and the length aligned to the
#: device's logical block; 4096 suits every common device (a device that wants
#: more refuses the first write with EINVAL, and the save goes through the cache).
_DIRECT_ALIGNMENT = 4096

# sync_file_range's flag: start write-out of dirty pages in the range, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def write_tensors(
    fd: int,
    tensors: list[tuple[memoryview, int]],
    size: int,
    *,
    sync: bool,
    direct: bool,
    make_room: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Write each ``(bytes, offset)`` of ``tensors`` to ``fd``, a new file of ``size``
    bytes; return their CRC-32s.  ``direct`` tries O_DIRECT first (for files that
    :func:`may_write_direct` allows); ``sync`` means the caller flushes the
    file (fdatasync) afterwards; ``make_room`` is
    :func:`write_tensors_buffered`'s.
    """
    if direct:
        crcs = write_tensors_direct(fd, tensors, size)
        if crcs is not None:
            return crcs
    return write_tensors_buffered(fd, tensors, start_writeback=sync, make_room=make_room)


def may_write_direct(size: int, sync: bool) -> bool:
    """Whether a data file of ``size`` bytes may go around the page cache."""
    return sync and USE_DIRECT and size >= DIRECT_MIN_BYTES and hasattr(os, "O_DIRECT")


def write_tensors_buffered(
    fd: int,
    tensors: list[tuple[memoryview, int]],
    start_writeback: bool,
    make_room: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Write each ``(bytes, offset)`` of ``tensors`` to ``fd`` through the page cache;
    return their CRC-32s.

    ``start_writeback`` asks the kernel to send each piece to disk as soon as it
    is written (nothing is waited for here: the caller's fdatasync does that).
    ``make_room(offset, nbytes)`` runs just before each piece is written (a save
    frees the cache of the same range of the file it replaces there:
    cleanup.drop_cached_pages).
    """
    kick = _writeback_starter() if start_writeback else None
    pieces = []  # (tensor index, bytes, file offset), tensor by tensor, in order
    for index, (data, offset) in enumerate(tensors):
        for start in range(0, len(data), PIECE_BYTES):
            pieces.append((index, data[start : start + PIECE_BYTES], offset + start))

    def write_piece(piece: tuple[int, memoryview, int]) -> int:
        _, data, offset = piece
        crc = crc32(data)
        if make_room is not None:
            make_room(offset, len(data))
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
    return join_pieces(
        len(tensors),
        ((index, crc, len(data)) for (index, data, _), crc in zip(pieces, piece_crcs)),
    )


def write_tensors_direct(
    fd: int, tensors: list[tuple[memoryview, int]], size: int
) -> list[int] | None:
    """Write each ``(bytes, offset)`` of ``tensors`` to ``fd`` with O_DIRECT, the gaps
    as zeros, the file cut to ``size`` bytes; return their CRC-32s, or None where
    the system or the file system refuses O_DIRECT (the caller then writes them
    through the page cache, which overwrites whatever was written here).

    The file is cut in chunks of :data:`DIRECT_CHUNK_BYTES`; each thread builds
    a chunk's bytes in its own aligned buffer (an anonymous map: page-aligned),
    checksums the pieces of tensors there, and writes the chunk.  The last chunk
    is padded with zeros to a whole block, and the padding cut off at the end.
    The writes are on disk when this returns; the file's size and blocks still
    need the caller's fdatasync.
    """
    o_direct = getattr(os, "O_DIRECT", 0)
    if not o_direct:
        return None
    import fcntl  # POSIX only, like O_DIRECT

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | o_direct)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the file system has no O_DIRECT (tmpfs before 6.6)
            return None
        raise
    try:
        return _write_chunks(fd, tensors, size)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the device wants a larger alignment
            return None
        raise
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        os.ftruncate(fd, size)


def _write_chunks(fd: int, tensors: list[tuple[memoryview, int]], size: int) -> list[int]:
    """write_tensors_direct's work, on a descriptor already in O_DIRECT mode."""
    chunk = DIRECT_CHUNK_BYTES
    padded = size + -size % _DIRECT_ALIGNMENT
    # Each chunk's pieces of tensors, in file order: (tensor, start, stop, position in chunk).
    plan: list[list[tuple[int, int, int, int]]] = [[] for _ in range(-(-padded // chunk))]
    for index, (data, offset) in enumerate(tensors):
        start, stop = offset, offset + len(data)
        while start < stop:
            k = start // chunk
            piece_stop = min(stop, (k + 1) * chunk)
            plan[k].append((index, start - offset, piece_stop - offset, start - k * chunk))
            start = piece_stop
    sources = [np.frombuffer(data, np.uint8) for data, _ in tensors]
    threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(plan)))

    def write_every_nth(first: int) -> dict[int, list[int]]:
        """Chunks first, first + threads, ...; the crc32 of each of their pieces."""
        crcs: dict[int, list[int]] = {}
        buffer = mmap.mmap(-1, chunk)  # unmapped with its last reference
        view = memoryview(buffer)
        array = np.frombuffer(buffer, np.uint8)
        for k in range(first, len(plan), threads):
            crcs[k] = []
            filled = 0
            for index, start, stop, at in plan[k]:
                end = at + stop - start
                array[filled:at] = 0  # the gap before the tensor (64-byte alignment)
                array[at:end] = sources[index][start:stop]
                crcs[k].append(crc32(view[at:end]))
                filled = end
            length = min(chunk, padded - k * chunk)
            array[filled:length] = 0
            _write_at(fd, view[:length], k * chunk)
        return crcs

    piece_crcs: dict[int, list[int]] = {}
    if threads == 1:
        piece_crcs = write_every_nth(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for done in pool.map(write_every_nth, range(threads)):
                piece_crcs.update(done)
    return join_pieces(
        len(tensors),
        (
            (index, crc, stop - start)
            for k, pieces in enumerate(plan)
            for (index, start, stop, _), crc in zip(pieces, piece_crcs[k])
        ),
    )


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
