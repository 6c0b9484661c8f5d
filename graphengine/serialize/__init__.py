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
  match its dims, or external data that is missing or escapes the model's folder;
* ``GraphError``: the structure -- malformed or duplicate names, unknown ops,
  attributes of the wrong kind, dangling inputs, cycles, a gradient section or
  training spec naming tensors that do not exist;
* ``ShapeError``: shape or dtype inference fails on a node.

Large tensors go to a data file beside the model (``<model file>.data``), as in
ONNX, because protobuf cannot hold messages over 2 GiB; see :func:`save`.

The work is split by concern: ``files`` (formats, versions, atomic writes,
parsing), ``tensors`` (dtype enums, writing tensors inline or to the data file),
``external`` (reading the data file), ``encode`` (Graph -> ModelProto),
``decode`` (ModelProto -> Graph) and ``unknown`` (fields from newer versions).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..graph import Graph
from .decode import MAX_RANK, _Reader
from .encode import _graph_to_model
from .files import (
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    OPSET_VERSION,
    TEXT_SUFFIXES,
    FileInfo,
    _check_header,
    _format_for,
    _parse,
    _read_file,
    _serialize,
    atomic_file,
)
from .tensors import DATA_ALIGNMENT, INLINE_LIMIT, _choose_threshold, _tensor_sizes, _TensorWriter
from .unknown import (
    _restore_preserved,
    _varint,  # noqa: F401  (tests build wire-format bytes with it)
)

# The constants are re-exported to be read.  Each is read in the module that
# defines it, so code that changes one (a test) patches it there, e.g.
# serialize.files.MAX_FILE_BYTES.
__all__ = [
    "DATA_ALIGNMENT",
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
]


def save(graph: Graph, path: str | os.PathLike, format: str | None = None, *,
         external_data_threshold: int | None = None) -> None:
    """Write ``graph`` to ``path`` atomically.

    ``format`` is "binary" or "text"; by default a ``.pbtxt`` (``.txtpb``,
    ``.textproto``) name means text and any other binary.

    Tensors (parameter values and constants) larger than
    ``external_data_threshold`` bytes are written to ``<file name>.data`` beside
    the model instead of inline.  By default (None) every tensor stays inline
    while all of them together take at most 1.5 GiB; past that, the largest go
    to the data file, largest first, until what stays inline fits.  Each file is
    written to a temporary file in the same folder, flushed to disk and renamed
    over the target, so a reader never sees half a file; the data file is
    renamed first.  A data file left from an earlier save of the same path is
    removed when the new save needs none.

    Raises GraphError when the graph's gradient section or training spec names
    nodes it does not have, ShapeError when a parameter's value no longer fits
    its declared type, FileFormatError when the model would pass 2 GiB (lower
    the threshold), and OSError when the file cannot be written.

    >>> import os, tempfile, numpy as np, graphengine as ge
    >>> g = ge.Graph("demo")
    >>> y = ge.exp(g.placeholder("x", shape=(2,)))
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.pb")
    >>> ge.save(g, path)
    >>> ge.run(ge.load(path), y.name, {"x": np.zeros(2, np.float32)})
    array([1., 1.], dtype=float32)
    """
    path = Path(path)
    fmt = _format_for(path, format)
    data_path = path.with_name(path.name + ".data")
    threshold = _choose_threshold(_tensor_sizes(graph), external_data_threshold)
    with contextlib.ExitStack() as stack:
        writer = _TensorWriter(threshold, data_path, stack)
        model = _graph_to_model(graph, writer)
        if graph._unknown_fields:
            _restore_preserved(model, graph._unknown_fields, fmt)
        payload = _serialize(model, fmt, path)
    # The data file is in place (ExitStack renamed it) before the model that
    # points into it.
    with atomic_file(path) as out:
        out.write(payload)
    if not writer.used and data_path.exists():
        data_path.unlink()


def load(path: str | os.PathLike, format: str | None = None) -> Graph:
    """Read a graph saved by :func:`save` (binary or text, by name or ``format``).

    Raises FileFormatError, GraphError or ShapeError as described in the
    module docstring; never a protobuf or numpy error.
    """
    return load_with_info(path, format)[0]


def load_with_info(path: str | os.PathLike,
                   format: str | None = None) -> tuple[Graph, FileInfo]:
    """Like :func:`load`, and also return the file's :class:`FileInfo`."""
    path = Path(path)
    fmt = _format_for(path, format)
    model = _parse(_read_file(path), fmt, path)
    _check_header(model, path)
    reader = _Reader(path)
    graph = reader.graph(model)
    info = FileInfo(str(path), fmt, (model.format_version_major, model.format_version_minor),
                    model.opset_version, model.producer_name, model.producer_version,
                    tuple(reader.data_files))
    return graph, info
