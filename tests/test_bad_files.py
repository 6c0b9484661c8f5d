"""Files that must be refused: each with one of our exception types, a message
naming the problem, quickly and in bounded memory; never a protobuf or numpy
error.  FileFormatError covers the file and its tensors, GraphError and
ShapeError the structure found by the validation pass."""

import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphengine as ge
from graphengine import serialize
from graphengine.proto import graphengine_pb2 as pb


def _valid() -> pb.ModelProto:
    """A small valid model: x (N,2) -> w * x -> tanh, with a marked output."""
    g = ge.Graph("valid")
    x = g.placeholder("x", (None, 2))
    w = g.parameter("w", np.array([1.0, 2.0], np.float32))
    y = ge.leaky_relu(ge.tanh(x * w), alpha=0.1)
    g.mark_output(y)
    # graph.nodes: [multiply, tanh, leaky_relu]
    model = pb.ModelProto.FromString(_save_bytes(g))
    model.ClearField("content_crc32")  # the cases edit it: the file's checksum would not hold
    return model


def _save_bytes(graph: ge.Graph, name: str = "m.pb") -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        ge.save(graph, path)
        return path.read_bytes()


def _edit(change):
    """A case that edits the valid model's message."""

    def make(folder: Path) -> bytes:
        model = _valid()
        change(model)
        return model.SerializeToString()

    return make


def _bytes(data: bytes):
    return lambda folder: data


def _node(model, name):
    return next(n for n in model.graph.nodes if n.name == name)


def _set_attr(model, node, name, **value):
    attr = next(a for a in _node(model, node).attribute if a.name == name)
    attr.value.Clear()
    for key, v in value.items():
        setattr(attr.value, key, v)


def _param(model) -> pb.TensorProto:
    return model.graph.parameters[0].value


def _set(message, **fields):
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(message, key)[:]
            getattr(message, key).extend(value)
        else:
            setattr(message, key, value)


def _external(location="m.pb.data", offset=0, length=8, sha256="", data=b"\0" * 8):
    """A case whose parameter lives in a data file written beside the model."""

    def make(folder: Path) -> bytes:
        (folder / "m.pb.data").write_bytes(data)
        model = _valid()
        tensor = _param(model)
        tensor.raw_data = b""
        tensor.external.location, tensor.external.offset = location, offset
        tensor.external.length, tensor.external.sha256 = length, sha256
        return model.SerializeToString()

    return make


def _escaping_symlink(folder: Path) -> bytes:
    outside = folder.parent / f"{folder.name}-outside.data"
    outside.write_bytes(b"\0" * 8)
    (folder / "link.data").symlink_to(outside)
    return _external(location="link.data")(folder)


def _cycle(model):
    _node(model, "multiply").input[0] = "leaky_relu"


def _file_descriptor(folder):
    return descriptor_pb2.FileDescriptorProto.FromString(
        pb.DESCRIPTOR.serialized_pb
    ).SerializeToString()


def _another_message(folder):
    return pb.TensorProto(dtype=pb.DT_FLOAT32, dims=[2], raw_data=b"\0" * 8).SerializeToString()


def _bad_utf8(folder):
    data = _valid().SerializeToString()
    return data.replace(b"leaky_relu", b"leaky\xffrelu", 1)


CASES = [
    # id, make(folder) -> bytes, error, message fragment
    ("empty file", _bytes(b""), ge.FileFormatError, "no format version"),
    (
        "random bytes",
        _bytes(np.random.default_rng(0).bytes(300)),
        ge.FileFormatError,
        "not a binary graphengine model",
    ),
    (
        "truncated",
        lambda f: _valid().SerializeToString()[:-7],
        ge.FileFormatError,
        "truncated or corrupt",
    ),
    (
        "file descriptor",
        _file_descriptor,
        ge.FileFormatError,
        "is not a (binary )?graphengine model",
    ),
    (
        "small file descriptor",
        _bytes(descriptor_pb2.FileDescriptorProto(name="x.proto", package="p").SerializeToString()),
        ge.FileFormatError,
        "no format version",
    ),
    ("a tensor message", _another_message, ge.FileFormatError, "no opset_version"),
    ("invalid utf-8", _bad_utf8, ge.FileFormatError, "cannot decode"),
    ("no graph", _edit(lambda m: m.ClearField("graph")), ge.FileFormatError, "no graph"),
    (
        "newer major",
        _edit(lambda m: _set(m, format_version_major=2)),
        ge.FileFormatError,
        "upgrade graphengine",
    ),
    ("newer opset", _edit(lambda m: _set(m, opset_version=9)), ge.FileFormatError, "opset 9"),
    (
        "raw data too short",
        _edit(lambda m: _set(_param(m), raw_data=b"\0" * 7)),
        ge.FileFormatError,
        r"raw_data has 7 bytes, but dims \[2\] of float32 need 8",
    ),
    (
        "absurd dims",
        _edit(lambda m: _set(_param(m), dims=[10**15])),
        ge.FileFormatError,
        "need 4000000000000000",
    ),
    (
        "negative dims",
        _edit(lambda m: _set(_param(m), dims=[-2])),
        ge.FileFormatError,
        "negative dims",
    ),
    ("huge rank", _edit(lambda m: _set(_param(m), dims=[1] * 65)), ge.FileFormatError, "rank 65"),
    (
        "unknown dtype",
        _edit(lambda m: _set(_param(m), dtype=42)),
        ge.FileFormatError,
        "unknown dtype enum value 42",
    ),
    (
        "placeholder without dtype",
        _edit(lambda m: _set(m.graph.placeholders[0], dtype=0)),
        ge.FileFormatError,
        "has no dtype",
    ),
    (
        "negative placeholder dim",
        _edit(lambda m: _set(m.graph.placeholders[0].shape.dims[1], size=-1)),
        ge.FileFormatError,
        "axis 1 has size -1",
    ),
    (
        "parameter without value",
        _edit(lambda m: m.graph.parameters[0].ClearField("value")),
        ge.FileFormatError,
        "has no value",
    ),
    (
        "NUL in a name",
        _edit(lambda m: _set(_node(m, "tanh"), name="ta\0nh")),
        ge.GraphError,
        "invalid node name",
    ),
    (
        "control character in a name",
        _edit(lambda m: _set(m.graph.placeholders[0], name="x\n")),
        ge.GraphError,
        "invalid node name",
    ),
    (
        "bad graph name",
        _edit(lambda m: _set(m.graph, name="")),
        ge.GraphError,
        "invalid graph name",
    ),
    (
        "bad scope",
        _edit(lambda m: _set(_node(m, "tanh"), scope="a//b")),
        ge.GraphError,
        "invalid scope of graph.nodes",
    ),
    (
        "bad placeholder scope",
        _edit(lambda m: _set(m.graph.placeholders[0], scope="/")),
        ge.GraphError,
        "invalid scope of graph.placeholders",
    ),
    (
        "bad derived_from",
        _edit(lambda m: _set(_node(m, "tanh"), derived_from="a\tb")),
        ge.GraphError,
        "invalid derived_from",
    ),
    ("cycle", _edit(_cycle), ge.GraphError, "cycle"),
    (
        "unknown op",
        _edit(lambda m: _set(_node(m, "tanh"), op_type="frobnicate")),
        ge.GraphError,
        "unknown op 'frobnicate'",
    ),
    (
        "dangling input",
        _edit(lambda m: _set(_node(m, "tanh"), input=["nowhere"])),
        ge.GraphError,
        "no node produces",
    ),
    (
        "output index out of range",
        _edit(lambda m: _set(_node(m, "tanh"), input=["multiply:3"])),
        ge.GraphError,
        "has only 1 output",
    ),
    (
        "duplicate name",
        _edit(lambda m: _set(_node(m, "tanh"), name="multiply")),
        ge.GraphError,
        "duplicate node name 'multiply'",
    ),
    (
        "attribute of the wrong kind",
        _edit(lambda m: _set_attr(m, "leaky_relu", "alpha", s="big")),
        ge.GraphError,
        "'alpha' must be of kind float",
    ),
    (
        "attribute without a value",
        _edit(lambda m: _set_attr(m, "leaky_relu", "alpha")),
        ge.FileFormatError,
        "has no value of a kind",
    ),
    (
        "duplicate attribute",
        _edit(
            lambda m: (
                _node(m, "leaky_relu")
                .attribute.add(name="alpha")
                .value.MergeFrom(pb.AttrValue(f=1.0))
            )
        ),
        ge.GraphError,
        "given twice",
    ),
    (
        "unknown attribute",
        _edit(
            lambda m: _node(m, "tanh").attribute.add(name="beta").value.MergeFrom(pb.AttrValue(i=1))
        ),
        ge.GraphError,
        "no attribute 'beta'",
    ),
    (
        "wrong number of inputs",
        _edit(lambda m: _node(m, "tanh").input.append("x")),
        ge.GraphError,
        "has 2 inputs",
    ),
    (
        "shapes do not fit",
        _edit(lambda m: _set(m.graph.placeholders[0].shape.dims[1], size=5)),
        ge.ShapeError,
        "do not broadcast",
    ),
    (
        "output names no tensor",
        _edit(lambda m: _set(m.graph, outputs=["ghost"])),
        ge.GraphError,
        r"graph.outputs\[0\] names 'ghost'",
    ),
    (
        "gradient loss names no tensor",
        _edit(lambda m: _set(m.gradient, loss="ghost")),
        ge.GraphError,
        "gradient.loss names 'ghost'",
    ),
    (
        "training spec out of range",
        _edit(
            lambda m: m.training.MergeFrom(
                pb.TrainingSpecProto(loss="tanh", optimizer=pb.OptimizerProto(learning_rate=0.0))
            )
        ),
        ge.GraphError,
        "optimizer.learning_rate must be in",
    ),
    (
        "raw and external data",
        _edit(
            lambda m: _param(m).external.MergeFrom(pb.ExternalData(location="m.pb.data", length=8))
        ),
        ge.FileFormatError,
        "both raw_data and external data",
    ),
    (
        "external: absolute path",
        _external(location="/etc/passwd"),
        ge.FileFormatError,
        "is absolute",
    ),
    (
        "external: parent folder",
        _external(location="../m.pb.data"),
        ge.FileFormatError,
        "contains '..'",
    ),
    (
        "external: backslashes",
        _external(location="..\\m.pb.data"),
        ge.FileFormatError,
        "'/' separators",
    ),
    (
        "external: symlink escaping the folder",
        _escaping_symlink,
        ge.FileFormatError,
        "outside the model's folder",
    ),
    ("external: missing file", _external(location="absent.data"), ge.FileFormatError, "is missing"),
    ("external: past the end", _external(offset=4), ge.FileFormatError, "past the end"),
    (
        "external: wrong length",
        _external(length=12),
        ge.FileFormatError,
        "length is 12 bytes, but its dims and dtype need 8",
    ),
    (
        "external: another save's bytes",
        _external(sha256="0" * 64),
        ge.FileFormatError,
        "do not match the recorded sha256",
    ),
    ("external: a folder", _external(location="."), ge.FileFormatError, "not a regular file"),
]


@pytest.mark.parametrize("make, error, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file_is_refused(tmp_path, make, error, fragment):
    path = tmp_path / "m.pb"
    path.write_bytes(make(tmp_path))
    with pytest.raises(error, match=fragment) as info:
        ge.load(path)
    assert str(path) in str(info.value) or error is not ge.FileFormatError


def test_the_valid_file_of_the_table_loads(tmp_path):
    path = tmp_path / "m.pb"
    path.write_bytes(_valid().SerializeToString())
    ge.load(path)


def test_absurd_dims_are_refused_fast_without_allocating(tmp_path):
    model = _valid()
    _set(_param(model), dims=[10**6, 10**6, 10**6], dtype=pb.DT_FLOAT64)
    path = tmp_path / "m.pb"
    path.write_bytes(model.SerializeToString())
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ge.FileFormatError, match="need 8000000000000000000"):
        ge.load(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 10 * 2**20


@pytest.mark.parametrize(
    "problem, fragment",
    [
        ("missing", "does not exist|No such file"),
        ("folder", "not a regular file|Is a directory"),
        ("too large", "at most 2 GiB"),
    ],
)
def test_unreadable_paths_are_refused(tmp_path, monkeypatch, problem, fragment):
    path = tmp_path / "m.pb"
    if problem == "folder":
        path.mkdir()
    elif problem == "too large":
        path.write_bytes(_valid().SerializeToString())
        monkeypatch.setattr(serialize.files, "MAX_FILE_BYTES", 16)
    with pytest.raises(ge.FileFormatError, match=fragment):
        ge.load(path)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("format_version_major: 1\ngraph { name: 'g' \n", "line 2, column 15: Expected"),
        (
            "format_version_major: 1\nopset_version: 1\ngraph { nam: 'g' }\n",
            'line 3, column 9.*no field named "nam"',
        ),
        ("format_version_major: 'one'\n", "line 1"),
        ("\xff", "not UTF-8"),
    ],
    ids=["unclosed brace", "misspelt field", "string for an int", "not utf-8"],
)
def test_text_parse_errors_give_the_line(tmp_path, text, fragment):
    path = tmp_path / "m.pbtxt"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ge.FileFormatError, match=fragment):
        ge.load(path)


# -- property: corrupted files load or fail with our errors ------------------------------


def _rich_graph() -> ge.Graph:
    """Every section: constants, attributes, a gradient section, a training spec."""
    from graphengine.training_spec import TrainingSpec

    g = ge.Graph("rich")
    x = g.placeholder("x", (None, 2))
    with g.name_scope("s"):
        w = g.parameter("w", np.array([1.0, 2.0], np.float32))
        y = ge.clip(ge.leaky_relu(ge.tanh(x * w + 0.5), alpha=0.1), a_min=-1.0)
    loss = ge.sum(y)
    g.metadata["k"] = "v"
    g = ge.gradients(g, loss, wrt=["s/w"])
    g.training = TrainingSpec(loss=loss.name)
    return g


_RICH = _rich_graph()
_VALID_BYTES = {"binary": _save_bytes(_RICH), "text": _save_bytes(_RICH, "m.pbtxt")}


@st.composite
def mutations(draw, fmt):
    data = bytearray(_VALID_BYTES[fmt])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
@pytest.mark.parametrize("fmt, name", [("binary", "m.pb"), ("text", "m.pbtxt")])
def test_mutated_files_load_or_raise_our_errors(tmp_path, fmt, name, data):
    path = tmp_path / name
    path.write_bytes(data.draw(mutations(fmt)))
    try:
        ge.load(path)
    except ge.GraphEngineError:
        pass


def test_the_unmutated_fuzz_seeds_load(tmp_path):
    for fmt, name in (("binary", "m.pb"), ("text", "m.pbtxt")):
        (tmp_path / name).write_bytes(_VALID_BYTES[fmt])
        assert ge.load(tmp_path / name).gradient == _RICH.gradient


# -- seeded flips: inline tensors are checksummed (format 1.1) ------------------------------


def _tensor_graph() -> ge.Graph:
    """Inline tensors of several kinds: parameters, a constant, a gradient section."""
    g = ge.Graph("tensors")
    x = g.placeholder("x", (None, 4))
    rng = np.random.default_rng(0)
    with g.name_scope("s"):
        w = g.parameter("w", rng.standard_normal((4, 4)).astype(np.float32))
        b = g.parameter("b", rng.standard_normal(4).astype(np.float32))
        c = g.constant(rng.standard_normal(4).astype(np.float32), name="c")
        y = ge.clip(ge.leaky_relu(ge.tanh(ge.matmul(x, w) + b * c), alpha=0.1), a_min=-1.0)
    return ge.gradients(g, ge.sum(y), wrt=["s/w"])


def _tensor_spans(graph: ge.Graph, data: bytes) -> dict[str, tuple[int, int]]:
    """Where each inline tensor's bytes lie in the saved file ``data``."""
    values = dict(graph.values)
    values["s/c"] = graph.node("s/c").attrs["value"]
    spans = {}
    for name, value in values.items():
        raw = np.asarray(value).tobytes()
        start = data.index(raw)
        assert data.find(raw, start + 1) == -1, f"the bytes of {name!r} are not unique"
        spans[name] = (start, start + len(raw))
    return spans


def test_every_bit_flipped_in_inline_tensor_bytes_is_caught_naming_the_tensor(tmp_path):
    graph = _tensor_graph()
    data = _save_bytes(graph)
    path = tmp_path / "m.pb"
    cases = caught = 0
    for name, (start, stop) in _tensor_spans(graph, data).items():
        for at in range(start, stop):
            for bit in range(8):
                damaged = bytearray(data)
                damaged[at] ^= 1 << bit
                path.write_bytes(bytes(damaged))
                cases += 1
                with pytest.raises(ge.FileFormatError, match=rf"\({name!r}\).*recorded crc32"):
                    ge.load(path)
                caught += 1
    assert cases == caught == (64 + 16 + 16) * 8  # w (4, 4), b (4,), c (4,): float32


def _fuzz_counts(fmt: str, seed: int, flips: int, truncations: int) -> dict[str, int]:
    """Load seeded single-bit flips and truncations of a saved model; count the
    outcomes: our errors, loads equal to the original (re-saved to the same
    bytes), loads that differ (silent damage), and anything else (foreign)."""
    import random

    graph = _tensor_graph()
    name = "m.pb" if fmt == "binary" else "m.pbtxt"
    original = _save_bytes(graph, name)
    spans = list(_tensor_spans(graph, original).values()) if fmt == "binary" else []
    rng = random.Random(seed)
    counts = dict.fromkeys(["cases", "ours", "same", "different", "tensor flips caught"], 0)
    counts["foreign"] = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        for case in range(flips + truncations):
            data = bytearray(original)
            if case < flips:
                at = rng.randrange(len(data))
                data[at] ^= 1 << rng.randrange(8)
            else:
                at = rng.randrange(len(data))
                del data[at:]
            path.write_bytes(bytes(data))
            counts["cases"] += 1
            try:
                loaded = ge.load(path)
            except ge.GraphEngineError:
                counts["ours"] += 1
                if case < flips and any(start <= at < stop for start, stop in spans):
                    counts["tensor flips caught"] += 1
                continue
            except Exception:  # noqa: BLE001 - counted: the test requires none
                counts["foreign"] += 1
                continue
            loaded.record.unknown_fields = b""  # a flipped tag may turn a field unknown
            same = _save_bytes(loaded, name) == original
            counts["same" if same else "different"] += 1
    return counts


def test_seeded_flips_and_truncations_of_a_binary_model_are_all_caught():
    """The file's checksum (format 1.1) leaves no damage unnoticed: every flip and
    every cut gives our error, or a file whose content is intact (a flip in the
    checksum's tag byte turns it into an unknown field, and the model is whole)."""
    counts = _fuzz_counts("binary", seed=11, flips=400, truncations=100)
    assert counts["cases"] == 500
    assert counts["foreign"] == 0 and counts["different"] == 0, counts
    assert counts["ours"] + counts["same"] == 500 and counts["same"] <= 5, counts
    assert counts["tensor flips caught"] > 0


def test_seeded_flips_of_a_text_model_give_our_errors_and_catch_tensor_bytes():
    """Text files carry the tensors' checksums but no file checksum (they are meant
    to be edited), so a flip in a name or number can load as a different graph;
    it never gives a foreign exception."""
    counts = _fuzz_counts("text", seed=11, flips=300, truncations=60)
    assert counts["foreign"] == 0, counts
    assert counts["ours"] > counts["different"], counts
