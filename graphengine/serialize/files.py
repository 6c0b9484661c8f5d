"""Model files as a whole: formats, versions, atomic writes, reading and parsing.

What lies inside the ModelProto is encode.py's and decode.py's business.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf import message as _message
from google.protobuf import text_format

from ..errors import FileFormatError
from ..input_files import open_input
from ..proto import graphengine_pb2 as pb
from .checksums import crc32

#: The format this package writes, and the newest major version it reads
#: (1.1 added a crc32 to each inline tensor).
FORMAT_VERSION = (1, 1)
#: The op set this package writes and the newest it reads (older ones are upgraded
#: on read: serialize/upgrade.py).
OPSET_VERSION = 2
#: Protobuf refuses messages of 2 GiB or more; so do we, before reading.
MAX_FILE_BYTES = 2**31 - 1
TEXT_SUFFIXES = (".pbtxt", ".txtpb", ".textproto")


@dataclass(frozen=True)
class FileInfo:
    """What a model file says about itself, besides the graph."""

    path: str
    format: str  # "binary" or "text"
    format_version: tuple[int, int]
    opset_version: int
    producer_name: str
    producer_version: str
    data_files: tuple[str, ...]  # external data files read, relative to the model


def _format_for(path: Path, format: str | None) -> str:
    if format is None:
        return "text" if path.suffix.lower() in TEXT_SUFFIXES else "binary"
    if format not in ("binary", "text"):
        raise FileFormatError(f"unknown format {format!r}: use 'binary' (.pb) or 'text' (.pbtxt)")
    return format


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp``.

    The process id in the name lets :func:`remove_stale_temporaries` tell the
    files of a process that died from those of one still writing.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` (and of its data files) left by processes
    that no longer run, killed in the middle of a write.  Returns what was removed.
    """
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}*.tmp"))
    except OSError:
        return removed
    for stray in candidates:
        parts = stray.name.rsplit(".", 3)  # [".name...", pid, random, "tmp"]
        if len(parts) != 4 or not parts[1].isdigit() or process_is_running(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            stray.unlink()
            removed.append(stray)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def process_is_running(pid: int) -> bool:
    """Whether process ``pid`` exists (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # another user's process, or a pid we cannot ask about: keep its file
    return True


@contextlib.contextmanager
def atomic_file(
    path: Path, pause_before_rename: float = 0.0, *, sync: bool = True
) -> Iterator[BinaryIO]:
    """A file object whose content replaces ``path`` only when the block succeeds.

    The temporary file is ``.<name>.<pid>.<random>.tmp`` beside ``path``
    (:func:`temporary_path`).  With ``sync`` (the default) the file's data is
    flushed to disk before the rename (:func:`flush_data`) and the folder after
    it, so the switch survives a power cut; without, it survives a killed
    process only.
    ``pause_before_rename`` (seconds) exists for crash tests that kill the
    process between the write and the rename.  An OSError names ``path``, not
    the temporary file.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        # os.open with mode 0o666 lets the umask decide the permissions, as open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write there ({exc.strerror})", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if sync:
                flush_data(out.fileno())
        if pause_before_rename:
            time.sleep(pause_before_rename)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename == str(tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    if sync:
        sync_folder(path.parent)


def flush_data(fd: int) -> None:
    """Wait until the file's bytes, and what is needed to read them back (its size,
    its blocks), are on disk.  fdatasync where the system has it: it skips
    the timestamps, which a crash may lose without harm."""
    getattr(os, "fdatasync", os.fsync)(fd)


def sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_file(path: Path) -> tuple[bytes, int | None]:
    """The bytes of a model file and its owner's user id (None where not known)."""
    with open_input(path, "model file", FileFormatError) as f:
        try:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_FILE_BYTES:
                raise FileFormatError(
                    f"model file '{path}' is {st.st_size} bytes; a model file holds at most "
                    "2 GiB (protobuf's limit), larger tensors belong in external data"
                )
            return f.read(), getattr(st, "st_uid", None)
        except OSError as exc:
            raise FileFormatError(
                f"cannot read model file '{path}': {exc.strerror or exc}"
            ) from exc


def _parse(data: bytes, fmt: str, path: Path) -> pb.ModelProto:
    if fmt == "text":
        return _parse_text(data, path)
    try:
        return pb.ModelProto.FromString(data)
    except (_message.DecodeError, RecursionError, ValueError) as exc:
        raise FileFormatError(
            f"'{path}' is not a binary graphengine model: protobuf cannot decode it "
            f"({exc}); the file is truncated or corrupt, or in another format (a text "
            "model needs a .pbtxt name or format='text')"
        ) from exc


def _parse_text(data: bytes, path: Path) -> pb.ModelProto:
    """Parse text format strictly; fields unknown to this version are ignored only
    in files that declare a newer version, so typos are still reported (and a
    newer major version gets the version message from _check_header)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"'{path}' is not a text model: byte {exc.start} is not UTF-8"
        ) from exc
    try:
        return text_format.Parse(text, pb.ModelProto())
    except (text_format.ParseError, RecursionError, ValueError) as exc:
        strict_error = exc
    model = pb.ModelProto()
    with contextlib.suppress(text_format.ParseError, RecursionError, ValueError):
        text_format.Parse(text, model, allow_unknown_field=True)
        if (model.format_version_major, model.format_version_minor) > FORMAT_VERSION:
            return model
    where = ""
    if isinstance(strict_error, text_format.ParseError) and strict_error.GetLine():
        where = f" at line {strict_error.GetLine()}, column {strict_error.GetColumn()}"
    reason = str(strict_error).split(" : ", 1)[-1]
    raise FileFormatError(f"cannot parse text model '{path}'{where}: {reason}") from strict_error


def _serialize(model: pb.ModelProto, fmt: str, path: Path) -> bytes:
    if fmt == "text":
        return text_format.MessageToString(model, as_utf8=True).encode("utf-8")
    size = model.ByteSize() + len(_CHECKSUM_TAG) + 4
    if size > MAX_FILE_BYTES:
        raise FileFormatError(
            f"cannot save '{path}': the model would take {size} bytes, over protobuf's 2 GiB "
            "limit; pass a lower external_data_threshold so large tensors go to a data file"
        )
    body = model.SerializeToString(deterministic=True)
    # The checksum goes first, so that a file cut short anywhere fails it.
    return _CHECKSUM_TAG + crc32(body).to_bytes(4, "little") + body


#: ModelProto.content_crc32's tag: field 10, wire type 5 (fixed32).
_CHECKSUM_TAG = bytes([10 << 3 | 5])


def _content_problem(data: bytes, model: pb.ModelProto) -> str | None:
    """Why the bytes of a binary file do not match its content_crc32, or None
    (also None for a file without one, from before format 1.1, and for one
    rewritten by another tool, whose checksum is no longer its first field)."""
    if not model.HasField("content_crc32"):
        return None
    recorded = model.content_crc32
    if not data.startswith(_CHECKSUM_TAG + recorded.to_bytes(4, "little")):
        # Not where graphengine writes it: the file was rewritten by another tool
        # (protobuf puts field 10 after field 9), so the checksum describes bytes
        # that no longer exist.  Damage does not move it: a flip or a cut leaves
        # the first five bytes in place, or makes the field unknown.
        return None
    found = crc32(memoryview(data)[len(_CHECKSUM_TAG) + 4 :])
    if found == recorded:
        return None
    return (
        f"its bytes do not match its recorded checksum (content_crc32: the file gives "
        f"{found:08x}, it records {recorded:08x}), so the file is damaged (or was "
        "edited without clearing content_crc32). Use an intact copy or save the graph "
        "again; ge.load(..., verify_data=False) reads it unchecked"
    )


def _check_header(model: pb.ModelProto, path: Path) -> None:
    """Refuse files that are not models, or that come from a newer major format or opset."""
    major, minor = model.format_version_major, model.format_version_minor
    ours = FORMAT_VERSION[0]
    if major == 0:
        raise FileFormatError(
            f"'{path}' is not a graphengine model: it has no format version (an empty file, "
            "or another kind of protobuf message)"
        )
    if major > ours:
        raise FileFormatError(
            f"'{path}' was written by format {major}.x; this graphengine reads {ours}.x; "
            "upgrade graphengine"
        )
    if model.opset_version == 0:
        raise FileFormatError(
            f"'{path}' (format {major}.{minor}) has no opset_version; set it to {OPSET_VERSION}"
        )
    if model.opset_version > OPSET_VERSION:
        raise FileFormatError(
            f"'{path}' uses opset {model.opset_version}; this graphengine implements opset "
            f"{OPSET_VERSION}; upgrade graphengine"
        )
    if not model.HasField("graph"):
        raise FileFormatError(
            f"'{path}' has a format version but no graph; it is not a complete graphengine model"
        )
