"""Opening the files a user names: regular files only, never blocking.

Every path graphengine reads (model files and their data files, ``.npz`` data,
checkpoints, ``--feed`` arrays, ONNX models) is opened here.  A FIFO, a device
or a folder is refused with the caller's error type instead of being read:
opening a FIFO for reading blocks until a writer comes, so the file is opened
with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor (no race
between a check and the open).

Data files that a model points to follow one more rule (:func:`check_data_file`):
a file with more than one hard link, or owned by another user than the model
file, is refused unless the caller allows it, because a hard link placed beside a model can
name any file its owner can read (a symbolic link is resolved and confined to
the model's folder by the caller; a hard link cannot be told from the
original).  ``ge.load(..., allow_linked_data=True)`` lifts the rule for one
model; :func:`allowing_linked_data` (the command line's ``--allow-linked-data``)
lifts it for every data file read within a block, ONNX external data included.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import GraphEngineError


def open_input(path: str | os.PathLike, what: str, error: type[GraphEngineError]) -> BinaryIO:
    """``path`` opened for binary reading, or ``error`` naming ``what`` ("data file").

    Refuses a missing path, a folder, a FIFO, a socket or a device.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} '{path}' is a folder, not a file") from None
    except OSError as exc:
        raise error(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(
                f"{what} '{path}' is {_kind(mode)}, not a regular file; graphengine "
                "reads only regular files (a pipe or a device could block or never "
                "end)"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular_file(path: str | os.PathLike, what: str, error: type[GraphEngineError]) -> Path:
    """``path`` as a Path if it names a regular file; ``error`` otherwise."""
    with open_input(path, what, error):
        pass
    return Path(path)


def check_data_file(
    path: str | os.PathLike,
    st: os.stat_result,
    owner: int | None,
    what: str,
    error: type[GraphEngineError],
    allow_linked: bool,
) -> None:
    """Refuse a data file with more than one hard link or another owner.

    ``st`` is the file's ``os.stat``/``os.fstat`` result, ``owner`` the user id
    owning the model file (None: not known, not checked); ``allow_linked``
    (``ge.load(..., allow_linked_data=True)``) turns the check off.
    """
    if allow_linked or _linked_data_allowed:
        return
    if st.st_nlink > 1:
        raise error(
            f"{what} '{path}' has {st.st_nlink} hard links; a data file must have "
            "one, since a hard link can name a file from anywhere on the disk. Copy "
            f"the file instead of linking it, or, if you trust it, {_HOW_TO_ALLOW}"
        )
    if owner is not None and st.st_uid != owner:
        raise error(
            f"{what} '{path}' belongs to user id {st.st_uid}, the model file to "
            f"{owner}; copy it to make it yours, or, if you trust it, {_HOW_TO_ALLOW}"
        )


_HOW_TO_ALLOW = (
    "pass allow_linked_data=True to ge.load, load within "
    "`with ge.allowing_linked_data():`, or give the command --allow-linked-data"
)


#: Set within :func:`allowing_linked_data` blocks.
_linked_data_allowed = False


@contextlib.contextmanager
def allowing_linked_data() -> Iterator[None]:
    """Within the block, accept data files with several hard links or another owner.

    For files you trust that were placed by linking (a shared model store that
    deduplicates with hard links, say); the command line's
    ``--allow-linked-data`` runs its command inside this block.  Every other rule
    (regular files only, locations confined to the model's folder, sizes,
    checksums) still holds.

    >>> import graphengine as ge
    >>> with ge.allowing_linked_data():
    ...     pass  # ge.load / ge.from_onnx here accept hard-linked data files
    """
    global _linked_data_allowed
    previous, _linked_data_allowed = _linked_data_allowed, True
    try:
        yield
    finally:
        _linked_data_allowed = previous


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
