"""Freeing the data files a save replaced, in a background thread.

Once the model's rename has switched to the new data file, the old one is
garbage, but freeing it is not free: the kernel drops its cached pages and
returns its blocks, about 80 ms for a 400 MB file on the machine where this was
measured, as long as writing it.  :func:`save` need not wait for that, so it
hands the old files to a thread:

* files of another name are unlinked there;
* a file of the *same* name (the same tensors give the same name, see
  tensors._TensorWriter.write_data) is replaced by the rename itself, which
  would free it on the spot; save opens it first, so the rename only drops its
  name, and the thread frees it by closing that descriptor.

Why this is safe: what a thread removes is fixed before it starts, and every
save waits for the removals still running (:func:`wait_for_removals`) before
it writes anything, so no removal can take a file that a later save wrote.
The threads are not daemons: the interpreter waits for them at exit.  A
process killed before its thread ran leaves an old data file behind, which
the next save of the same model removes; the open descriptor of a killed
process is closed, and its file freed, by the kernel.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.Lock()
_running: list[threading.Thread] = []


def open_to_free_later(path: Path) -> int | None:
    """A descriptor of the regular file at ``path``, which keeps it allocated after
    a rename replaces it (None when there is no such file, or on Windows, where
    an open file cannot be replaced)."""
    if os.name != "posix":
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except OSError:
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    return fd


def free_in_background(paths: list[Path], descriptors: list[int]) -> None:
    """Unlink ``paths`` and close ``descriptors`` in a thread (errors are ignored:
    a file that cannot be removed is left for the next save)."""
    if not paths and not descriptors:
        return

    def free() -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()
        for fd in descriptors:
            with contextlib.suppress(OSError):
                os.close(fd)

    thread = threading.Thread(target=free, name="graphengine-free-old-data", daemon=False)
    with _lock:
        _running[:] = [t for t in _running if t.is_alive()]
        thread.start()  # under the lock: wait_for_removals never sees it unstarted
        _running.append(thread)


def drop_cached_pages(paths: list[Path], start: int = 0, nbytes: int = 0) -> None:
    """Ask the kernel to drop the cached pages of bytes ``start`` to ``start + nbytes``
    (0: to the end) of ``paths``, files a save is replacing, so that writing the
    new file there reuses that memory at once.

    Writing a 400 MB data file takes 400 MB of page cache while the old file
    (still needed until the rename) keeps its own.  Pages taken from the free
    list can cost 10x more to write than pages freed a moment ago: in a virtual
    machine whose free memory goes back to the host (virtio-balloon free page
    reporting, which runs every 2 s and takes what is free then), each one is a
    host page fault, 0.4-0.7 GB/s against 7 GB/s where this was measured.  So
    a save drops each range of the old file just before it writes the same
    range of the new one (data_writes.write_tensors_buffered): the pages are
    free for milliseconds.  Dropping the whole file first left them free for
    the whole save, and saves over a cached 400 MB model took 250-1000 ms,
    against 200-270 ms range by range.  The files are not changed: only clean
    pages are dropped (dirty ones are written first, pages mapped by a process
    are kept), so an old model that a failed save leaves in place still loads,
    from disk.  Errors are ignored: this only saves time.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for fd, _ in _regular_files(paths):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, start, nbytes, os.POSIX_FADV_DONTNEED)


def cached_bytes(paths: list[Path], samples: int = 16) -> int:
    """The total size of those ``paths`` that look wholly in the page cache: each
    of ``samples`` bytes, evenly spread, is there (0 where that cannot be told).

    A save over such files writes through the cache, into the memory that
    :func:`drop_cached_pages` frees as it goes.  The probe is a read that must not wait
    (``RWF_NOWAIT``); a miss returns at once (it may start reading ahead).
    """
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None or not hasattr(os, "preadv"):
        return 0
    total = 0
    probe = bytearray(1)
    for fd, size in _regular_files(paths):
        with contextlib.suppress(OSError):  # BlockingIOError: not in the cache
            if all(
                os.preadv(fd, [probe], size * i // samples, nowait) == 1 for i in range(samples)
            ):
                total += size
    return total


def _regular_files(paths: list[Path]) -> Iterator[tuple[int, int]]:
    """(descriptor, size) of each of ``paths`` that opens as a regular file,
    read-only and without blocking on a FIFO; each is closed when the loop
    moves on.  Paths that do not open, or are not regular files, are skipped."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                yield fd, st.st_size
        except OSError:
            pass
        finally:
            os.close(fd)


def wait_for_removals() -> None:
    """Return once every file handed to :func:`free_in_background` is freed."""
    with _lock:
        running, _running[:] = list(_running), []
    for thread in running:
        thread.join()
