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
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np
from google.protobuf import message as _message
from google.protobuf import text_format
from google.protobuf.unknown_fields import UnknownFieldSet

from .compiler import NodeRecord, build_graph
from .dtypes import DTYPE_NAMES, as_dtype
from .errors import FileFormatError, GraphEngineError, GraphError, ShapeError
from .graph import GradientInfo, Graph, Node, check_name, parse_ref
from .proto import graphengine_pb2 as pb
from .training_spec import TrainingSpec

#: The format this module writes, and the newest major version it reads.
FORMAT_VERSION = (1, 0)
#: The op set this module writes and the newest it reads.
OPSET_VERSION = 1
#: Protobuf refuses messages of 2 GiB or more; so do we, before reading.
MAX_FILE_BYTES = 2**31 - 1
#: With the default threshold, tensors stay in the model file while together
#: they need at most this much, which leaves headroom under the 2 GiB limit.
INLINE_LIMIT = 1536 * 2**20
#: Tensors in a data file start at multiples of this, so they can be mapped.
DATA_ALIGNMENT = 64
#: numpy's rank limit is 64 (32 before numpy 2); we accept the smaller.
MAX_RANK = 32
TEXT_SUFFIXES = (".pbtxt", ".txtpb", ".textproto")

_ENUM_OF_DTYPE = {name: i + 1 for i, name in enumerate(DTYPE_NAMES)}
_DTYPE_OF_ENUM = {i + 1: np.dtype(name) for i, name in enumerate(DTYPE_NAMES)}
assert all(pb.DataType.Value(f"DT_{name.upper()}") == value
           for name, value in _ENUM_OF_DTYPE.items()), "DataType enum out of step with dtypes"


@dataclass(frozen=True)
class FileInfo:
    """What a model file says about itself, besides the graph."""

    path: str
    format: str                    # "binary" or "text"
    format_version: tuple[int, int]
    opset_version: int
    producer_name: str
    producer_version: str
    data_files: tuple[str, ...]    # external data files read, relative to the model


# =============================================================================
# Public API
# =============================================================================

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


# =============================================================================
# Files: formats, atomic writes, reading and parsing
# =============================================================================

def _format_for(path: Path, format: str | None) -> str:
    if format is None:
        return "text" if path.suffix.lower() in TEXT_SUFFIXES else "binary"
    if format not in ("binary", "text"):
        raise FileFormatError(f"unknown format {format!r}: use 'binary' (.pb) or 'text' "
                              "(.pbtxt)")
    return format


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file object whose content replaces ``path`` only when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
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


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise FileFormatError(f"cannot read model file '{path}': not a regular file")
        if size > MAX_FILE_BYTES:
            raise FileFormatError(
                f"model file '{path}' is {size} bytes; a model file holds at most 2 GiB "
                "(protobuf's limit), larger tensors belong in external data")
        return path.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"cannot read model file '{path}': "
                              f"{exc.strerror or exc}") from exc


def _parse(data: bytes, fmt: str, path: Path) -> pb.ModelProto:
    if fmt == "text":
        return _parse_text(data, path)
    try:
        return pb.ModelProto.FromString(data)
    except (_message.DecodeError, RecursionError, ValueError) as exc:
        raise FileFormatError(
            f"'{path}' is not a binary graphengine model: protobuf cannot decode it "
            f"({exc}); the file is truncated or corrupt, or in another format (a text "
            "model needs a .pbtxt name or format='text')") from exc


def _parse_text(data: bytes, path: Path) -> pb.ModelProto:
    """Parse text format strictly; fields unknown to this version are ignored only
    in files that declare a newer version, so typos are still reported (and a
    newer major version gets the version message from _check_header)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"'{path}' is not a text model: byte {exc.start} is not "
                              "UTF-8") from exc
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
    size = model.ByteSize()
    if size > MAX_FILE_BYTES:
        raise FileFormatError(
            f"cannot save '{path}': the model would take {size} bytes, over protobuf's 2 GiB "
            "limit; pass a lower external_data_threshold so large tensors go to a data file")
    return model.SerializeToString(deterministic=True)


def _check_header(model: pb.ModelProto, path: Path) -> None:
    """Refuse files that are not models, or that come from a newer major format or opset."""
    major, minor = model.format_version_major, model.format_version_minor
    ours = FORMAT_VERSION[0]
    if major == 0:
        raise FileFormatError(
            f"'{path}' is not a graphengine model: it has no format version (an empty file, "
            "or another kind of protobuf message)")
    if major > ours:
        raise FileFormatError(
            f"'{path}' was written by format {major}.x; this graphengine reads {ours}.x; "
            "upgrade graphengine")
    if model.opset_version == 0:
        raise FileFormatError(f"'{path}' (format {major}.{minor}) has no opset_version; "
                              f"set it to {OPSET_VERSION}")
    if model.opset_version > OPSET_VERSION:
        raise FileFormatError(
            f"'{path}' uses opset {model.opset_version}; this graphengine implements opset "
            f"{OPSET_VERSION}; upgrade graphengine")
    if not model.HasField("graph"):
        raise FileFormatError(f"'{path}' has a format version but no graph; it is not a "
                              "complete graphengine model")


# =============================================================================
# Tensors, inline or in a data file
# =============================================================================

def _tensor_sizes(graph: Graph) -> list[int]:
    """Byte sizes of every tensor the file will hold (parameters, tensor attributes)."""
    sizes = [np.asarray(graph.values[n.name]).nbytes for n in graph.parameters()
             if n.name in graph.values]
    for node in graph.nodes:
        for attr in node.opdef.attrs:
            if attr.kind == "tensor" and node.attrs.get(attr.name) is not None:
                sizes.append(node.attrs[attr.name].nbytes)
    return sizes


def _choose_threshold(sizes: list[int], requested: int | None) -> int | None:
    """The byte size above which tensors go to the data file; None for "none do"."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise FileFormatError(f"external_data_threshold must be an int >= 0 (bytes), "
                                  f"got {requested!r}")
        return requested
    inline = sum(sizes)
    if inline <= INLINE_LIMIT:
        return None
    # Move the largest tensors out first, a whole size class at a time, so that
    # "larger than the threshold" describes exactly what moved.
    counts = Counter(sizes)
    for size in sorted(counts, reverse=True):
        inline -= size * counts[size]
        if inline <= INLINE_LIMIT:
            return size - 1
    return 0  # unreachable: the loop ends with inline == 0


def _little_endian(array: Any) -> np.ndarray:
    """A C-ordered, little-endian copy of ``array`` (or the array itself if it is one)."""
    array = np.asarray(array, order="C")
    dtype = as_dtype(array.dtype)
    return array.astype(dtype.newbyteorder("<"), copy=False)


class _TensorWriter:
    """Fills TensorProtos, writing tensors over the threshold to the data file.

    The data file is opened on first use, inside ``stack``, so it is renamed into
    place when the stack closes and removed if saving fails.
    """

    def __init__(self, threshold: int | None, data_path: Path,
                 stack: contextlib.ExitStack) -> None:
        self.threshold = threshold
        self.data_path = data_path
        self._stack = stack
        self._out: BinaryIO | None = None
        self._offset = 0

    @property
    def used(self) -> bool:
        return self._out is not None

    def encode(self, value: Any, proto: pb.TensorProto) -> None:
        array = _little_endian(value)
        proto.dtype = _ENUM_OF_DTYPE[array.dtype.name]
        proto.dims.extend(array.shape)
        if self.threshold is not None and array.nbytes > self.threshold:
            self._write_external(array, proto.external)
        else:
            proto.raw_data = array.tobytes()

    def _write_external(self, array: np.ndarray, ext: pb.ExternalData) -> None:
        if self._out is None:
            self._out = self._stack.enter_context(atomic_file(self.data_path))
        padding = -self._offset % DATA_ALIGNMENT
        self._out.write(b"\0" * padding)
        self._offset += padding
        data = array.reshape(-1).view(np.uint8)  # the bytes, without a copy
        self._out.write(data)
        ext.location = self.data_path.name
        ext.offset = self._offset
        ext.length = data.nbytes
        ext.sha256 = hashlib.sha256(data).hexdigest()
        self._offset += data.nbytes


class _DataFiles:
    """Reads external tensor bytes, confined to the model's folder."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self.folder = model_path.parent
        self.used: list[str] = []

    def read(self, ext: pb.ExternalData, nbytes: int, where: str) -> bytearray:
        """The ``nbytes`` bytes ``ext`` points to; FileFormatError if they are not there."""
        if ext.length != nbytes:
            raise self._error(where, f"external data length is {ext.length} bytes, but its "
                                     f"dims and dtype need {nbytes}")
        path = self._resolve(ext.location, where)
        try:
            with open(path, "rb") as data:
                size = os.fstat(data.fileno()).st_size
                if ext.offset + ext.length > size:
                    raise self._error(where, f"external data at offset {ext.offset}, length "
                                             f"{ext.length} lies past the end of "
                                             f"'{ext.location}' ({size} bytes); the data file "
                                             "is truncated or belongs to another save")
                buffer = bytearray(ext.length)  # only once the file is known to hold it
                data.seek(ext.offset)
                got = data.readinto(buffer)
        except OSError as exc:
            raise self._error(where, f"cannot read external data file '{ext.location}': "
                                     f"{exc.strerror or exc}") from exc
        if got != ext.length:
            raise self._error(where, f"read {got} of {ext.length} bytes from '{ext.location}'")
        if ext.sha256 and hashlib.sha256(buffer).hexdigest() != ext.sha256.lower():
            raise self._error(where, f"the bytes in '{ext.location}' do not match the recorded "
                                     "sha256; the data file belongs to another save of the "
                                     "model: save it again")
        if ext.location not in self.used:
            self.used.append(ext.location)
        return buffer

    def _resolve(self, location: str, where: str) -> Path:
        """The data file ``location`` names, refused unless it stays in the model's folder."""
        if not location or "\0" in location or "\\" in location:
            raise self._error(where, f"external data location {location!r} is not a relative "
                                     "path with '/' separators")
        pure = PurePosixPath(location)
        if pure.is_absolute() or PureWindowsPath(location).drive:
            raise self._error(where, f"external data location {location!r} is absolute; it "
                                     "must be relative to the model's folder")
        if ".." in pure.parts:
            raise self._error(where, f"external data location {location!r} contains '..'; it "
                                     "must stay inside the model's folder")
        folder = self.folder.resolve()
        try:
            path = (folder / pure).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing, or a symbolic link loop
            raise self._error(where, f"external data file '{location}' is missing next to "
                                     f"the model ({exc.__class__.__name__})") from exc
        if not path.is_relative_to(folder):
            raise self._error(where, f"external data location {location!r} leads outside the "
                                     "model's folder through a symbolic link")
        if not path.is_file():
            raise self._error(where, f"external data location {location!r} is not a file")
        return path

    def _error(self, where: str, message: str) -> FileFormatError:
        return FileFormatError(f"'{self.model_path}': {where}: {message}")


# =============================================================================
# Graph -> ModelProto
# =============================================================================

def _graph_to_model(graph: Graph, writer: _TensorWriter) -> pb.ModelProto:
    from . import __version__

    model = pb.ModelProto(format_version_major=FORMAT_VERSION[0],
                          format_version_minor=FORMAT_VERSION[1], opset_version=OPSET_VERSION,
                          producer_name="graphengine", producer_version=__version__)
    gradient_nodes = _gradient_node_names(graph)
    in_gradient = set(gradient_nodes)
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    out = model.graph
    out.name = graph.name
    for node in graph.nodes:
        if node.name in in_gradient:
            continue
        if node.op == "placeholder" and not node.derived_from:
            _encode_placeholder(node, position[node.name], out.placeholders.add())
        elif node.op == "parameter":
            _encode_parameter(graph, node, position[node.name], writer, out.parameters.add())
        else:
            _encode_node(node, position[node.name], writer, out.nodes.add())
    out.outputs.extend(graph._outputs)
    if graph.gradient is not None:
        _encode_gradient(graph, gradient_nodes, position, writer, model.gradient)
    if graph.training is not None:
        if not isinstance(graph.training, TrainingSpec):
            raise GraphError(f"graph '{graph.name}': training must be a TrainingSpec, got "
                             f"{type(graph.training).__name__}")
        graph.training.check_graph(graph)
        model.training.CopyFrom(graph.training.to_proto())
    for key, value in graph.metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise GraphError(f"graph '{graph.name}': metadata {key!r}: keys and values must be "
                             "strings")
        model.metadata[key] = value
    return model


def _gradient_node_names(graph: Graph) -> tuple[str, ...]:
    """The nodes of the gradient section, checked against the graph."""
    info = graph.gradient
    if info is None:
        return ()
    seen = set()
    for name in info.nodes:
        if name not in graph or name in seen:
            problem = "is listed twice" if name in seen else "is not in the graph"
            raise GraphError(f"graph '{graph.name}': gradient node {name!r} {problem}; the "
                             "gradient info no longer matches the graph")
        if graph.node(name).op == "parameter":
            raise GraphError(f"graph '{graph.name}': gradient node {name!r} is a parameter; "
                             "parameters belong to the forward graph")
        seen.add(name)
    return tuple(info.nodes)


def _encode_placeholder(node: Node, position: int, out: pb.ValueInfo) -> None:
    out.name = node.name
    out.dtype = _ENUM_OF_DTYPE[node.attrs["dtype"].name]
    _encode_shape(node.attrs["shape"], out.shape)
    out.scope = node.scope
    out.position = position


def _encode_parameter(graph: Graph, node: Node, position: int, writer: _TensorWriter,
                      out: pb.ParameterProto) -> None:
    if node.name not in graph.values:
        raise GraphError(f"parameter '{node.name}' has no value in graph.values")
    value, declared = np.asarray(graph.values[node.name]), node.types[0]
    if value.dtype != declared.dtype or value.shape != declared.shape:
        # Refuse now: the file would not load.
        raise ShapeError(f"parameter '{node.name}': graph.values holds {value.dtype}"
                         f"{value.shape}, but the parameter is declared {declared}; assign "
                         f"an array of that type")
    out.name = node.name
    writer.encode(graph.values[node.name], out.value)
    out.trainable = node.attrs["trainable"]
    out.scope = node.scope
    out.position = position


def _encode_node(node: Node, position: int, writer: _TensorWriter, out: pb.NodeProto) -> None:
    out.name = node.name
    out.op_type = node.op
    out.input.extend(node.inputs)
    kinds = {attr.name: attr.kind for attr in node.opdef.attrs}
    for name in sorted(node.attrs):
        value = node.attrs[name]
        if value is None:  # absent: the op's default (None) applies on load
            continue
        try:
            _encode_attr(kinds[name], value, writer, out.attribute.add(name=name).value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise GraphError(f"node '{node.name}' ({node.op}): attribute {name!r} = {value!r} "
                             f"cannot be stored: {exc}") from exc
    out.scope = node.scope
    out.derived_from = node.derived_from
    out.position = position


def _encode_attr(kind: str, value: Any, writer: _TensorWriter, out: pb.AttrValue) -> None:
    """Store a canonical attribute value under the AttrValue member of its kind."""
    if kind == "int":
        out.i = value
    elif kind == "float":
        out.f = value
    elif kind == "str":
        out.s = value
    elif kind == "bool":
        out.b = value
    elif kind in ("ints", "floats", "strs", "bools"):
        values = getattr(out, kind)
        values.SetInParent()  # an empty list is still a value of this kind
        values.values.extend(value)
    elif kind == "tensor":
        writer.encode(value, out.tensor)
    elif kind == "shape":
        _encode_shape(value, out.shape)
    else:
        out.dtype = _ENUM_OF_DTYPE[value.name]


def _encode_shape(shape: tuple, out: pb.ShapeProto) -> None:
    out.SetInParent()  # a scalar's empty shape is still written
    for dim in shape:
        entry = out.dims.add()
        if isinstance(dim, str):
            entry.symbol = dim
        elif dim is not None:
            entry.size = dim


def _encode_gradient(graph: Graph, names: tuple[str, ...], position: dict[str, int],
                     writer: _TensorWriter, out: pb.GradientGraphProto) -> None:
    info: GradientInfo = graph.gradient
    out.loss = info.loss
    out.seed = info.seed
    for wrt, grad in info.grads.items():
        out.grads.add(wrt=wrt, grad=grad)
    for name in names:
        _encode_node(graph.node(name), position[name], writer, out.nodes.add())
    out.zero.extend(info.zero)


# =============================================================================
# ModelProto -> Graph
# =============================================================================

class _Reader:
    """Turns a parsed ModelProto into a validated Graph; errors name the file and field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = _DataFiles(path)

    @property
    def data_files(self) -> list[str]:
        return self.data.used

    def error(self, where: str, message: str) -> FileFormatError:
        return FileFormatError(f"'{self.path}': {where}: {message}")

    def graph(self, model: pb.ModelProto) -> Graph:
        try:
            records, values = self._records(model)
            graph = build_graph(model.graph.name, records, values)
            self._restore_outputs(graph, model.graph)
            if model.HasField("gradient"):
                graph.gradient = self._gradient(graph, model.gradient)
            if model.HasField("training"):
                graph.training = TrainingSpec.from_proto(model.training)
                graph.training.check_graph(graph)
        except FileFormatError:
            raise  # already names the file
        except GraphEngineError as exc:
            # Same type, with the file named, so the CLI's one line says where.
            raise type(exc)(f"'{self.path}': {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as exc:
            # An op's inference rule tripped over values no builder would pass.
            raise GraphError(f"'{self.path}': the graph failed validation: "
                             f"{type(exc).__name__}: {exc}") from exc
        graph.metadata = dict(sorted(model.metadata.items()))
        graph._unknown_fields = _extract_preserved_bytes(model)
        return graph

    # -- node records -----------------------------------------------------------
    def _records(self, model: pb.ModelProto) -> tuple[list[NodeRecord], dict[str, np.ndarray]]:
        """Node records in build order (by position, ties in file order) and parameter
        values.  Nothing is validated here beyond what decoding needs."""
        gp = model.graph
        ranked: list[tuple[int, NodeRecord]] = []
        values: dict[str, np.ndarray] = {}
        for i, info in enumerate(gp.placeholders):
            where = f"graph.placeholders[{i}] ({info.name!r})"
            attrs = {"dtype": self.dtype(info.dtype, where),
                     "shape": self.shape(info.shape, where)}
            _check_optional_name(info.scope, f"scope of {where}")
            ranked.append((info.position, NodeRecord(info.name, "placeholder", [], attrs,
                                                     info.scope)))
        for i, param in enumerate(gp.parameters):
            where = f"graph.parameters[{i}] ({param.name!r})"
            if not param.HasField("value"):
                raise self.error(where, "has no value")
            value = self.tensor(param.value, f"{where}.value")
            values[param.name] = value
            attrs = {"dtype": value.dtype, "shape": value.shape, "trainable": param.trainable}
            _check_optional_name(param.scope, f"scope of {where}")
            ranked.append((param.position, NodeRecord(param.name, "parameter", [], attrs,
                                                      param.scope)))
        for section, nodes in (("graph.nodes", gp.nodes), ("gradient.nodes",
                                                           model.gradient.nodes)):
            for i, node in enumerate(nodes):
                record = self.node(node, f"{section}[{i}] ({node.name!r})")
                ranked.append((node.position, record))
        ranked.sort(key=lambda item: item[0])  # stable: ties keep file order
        return [record for _, record in ranked], values

    def node(self, node: pb.NodeProto, where: str) -> NodeRecord:
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            if attr.name in attrs:
                raise GraphError(f"{where}: attribute {attr.name!r} is given twice")
            attrs[attr.name] = self.attr(attr.value, f"{where} attribute {attr.name!r}")
        _check_optional_name(node.scope, f"scope of {where}")
        _check_optional_name(node.derived_from, f"derived_from of {where}")
        return NodeRecord(node.name, node.op_type, list(node.input), attrs, node.scope,
                          node.derived_from)

    # -- values -----------------------------------------------------------------
    def attr(self, value: pb.AttrValue, where: str) -> Any:
        kind = value.WhichOneof("value")
        if kind is None:
            raise self.error(where, "has no value of a kind this graphengine knows (a newer "
                                    "format may have added one; upgrade graphengine)")
        if kind in ("ints", "floats", "strs", "bools"):
            return tuple(getattr(value, kind).values)
        if kind == "tensor":
            return self.tensor(value.tensor, where)
        if kind == "shape":
            return self.shape(value.shape, where)
        if kind == "dtype":
            return self.dtype(value.dtype, where)
        return getattr(value, kind)

    def dtype(self, enum: int, where: str) -> np.dtype:
        dtype = _DTYPE_OF_ENUM.get(enum)
        if dtype is None:
            known = ", ".join(f"{v} ({d.name})" for v, d in _DTYPE_OF_ENUM.items())
            what = "no dtype" if enum == 0 else f"unknown dtype enum value {enum}"
            raise self.error(where, f"has {what}; known values are {known}")
        return dtype

    def shape(self, shape: pb.ShapeProto, where: str) -> tuple:
        dims: list[Any] = []
        for axis, dim in enumerate(shape.dims):
            kind = dim.WhichOneof("value")
            if kind == "size":
                if dim.size < 0:
                    raise self.error(where, f"axis {axis} has size {dim.size}; sizes are >= 0")
                dims.append(dim.size)
            elif kind == "symbol":
                dims.append(check_name(dim.symbol, f"dimension name on axis {axis} of {where}"))
            else:
                dims.append(None)
        return tuple(dims)

    def tensor(self, proto: pb.TensorProto, where: str) -> np.ndarray:
        """Decode a tensor, checking its declared size against the bytes present
        before allocating anything."""
        dtype = self.dtype(proto.dtype, where)
        dims = list(proto.dims)
        if len(dims) > MAX_RANK:
            raise self.error(where, f"has rank {len(dims)}; at most {MAX_RANK} is supported")
        if any(d < 0 for d in dims):
            raise self.error(where, f"has negative dims {dims}")
        count = math.prod(dims)  # exact Python int: absurd dims cannot overflow
        nbytes = count * dtype.itemsize
        if proto.HasField("external"):
            if proto.raw_data:
                raise self.error(where, "has both raw_data and external data; keep one")
            buffer: bytes | bytearray = self.data.read(proto.external, nbytes, where)
        else:
            buffer = proto.raw_data
            if len(buffer) != nbytes:
                raise self.error(where, f"raw_data has {len(buffer)} bytes, but dims {dims} "
                                        f"of {dtype.name} need {nbytes}")
        array = np.frombuffer(buffer, dtype=dtype.newbyteorder("<"), count=count)
        # A bytearray from a data file can be adopted as is; protobuf's bytes are
        # read-only, and parameter values must be writable, so those are copied.
        return array.reshape(dims).astype(dtype, copy=not isinstance(buffer, bytearray))

    # -- after validation -------------------------------------------------------
    def _restore_outputs(self, graph: Graph, gp: pb.GraphProto) -> None:
        for i, ref in enumerate(gp.outputs):
            _require_tensor(graph, ref, f"graph.outputs[{i}]")
        graph._outputs = list(gp.outputs)

    def _gradient(self, graph: Graph, grad: pb.GradientGraphProto) -> GradientInfo:
        _require_tensor(graph, grad.loss, "gradient.loss")
        if grad.seed and (grad.seed not in graph or graph.node(grad.seed).op != "placeholder"):
            raise GraphError(f"gradient.seed names {grad.seed!r}, which is not a placeholder")
        grads: dict[str, str] = {}
        for i, entry in enumerate(grad.grads):
            _require_tensor(graph, entry.wrt, f"gradient.grads[{i}].wrt")
            _require_tensor(graph, entry.grad, f"gradient.grads[{i}].grad")
            if entry.wrt in grads:
                raise GraphError(f"gradient.grads[{i}]: wrt {entry.wrt!r} is listed twice")
            grads[entry.wrt] = entry.grad
        for i, ref in enumerate(grad.zero):
            _require_tensor(graph, ref, f"gradient.zero[{i}]")
        return GradientInfo(loss=grad.loss, grads=grads,
                            nodes=tuple(node.name for node in grad.nodes), seed=grad.seed,
                            zero=tuple(grad.zero))


def _check_optional_name(name: str, what: str) -> None:
    """Scopes and derived_from are "" or a well-formed name (GraphError otherwise)."""
    if name:
        check_name(name, what)


def _require_tensor(graph: Graph, ref: str, field: str) -> None:
    node, index = parse_ref(ref) if ref else ("", 0)
    if node not in graph or index >= len(graph.node(node).types):
        raise GraphError(f"{field} names {ref!r}, which is not a tensor of the graph")


# =============================================================================
# Keeping what this version does not understand
# =============================================================================
#
# A file from a newer minor version may hold fields this version does not know,
# anywhere in the message tree.  On load we keep a *skeleton* ModelProto: for
# every message with unknown fields (or a `doc`, which the in-memory graph does
# not hold), the skeleton has a message at the same place holding those fields
# plus the key that finds it again (`name`, or `wrt` for gradient entries;
# repeated messages without a key are matched by index).  It is stored,
# serialized, in Graph._unknown_fields.  On save the skeleton is grafted onto
# the fresh ModelProto, so the fields come back where they were, for the nodes
# that still exist.

def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; `label` before
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED


def _message_fields(descriptor: Any) -> list:
    """Fields holding messages, map fields excepted (they hold only strings here)."""
    return [f for f in descriptor.fields if f.message_type is not None
            and not f.message_type.GetOptions().map_entry]


def _key_field(descriptor: Any) -> str | None:
    for key in ("name", "wrt"):
        if key in descriptor.fields_by_name:
            return key
    return None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_unknown(field: Any) -> bytes:
    """One unknown field back in wire format (protobuf exposes them only decoded)."""
    number, wire = field.field_number, field.wire_type
    tag = _varint(number << 3 | wire)
    if wire == 0:
        return tag + _varint(field.data)
    if wire == 1:
        return tag + field.data.to_bytes(8, "little")
    if wire == 2:
        return tag + _varint(len(field.data)) + bytes(field.data)
    if wire == 5:
        return tag + field.data.to_bytes(4, "little")
    # wire == 3: a group, closed by an end-group tag.
    return tag + b"".join(_encode_unknown(f) for f in field.data) + _varint(number << 3 | 4)


def _unknown_bytes(msg: _message.Message) -> bytes:
    return b"".join(_encode_unknown(field) for field in UnknownFieldSet(msg))


def _skeleton(msg: _message.Message) -> _message.Message | None:
    """The skeleton of ``msg`` (see above), or None when nothing in it needs keeping."""
    skeleton = type(msg)()
    keep = False
    unknown = _unknown_bytes(msg)
    if unknown:
        skeleton.MergeFromString(unknown)
        keep = True
    if "doc" in msg.DESCRIPTOR.fields_by_name and msg.doc:
        skeleton.doc = msg.doc
        keep = True
    for field in _message_fields(msg.DESCRIPTOR):
        if _is_repeated(field):
            items = getattr(msg, field.name)
            subs = [_skeleton(item) for item in items]
            if not any(sub is not None for sub in subs):
                continue
            keyed = _key_field(field.message_type) is not None
            target = getattr(skeleton, field.name)
            for item, sub in zip(items, subs):
                if sub is not None:
                    target.add().CopyFrom(sub)
                elif not keyed:  # an empty placeholder keeps the indices aligned
                    target.add()
            keep = True
        elif msg.HasField(field.name):
            sub = _skeleton(getattr(msg, field.name))
            if sub is not None:
                getattr(skeleton, field.name).CopyFrom(sub)
                keep = True
    if keep:
        key = _key_field(msg.DESCRIPTOR)
        if key is not None:
            setattr(skeleton, key, getattr(msg, key))
    return skeleton if keep else None


def _extract_preserved_bytes(model: pb.ModelProto) -> bytes:
    skeleton = _skeleton(model)
    return b"" if skeleton is None else skeleton.SerializeToString(deterministic=True)


def _graft(target: _message.Message, skeleton: _message.Message) -> None:
    """Put the skeleton's unknown fields and docs back onto the matching messages."""
    unknown = _unknown_bytes(skeleton)
    if unknown:
        target.MergeFromString(unknown)
    if "doc" in skeleton.DESCRIPTOR.fields_by_name and skeleton.doc and not target.doc:
        target.doc = skeleton.doc
    for field in _message_fields(skeleton.DESCRIPTOR):
        if _is_repeated(field):
            items = getattr(skeleton, field.name)
            targets = getattr(target, field.name)
            key = _key_field(field.message_type)
            if key is None:
                pairs = list(zip(targets, items))
            else:
                by_key = {getattr(t, key): t for t in targets}
                pairs = [(by_key[getattr(i, key)], i) for i in items
                         if getattr(i, key) in by_key]
            for sub_target, sub_skeleton in pairs:
                _graft(sub_target, sub_skeleton)
        elif skeleton.HasField(field.name) and target.HasField(field.name):
            _graft(getattr(target, field.name), getattr(skeleton, field.name))


def _restore_preserved(model: pb.ModelProto, preserved: bytes, fmt: str) -> None:
    skeleton = pb.ModelProto.FromString(preserved)
    _graft(model, skeleton)
    if fmt == "text" and _has_unknown(model):
        warnings.warn("the graph holds fields from a newer format version, which the text "
                      "format cannot store; save it as binary (.pb) to keep them",
                      stacklevel=3)


def _has_unknown(msg: _message.Message) -> bool:
    if len(UnknownFieldSet(msg)):
        return True
    for field in _message_fields(msg.DESCRIPTOR):
        if _is_repeated(field):
            if any(_has_unknown(item) for item in getattr(msg, field.name)):
                return True
        elif msg.HasField(field.name) and _has_unknown(getattr(msg, field.name)):
            return True
    return False
