"""Saving and loading graphs: protobuf files, binary or text, written atomically.

A file holds one ``ModelProto`` (proto/graphengine.proto): the forward graph,
the gradient section, the training spec and metadata.  Binary files (``.pb``)
use protobuf's wire format; text files (``.pbtxt``) use protobuf's text format,
for reading and diffing.  Saving is deterministic: the same graph always gives
the same bytes.

Loading never trusts the file.  It reads at most 2 GiB (protobuf's limit),
checks every declared tensor size against the bytes actually present before
allocating anything, and then runs the validation pass
(:func:`graphengine.compiler.build_graph`).  Each problem raises one of:

* ``FileFormatError``: the file itself -- missing, truncated, not a model, from
  a newer major format or opset, an unknown dtype, a tensor whose bytes do not
  match its dims or its recorded crc32, a binary file whose bytes do not match
  the crc32 it starts with (both from format 1.1 on; ``verify_data=False``
  skips the checksums), or external data that is missing or escapes the
  model's folder;
* ``GraphError``: the structure -- malformed or duplicate names, unknown ops,
  attributes of the wrong kind, dangling inputs, cycles, a gradient section or
  training spec naming tensors that do not exist;
* ``ShapeError``: shape or dtype inference fails on a node.

Tensors over 1 MiB go to a data file beside the model
(``<model file>.<hash>.data``), as in ONNX: protobuf cannot hold messages over
2 GiB, and raw bytes in a file of their own are written and mapped back
without copies; see :func:`save`.

The work is split by concern: ``files`` (formats, versions, atomic writes,
parsing), ``tensors`` (dtype enums, writing tensors inline or to the data file),
``external`` (reading the data file), ``encode`` (Graph -> ModelProto),
``decode`` (ModelProto -> Graph) and ``unknown`` (fields from newer versions).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ..errors import FileFormatError, GraphError
from ..graph import Graph, require_graph
from ..limits import MAX_RANK
from .cleanup import (
    cached_bytes,
    drop_cached_pages,
    free_in_background,
    open_to_free_later,
    wait_for_removals,
)
from .data_writes import may_write_direct
from .decode import _Reader
from .encode import _graph_to_model
from .files import (
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    OPSET_VERSION,
    TEXT_SUFFIXES,
    FileInfo,
    _check_header,
    _content_problem,
    _format_for,
    _parse,
    _read_file,
    _serialize,
    atomic_file,
    remove_stale_temporaries,
    sync_folder,
)
from .tensors import (
    DATA_ALIGNMENT,
    EXTERNAL_THRESHOLD,
    INLINE_LIMIT,
    _choose_threshold,
    _tensor_sizes,
    _TensorWriter,
)
from .unknown import (
    _restore_preserved,
    _varint,  # noqa: F401  (tests build wire-format bytes with it)
)

# The constants are re-exported to be read.  Each is read in the module that
# defines it, so code that changes one (a test) patches it there, e.g.
# serialize.files.MAX_FILE_BYTES.
__all__ = [
    "DATA_ALIGNMENT",
    "EXTERNAL_THRESHOLD",
    "FORMAT_VERSION",
    "INLINE_LIMIT",
    "MAX_FILE_BYTES",
    "MAX_RANK",
    "OPSET_VERSION",
    "TEXT_SUFFIXES",
    "FileInfo",
    "atomic_file",
    "load",
    "load_with_info",
    "save",
    "wait_for_removals",
]


def save(
    graph: Graph,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    external_data_threshold: int | None = None,
    sync: bool = True,
) -> None:
    """Write ``graph`` to ``path`` atomically.

    ``format`` is "binary" or "text"; by default a ``.pbtxt`` (``.txtpb``,
    ``.textproto``) name means text and any other binary.

    Tensors (parameter values and constants) larger than
    ``external_data_threshold`` bytes (default :data:`EXTERNAL_THRESHOLD`, 1 MiB)
    go to a data file beside the model, ``<file name>.<hash>.data``, as raw
    little-endian bytes, each 64-byte aligned with its crc32, written straight
    from the arrays by worker threads that checksum each piece as they write
    it; :func:`load` maps them back without copying.  Whatever the
    threshold, the largest tensors also move there while those left inline
    would need more than 1.5 GiB.

    The model and its data file are replaced together: the data file goes
    under a new name (its hash), then the model is renamed over ``path`` (the
    single switch from the old save to the new one), and only then are data
    files of earlier saves of ``path`` removed (in a background thread, which
    the next save and the interpreter's exit wait for: serialize/cleanup.py).
    A process killed at any point leaves the old model with its data, or the
    new one with its data.  Each file is written to a temporary file in the
    same folder and flushed to disk first, the data file's write-out to disk
    starting as each piece is written.  A data file of 32 MiB or more goes
    around the page cache instead (``O_DIRECT``, where the file system takes
    it; a load right after then reads it from disk), unless the files it
    replaces are cached (serialize/data_writes.py).  ``sync=False`` skips the
    flushes (and writes through the cache): the switch still survives a killed
    process, but a power cut may lose the new save (``np.save`` and
    ``torch.save`` do not flush either).  Temporary files of ``path`` left by
    killed processes are removed.

    Raises GraphError when the graph's gradient section or training spec names
    nodes it does not have, ShapeError when a parameter's value no longer fits
    its declared type, FileFormatError when the model would pass 2 GiB (lower
    the threshold), and OSError (naming ``path``) when the file cannot be written.

    >>> import os, tempfile, numpy as np, graphengine as ge
    >>> g = ge.Graph("demo")
    >>> y = ge.exp(g.placeholder("x", shape=(2,)))
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.pb")
    >>> ge.save(g, path)
    >>> ge.run(ge.load(path), y.name, {"x": np.zeros(2, np.float32)})
    array([1., 1.], dtype=float32)
    """
    if isinstance(path, Graph) and not isinstance(graph, Graph):
        raise GraphError("ge.save takes the graph first, then the path: ge.save(graph, path)")
    require_graph(graph, "ge.save")
    path = Path(path)
    fmt = _format_for(path, format)
    wait_for_removals()  # an earlier save's old data file must not outlive this save's start
    remove_stale_temporaries(path)
    threshold = _choose_threshold(_tensor_sizes(graph), external_data_threshold)
    writer = _TensorWriter(threshold)
    model = _graph_to_model(graph, writer)
    if graph.record.unknown_fields:
        _restore_preserved(model, graph.record.unknown_fields, fmt)
    data_tmp = data_final = replaced = None
    try:
        if writer.used:
            old = _old_data_files(path, keep=None)
            # Over files that are in the page cache, the new one goes through it,
            # into the memory that dropping their pages frees range by range as
            # it is written (warm, and cached for a load that follows); otherwise
            # a large file saved with a flush goes around the cache (fresh pages
            # can be slow: data_writes.py, cleanup.drop_cached_pages).
            direct = may_write_direct(writer.size, sync) and cached_bytes(old) < writer.size

            def make_room(offset: int, nbytes: int) -> None:
                drop_cached_pages(old, offset, nbytes)

            data_tmp, data_final = writer.write_data(path, sync, direct, make_room)
        payload = _serialize(model, fmt, path)
        if data_tmp is not None:
            # A data file of this very name holds the same tensors (the name hashes
            # them); it is kept open so that the rename does not free it here.
            replaced = open_to_free_later(data_final)
            os.replace(data_tmp, data_final)  # a new name: the old model's file stays
            data_tmp = None
            if sync:
                sync_folder(path.parent)  # the data file's name is on disk before the switch
        with atomic_file(path, _pause_between_renames, sync=sync) as out:
            out.write(payload)
    except BaseException:
        if replaced is not None:
            os.close(replaced)
        raise
    finally:
        if data_tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(data_tmp)
    free_in_background(
        _old_data_files(path, keep=data_final), [] if replaced is None else [replaced]
    )


#: Seconds to wait between the data file's rename and the model's (crash tests).
_pause_between_renames = 0.0


def _old_data_files(path: Path, keep: Path | None) -> list[Path]:
    """Data files of earlier saves of ``path``: ``<name>.data`` and ``<name>.<hash>.data``."""
    pattern = re.compile(re.escape(path.name) + r"(\.[0-9a-f]{12})?\.data")
    try:
        return [
            old
            for old in path.parent.iterdir()
            if pattern.fullmatch(old.name) and (keep is None or old.name != keep.name)
        ]
    except OSError:
        return []


def load(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    verify_data: bool = True,
    allow_linked_data: bool = False,
) -> Graph:
    """Read a graph saved by :func:`save` (binary or text, by name or ``format``).

    Tensors in a data file are mapped copy-on-write, not copied: parameters are
    writable arrays whose changes never reach the file.  Every tensor's crc32
    is checked, inline or in the data file; ``verify_data=False`` skips those
    checks (a load then touches no byte of the data file);
    ``allow_linked_data=True`` accepts data files with several hard links or
    another owner than the model file (see :mod:`graphengine.input_files`).

    Raises FileFormatError, GraphError or ShapeError as described in the
    module docstring; never a protobuf or numpy error.
    """
    return load_with_info(
        path, format, verify_data=verify_data, allow_linked_data=allow_linked_data
    )[0]


def load_with_info(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    verify_data: bool = True,
    allow_linked_data: bool = False,
) -> tuple[Graph, FileInfo]:
    """Like :func:`load`, and also return the file's :class:`FileInfo`."""
    path = Path(path)
    fmt = _format_for(path, format)
    data, owner = _read_file(path)
    model = _parse(data, fmt, path)
    reader = _Reader(path, owner, verify_data=verify_data, allow_linked_data=allow_linked_data)
    if verify_data and fmt == "binary" and model.format_version_major <= FORMAT_VERSION[0]:
        problem = _content_problem(data, model)
        if problem is not None:
            # Name the damaged tensor when that is where the damage lies.
            raise reader.damaged_inline_tensor(model) or FileFormatError(f"'{path}': {problem}")
    del data
    _check_header(model, path)
    graph = reader.graph(model)
    info = FileInfo(
        str(path),
        fmt,
        (model.format_version_major, model.format_version_minor),
        model.opset_version,
        model.producer_name,
        model.producer_version,
        tuple(reader.data_files),
    )
    return graph, info
