"""Checking, before a long run starts, that the files it will write can be written.

A training run writes its model, its best model and its log at the end of an
epoch or of the run: a path that names a folder, or lies in a folder that is
read-only or on a read-only disk, would fail only then, after the work is done.
:func:`check_writable` tries what the write will do (make the folder, create a
file in it) at the start instead, and refuses with the caller's error type,
naming the option to change.

Writes replace their target atomically (a temporary file renamed over it), so a
FIFO, a device node or a symbolic link at an output path is replaced by the new
file, never written through: the file a link points to is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import GraphEngineError


def check_writable(
    path: str | os.PathLike, what: str, option: str, error: type[GraphEngineError]
) -> Path:
    """``path`` as a Path if a file can be written there; ``error`` otherwise.

    ``what`` names the file in the message ("trained model"), ``option`` the
    setting that chose it ("-o").  Makes the missing folders on the way, as the
    write would.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} '{path}' is a folder; give {option} the path of a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(
            f"cannot write {what} '{path}': {exc.strerror or exc}; give {option} a "
            "path in a folder you can write"
        ) from None
    return path
