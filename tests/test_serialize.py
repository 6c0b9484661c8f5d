"""Saving and loading: exact round trips, determinism, external data, atomic
writes, versions and fields from newer versions.  Bad files: test_bad_files.py."""

import contextlib
import errno
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphengine as ge
from graphengine import serialize
from graphengine.dtypes import DTYPE_NAMES, as_dtype
from graphengine.proto import graphengine_pb2 as pb
from graphengine.training_spec import OptimizerSpec, ScheduleSpec, TrainingSpec

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ------------------------------------------------------------------------


def same_array(a, b) -> bool:
    """Same dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_graph(a: ge.Graph, b: ge.Graph) -> None:
    """Everything a file stores is equal, tensors bitwise."""
    assert a.name == b.name
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        where = f"node {x.name!r}"
        assert (x.op, x.inputs, x.scope, x.derived_from, x.types) == (
            y.op,
            y.inputs,
            y.scope,
            y.derived_from,
            y.types,
        ), where
        assert list(x.attrs) == list(y.attrs), where
        for key, value in x.attrs.items():
            if isinstance(value, np.ndarray):
                assert same_array(value, y.attrs[key]), f"{where} attribute {key!r}"
            else:
                assert value == y.attrs[key] and type(value) is type(y.attrs[key]), where
    assert a.values.keys() == b.values.keys()
    for name in a.values:
        assert same_array(a.values[name], b.values[name]), f"value of {name!r}"
    assert a.marked_outputs == b.marked_outputs
    assert a.metadata == b.metadata
    assert a.gradient == b.gradient
    assert a.training == b.training


def round_trip(graph: ge.Graph, path: Path, **options) -> ge.Graph:
    ge.save(graph, path, **options)
    return ge.load(path)


# -- exact round trips ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.pb", "model.pbtxt"])
def test_round_trip_keeps_every_section(model_graph, tmp_path, name):
    loaded = round_trip(model_graph, tmp_path / name)
    assert_same_graph(model_graph, loaded)
    assert loaded.gradient is not None and loaded.training is not None
    assert any(n.derived_from for n in loaded.nodes)


def test_round_trip_by_explicit_format(model_graph, tmp_path):
    path = tmp_path / "model.data-file"
    ge.save(model_graph, path, format="text")
    assert path.read_text().startswith("format_version_major: 1")
    with pytest.raises(ge.FileFormatError, match="format='text'"):
        ge.load(path)  # the name says binary
    assert_same_graph(model_graph, ge.load(path, format="text"))


def test_loaded_graph_runs_like_the_original(model_graph, model_file):
    loaded = ge.load(model_file)
    feeds = {"x": np.linspace(-2, 2, 12, dtype=np.float32).reshape(4, 3)}
    fetches = list(model_graph.outputs)
    expected = ge.run(model_graph, fetches, feeds)
    got = ge.run(loaded, fetches, feeds)
    assert all(same_array(expected[k], got[k]) for k in fetches)


def _special_values(dtype: np.dtype) -> np.ndarray:
    """Values whose bits a careless encoder would lose: NaN payloads, signed
    zeros, infinities, extremes."""
    if dtype.name == "bfloat16":  # ml_dtypes: kind "V", but a float with float bits
        return _special_values(np.dtype(np.float32)).view(np.uint16)[1::2].view(dtype)
    if dtype.kind == "f":
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
        info = np.finfo(dtype)
        inf_bits = int(np.array(np.inf, dtype).view(bits))
        nans = np.array(
            [
                np.iinfo(bits).max,  # all ones: a negative quiet NaN with a payload
                inf_bits | 1,
            ],  # a signalling NaN
            bits,
        ).view(dtype)
        plain = np.array([0.0, -0.0, np.inf, -np.inf, info.max, info.tiny, 1 / 3], dtype)
        return np.concatenate([plain, nans])
    if dtype.kind == "b":
        return np.array([True, False, True])
    info = np.iinfo(dtype)
    return np.array([info.min, -1 if info.min else 0, 0, 1, info.max], dtype)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (2, 3)])
def test_every_dtype_and_shape_is_bitwise_identical(tmp_path, dtype, shape):
    if dtype == "bfloat16":  # numpy has no bfloat16: it comes from ml_dtypes (the [onnx] extra)
        pytest.importorskip("ml_dtypes")
    dtype = as_dtype(dtype)
    values = _special_values(dtype)
    size = int(np.prod(shape))
    data = np.resize(values, size).reshape(shape)
    g = ge.Graph("tensors")
    g.parameter("p", data)
    g.constant(data, name="c")
    for name in ("t.pb", "t.pbtxt"):
        loaded = round_trip(g, tmp_path / name)
        assert same_array(loaded.values["p"], data)
        assert same_array(loaded.node("c").attrs["value"], data)


def test_non_contiguous_values_are_stored_in_c_order(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    g = ge.Graph("views")
    g.parameter("transposed", base)
    g.values["transposed"] = base.T.copy().T  # same shape and values, Fortran order
    g.parameter("strided", base[:, ::2].copy())
    g.values["strided"] = base[:, ::2]
    loaded = round_trip(g, tmp_path / "v.pb")
    for name in ("transposed", "strided"):
        assert same_array(loaded.values[name], np.ascontiguousarray(g.values[name]))
        assert loaded.values[name].flags.c_contiguous and loaded.values[name].flags.writeable


def test_node_order_survives_when_sources_are_interleaved(tmp_path):
    g = ge.Graph("order")
    a = g.placeholder("a", (2,))
    e = ge.exp(a)
    late = g.placeholder("late", (2,))  # a placeholder declared after a node
    w = g.parameter("w", np.ones(2, np.float32))
    ge.add(ge.multiply(e, late), w)
    loaded = round_trip(g, tmp_path / "o.pb")
    assert [n.name for n in loaded.nodes] == [n.name for n in g.nodes]


def test_empty_lists_none_attrs_and_unknown_dims_round_trip(tmp_path):
    g = ge.Graph("attrs")
    x = g.apply("placeholder", [], {"dtype": "int16", "shape": (None, "T", 0)}, name="x")
    g.placeholder("s", ())
    ge.clip(g.placeholder("f", (2,)), a_max=1.5)  # a_min stays None
    loaded = round_trip(g, tmp_path / "a.pbtxt")
    assert_same_graph(g, loaded)
    assert loaded.node(x.node).attrs["shape"] == (None, "T", 0)
    assert loaded.node("clip").attrs["a_min"] is None


def test_every_registered_attribute_kind_is_encodable():
    """Each attribute kind the registry uses maps to one AttrValue member."""
    members = {f.name for f in pb.AttrValue.DESCRIPTOR.oneofs_by_name["value"].fields}
    kinds = {"int": "i", "float": "f", "str": "s", "bool": "b"}
    for opdef in ge.ops.REGISTRY.values():
        for attr in opdef.attrs:
            assert kinds.get(attr.kind, attr.kind) in members, (opdef.name, attr.name)


# -- determinism ------------------------------------------------------------------------

BUILD_AND_SAVE = textwrap.dedent("""
    import sys, numpy as np, graphengine as ge
    g = ge.Graph("det")
    x = g.placeholder("x", shape=(None, 3))
    with g.name_scope("blk"):
        w = g.parameter("w", shape=(3,), seed=7)
        y = ge.leaky_relu(x * w + 1.5, alpha=0.3)
    g.mark_output(y)
    g.metadata.update({"z": "last", "a": "first", "m": "middle"})
    g = ge.gradients(g, ge.sum(y), wrt=["blk/w"])
    ge.save(g, sys.argv[1])
""")


def test_saving_twice_gives_identical_bytes(model_graph, tmp_path):
    for name in ("a.pb", "a.pbtxt"):
        first, second = tmp_path / name, tmp_path / ("b" + name[1:])
        ge.save(model_graph, first)
        ge.save(model_graph, second)
        assert first.read_bytes() == second.read_bytes()


def test_separate_processes_write_identical_bytes(tmp_path):
    outputs = []
    for hash_seed in ("1", "2"):
        path = tmp_path / f"det{hash_seed}.pb"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run(
            [sys.executable, "-c", BUILD_AND_SAVE, str(path)], check=True, env=env, cwd=ROOT
        )
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_load_then_save_gives_the_same_bytes(model_file, tmp_path):
    again = tmp_path / "again.pb"
    ge.save(ge.load(model_file), again)
    assert again.read_bytes() == model_file.read_bytes()


def test_another_process_loads_and_runs_identically(model_graph, model_file, tmp_path):
    feeds = {"x": np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)}
    np.savez(tmp_path / "feeds.npz", **feeds)
    script = textwrap.dedent("""
        import sys, numpy as np, graphengine as ge
        g = ge.load(sys.argv[1])
        feeds = dict(np.load(sys.argv[2]))
        np.savez(sys.argv[3], **ge.run(g, list(g.outputs), feeds))
    """)
    out = tmp_path / "out.npz"
    subprocess.run(
        [sys.executable, "-c", script, str(model_file), str(tmp_path / "feeds.npz"), str(out)],
        check=True,
        cwd=ROOT,
    )
    expected = ge.run(model_graph, list(model_graph.outputs), feeds)
    with np.load(out) as got:
        assert sorted(got.files) == sorted(expected)
        assert all(same_array(got[k], expected[k]) for k in expected)


# -- external data ------------------------------------------------------------------------


def _big_graph() -> ge.Graph:
    g = ge.Graph("big")
    x = g.placeholder("x", (4,))
    w = g.parameter("w", np.arange(4, dtype=np.float64))  # 32 bytes: external
    s = g.parameter("s", np.float32(3))  # 4 bytes: inline
    c = g.constant(np.arange(8, dtype=np.float32).reshape(2, 4))  # 32 bytes: external
    g.mark_output(ge.cast(x, "float64") * w + ge.cast(c * s, "float64"))
    return g


def _data_file(folder: Path, name: str) -> Path:
    """The one data file of model ``name``: ``<name>.<12 hex digits>.data``."""
    serialize.wait_for_removals()  # old data files are freed in a background thread
    found = [
        p
        for p in folder.iterdir()
        if re.fullmatch(re.escape(name) + r"\.[0-9a-f]{12}\.data", p.name)
    ]
    assert len(found) == 1, sorted(p.name for p in folder.iterdir())
    return found[0]


@pytest.mark.parametrize("name", ["big.pb", "big.pbtxt"])
def test_tensors_over_the_threshold_go_to_the_data_file(tmp_path, name):
    g = _big_graph()
    loaded = round_trip(g, tmp_path / name, external_data_threshold=16)
    assert_same_graph(g, loaded)
    data = _data_file(tmp_path, name)
    model = serialize._parse(
        (tmp_path / name).read_bytes(),
        serialize._format_for(tmp_path / name, None),
        tmp_path / name,
    )
    external = {
        p.name: p.value.external for p in model.graph.parameters if p.value.HasField("external")
    }
    assert set(external) == {"w"} and model.graph.parameters[1].value.raw_data
    ext = external["w"]
    assert ext.location == data.name and ext.length == 32 and ext.HasField("crc32")
    assert ext.crc32 == zlib.crc32(np.arange(4, dtype="<f8").tobytes())
    constant = model.graph.nodes[0].attribute[0].value.tensor
    assert constant.HasField("external") and constant.external.offset % 64 == 0
    assert data.stat().st_size == constant.external.offset + 32


def test_default_threshold_moves_the_largest_tensors_out(tmp_path, monkeypatch):
    monkeypatch.setattr(serialize.tensors, "INLINE_LIMIT", 40)  # stands for 1.5 GiB
    g = _big_graph()  # 32 + 4 + 32 bytes of tensors
    loaded = round_trip(g, tmp_path / "auto.pb")
    assert_same_graph(g, loaded)
    _, info = serialize.load_with_info(tmp_path / "auto.pb")
    assert info.data_files == (_data_file(tmp_path, "auto.pb").name,)
    assert serialize._choose_threshold([32, 4, 32], None) == 31
    assert serialize._choose_threshold([16, 4, 8], None) == serialize.EXTERNAL_THRESHOLD
    assert serialize._choose_threshold([32, 4, 8], None) == 31  # 44 do not fit
    assert serialize._choose_threshold([32, 4, 8], 0) == 0
    assert serialize._choose_threshold([32, 4, 8], 8) == 8


def test_tensors_over_a_mebibyte_go_to_the_data_file_by_default(tmp_path):
    g = ge.Graph("default")
    w = g.parameter("w", np.arange(2**18 + 1, dtype=np.float32))  # just over 1 MiB
    b = g.parameter("b", np.arange(2**18, dtype=np.float32))  # exactly 1 MiB: inline
    g.mark_output(ge.sum(w) + ge.sum(b))
    ge.save(g, tmp_path / "m.pb")
    data = _data_file(tmp_path, "m.pb")
    assert data.stat().st_size == w.shape[0] * 4
    loaded = ge.load(tmp_path / "m.pb")
    assert_same_graph(g, loaded)
    # Mapped copy-on-write: writable, and a write never reaches the file.
    value = loaded.values["w"]
    assert value.flags.writeable and not value.flags.owndata
    value[:] = -1
    assert_same_graph(g, ge.load(tmp_path / "m.pb"))


def test_a_damaged_data_file_is_caught_by_its_crc32(tmp_path):
    ge.save(_big_graph(), tmp_path / "m.pb", external_data_threshold=16)
    data = _data_file(tmp_path, "m.pb")
    raw = bytearray(data.read_bytes())
    raw[3] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(ge.FileFormatError, match="do not match the recorded crc32"):
        ge.load(tmp_path / "m.pb")
    ge.load(tmp_path / "m.pb", verify_data=False)  # the caller's choice


def _many_tensors(count: int = 9, size: int = 2**19) -> ge.Graph:
    """Tensors of 2 MiB with odd-sized ones between (alignment gaps), 18+ MiB in all:
    enough for the threaded checksum path."""
    g = ge.Graph("many")
    rng = np.random.default_rng(3)
    total = None
    for i in range(count):
        w = g.parameter(f"w{i}", rng.standard_normal(size + 3 * i).astype(np.float32))
        b = g.parameter(f"b{i}", np.arange(5 + i, dtype=np.int8))
        term = ge.sum(w) + ge.sum(ge.cast(b, "float32"))
        total = term if total is None else total + term
    g.mark_output(total)
    return g


def test_many_tensors_are_written_aligned_and_checked_in_threads(tmp_path):
    g = _many_tensors()
    ge.save(g, tmp_path / "m.pb", external_data_threshold=4)
    loaded = ge.load(tmp_path / "m.pb")
    assert_same_graph(g, loaded)
    model = pb.ModelProto.FromString((tmp_path / "m.pb").read_bytes())
    exts = [p.value.external for p in model.graph.parameters]
    assert all(e.offset % serialize.DATA_ALIGNMENT == 0 for e in exts)
    raw = _data_file(tmp_path, "m.pb").read_bytes()
    ends = sorted((e.offset, e.offset + e.length) for e in exts)
    gaps = [raw[stop:start] for (_, stop), (start, _) in zip(ends, ends[1:])]
    assert b"".join(gaps) == bytes(sum(map(len, gaps))) and any(gaps)  # zeros, some
    assert all(zlib.crc32(raw[e.offset : e.offset + e.length]) == e.crc32 for e in exts)


def test_a_damaged_tensor_among_many_is_named(tmp_path):
    ge.save(_many_tensors(), tmp_path / "m.pb", external_data_threshold=4)
    model = pb.ModelProto.FromString((tmp_path / "m.pb").read_bytes())
    [w6] = [p for p in model.graph.parameters if p.name == "w6"]
    [w7] = [p for p in model.graph.parameters if p.name == "w7"]
    data = _data_file(tmp_path, "m.pb")
    raw = bytearray(data.read_bytes())
    raw[w7.value.external.offset + 100] ^= 1
    raw[w6.value.external.offset + 9] ^= 4
    data.write_bytes(bytes(raw))
    with pytest.raises(ge.FileFormatError, match=r"\('w6'\).*recorded crc32"):
        ge.load(tmp_path / "m.pb")  # the first damaged tensor in file order


def test_a_large_tensor_is_checked_in_pieces_that_threads_share(tmp_path, monkeypatch):
    from graphengine.serialize import external

    monkeypatch.setattr(external, "_VERIFY_PIECE_BYTES", 4096)  # 9.8 pieces for w0
    monkeypatch.setattr(external, "_THREADED_BYTES", 0)  # threads even for 40 KB
    g = _many_tensors(2, size=10_000)
    ge.save(g, tmp_path / "m.pb", external_data_threshold=4)
    assert_same_graph(g, ge.load(tmp_path / "m.pb"))  # the pieces' crc32s join in order
    model = pb.ModelProto.FromString((tmp_path / "m.pb").read_bytes())
    [w0] = [p for p in model.graph.parameters if p.name == "w0"]
    data = _data_file(tmp_path, "m.pb")
    raw = bytearray(data.read_bytes())
    raw[w0.value.external.offset + 7 * 4096 + 17] ^= 2  # in its eighth piece
    data.write_bytes(bytes(raw))
    with pytest.raises(ge.FileFormatError, match=r"\('w0'\).*recorded crc32"):
        ge.load(tmp_path / "m.pb")


def test_sync_false_skips_the_flushes_and_saves_the_same_files(tmp_path, monkeypatch):
    g = _many_tensors(2)
    calls = []
    for name in ("fsync", "fdatasync"):
        if hasattr(os, name):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, lambda fd, n=name, f=real: calls.append(n) or f(fd))
    ge.save(g, tmp_path / "a.pb")
    data = "fdatasync" if hasattr(os, "fdatasync") else "fsync"
    # The data file, the folder (its new name), the model file, the folder (the switch).
    assert calls == [data, "fsync", data, "fsync"]
    calls.clear()
    ge.save(g, tmp_path / "b.pb", sync=False)
    assert calls == []
    assert_same_graph(g, ge.load(tmp_path / "b.pb"))
    assert _data_file(tmp_path, "a.pb").read_bytes() == _data_file(tmp_path, "b.pb").read_bytes()


def test_a_new_save_writes_a_new_data_file_and_removes_the_old(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_big_graph(), path, external_data_threshold=16)
    first = _data_file(tmp_path, "m.pb")
    ge.save(_big_graph(), path, external_data_threshold=16)
    assert _data_file(tmp_path, "m.pb") == first  # same tensors, same name
    g = _big_graph()
    g.values["w"][:] = 7
    ge.save(g, path, external_data_threshold=16)
    second = _data_file(tmp_path, "m.pb")  # and the old one is gone
    assert second != first
    assert_same_graph(g, ge.load(path))


def test_a_save_without_external_tensors_removes_the_old_data_file(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_big_graph(), path, external_data_threshold=16)
    _data_file(tmp_path, "m.pb")
    (tmp_path / "m.pb.data").write_bytes(b"from an older graphengine")
    ge.save(_big_graph(), path)
    serialize.wait_for_removals()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pb"]
    assert_same_graph(_big_graph(), ge.load(path))


def test_symlink_to_a_data_file_inside_the_folder_is_followed(tmp_path):
    ge.save(_big_graph(), tmp_path / "m.pb", external_data_threshold=16)
    (tmp_path / "store").mkdir()
    data = _data_file(tmp_path, "m.pb")
    data.rename(tmp_path / "store" / "real.data")
    data.symlink_to(tmp_path / "store" / "real.data")
    assert_same_graph(_big_graph(), ge.load(tmp_path / "m.pb"))


# -- atomic writes ------------------------------------------------------------------------


def test_a_failed_save_leaves_the_old_file_and_no_temporaries(model_graph, tmp_path, monkeypatch):
    path = tmp_path / "m.pb"
    ge.save(_big_graph(), path, external_data_threshold=16)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(serialize, "_serialize", fail)  # after the data file was written
    with pytest.raises(OSError, match="disk full"):
        ge.save(model_graph, path, external_data_threshold=0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- versions and fields from newer versions ------------------------------------------------


def _model(path: Path) -> pb.ModelProto:
    return pb.ModelProto.FromString(path.read_bytes())


def _write(path: Path, model: pb.ModelProto, extra: bytes = b"") -> None:
    """Write an edited model, without the checksum that no longer holds."""
    model.ClearField("content_crc32")
    path.write_bytes(model.SerializeToString() + extra)


def _unknown_numbers(msg) -> list[int]:
    return [f.field_number for f in UnknownFieldSet(msg)]


def _varint_field(number: int, value: int) -> bytes:
    return serialize._varint(number << 3) + serialize._varint(value)


def _string_field(number: int, value: bytes) -> bytes:
    return serialize._varint(number << 3 | 2) + serialize._varint(len(value)) + value


def test_fields_of_a_newer_minor_version_survive_load_and_save(model_file, tmp_path):
    model = _model(model_file)
    model.format_version_minor = 7
    node = model.graph.nodes[0]
    # Unknown fields inside a node, an attribute value, a tensor and a gradient entry,
    # a known `doc` the graph does not hold, and unknown fields at top level.
    node.MergeFromString(_varint_field(1000, 42) + _string_field(1001, b"new"))
    node.doc = "first node"
    clip = next(n for n in model.graph.nodes if n.op_type == "clip")
    clip.attribute[0].value.MergeFromString(_varint_field(500, 1))
    model.graph.parameters[0].value.MergeFromString(_string_field(99, b"tensor extra"))
    model.gradient.grads[0].MergeFromString(_varint_field(77, 3))
    newer = tmp_path / "newer.pb"
    _write(newer, model, _string_field(2000, b"top") + _varint_field(2001, 2**63))

    graph = ge.load(newer)
    resaved = tmp_path / "resaved.pb"
    ge.save(graph, resaved)
    out = _model(resaved)

    assert out.format_version_minor == serialize.FORMAT_VERSION[1]  # written by this version ...
    assert _unknown_numbers(out) == [2000, 2001]  # ... keeping what it does not know
    assert UnknownFieldSet(out)[1].data == 2**63
    out_node = next(n for n in out.graph.nodes if n.name == node.name)
    assert _unknown_numbers(out_node) == [1000, 1001] and out_node.doc == "first node"
    out_clip = next(n for n in out.graph.nodes if n.op_type == "clip")
    assert _unknown_numbers(out_clip.attribute[0].value) == [500]
    assert _unknown_numbers(out.graph.parameters[0].value) == [99]
    assert _unknown_numbers(out.gradient.grads[0]) == [77]
    # A third generation keeps them too, byte for byte.
    third = tmp_path / "third.pb"
    ge.save(ge.load(resaved), third)
    assert third.read_bytes() == resaved.read_bytes()


def test_text_format_warns_that_it_drops_unknown_fields(model_file, tmp_path):
    newer = tmp_path / "newer.pb"
    _write(newer, _model(model_file), _varint_field(3000, 1))
    graph = ge.load(newer)
    with pytest.warns(UserWarning, match="text format cannot store"):
        ge.save(graph, tmp_path / "m.pbtxt")
    assert_same_graph(graph, ge.load(tmp_path / "m.pbtxt"))


def test_text_file_of_a_newer_minor_version_ignores_unknown_fields(model_file, tmp_path):
    text = tmp_path / "m.pbtxt"
    ge.save(ge.load(model_file), text)
    minor = f"format_version_minor: {serialize.FORMAT_VERSION[1]}\n"
    content = text.read_text().replace(
        "format_version_major: 1\n" + minor,
        "format_version_major: 1\nformat_version_minor: 3\nshiny_new_field: 5\n",
    )
    text.write_text(content)
    assert_same_graph(ge.load(model_file), ge.load(text))
    text.write_text(content.replace("format_version_minor: 3\n", ""))
    with pytest.raises(ge.FileFormatError, match=r"line 2.*shiny_new_field"):
        ge.load(text)


def test_text_file_of_a_newer_major_version_gets_the_version_message(model_file, tmp_path):
    text = tmp_path / "m.pbtxt"
    ge.save(ge.load(model_file), text)
    text.write_text(
        text.read_text().replace(
            "format_version_major: 1\n", "format_version_major: 3\nrenamed_field: 1\n"
        )
    )
    with pytest.raises(ge.FileFormatError, match=r"format 3\.x; this graphengine reads 1\.x"):
        ge.load(text)


def test_newer_major_version_and_opset_are_refused(model_file, tmp_path):
    model = _model(model_file)
    model.format_version_major = 2
    _write(tmp_path / "v2.pb", model)
    with pytest.raises(
        ge.FileFormatError,
        match=r"written by format 2\.x; this graphengine "
        r"reads 1\.x; upgrade graphengine",
    ):
        ge.load(tmp_path / "v2.pb")
    model.format_version_major, model.opset_version = 1, serialize.OPSET_VERSION + 1
    _write(tmp_path / "newer.pb", model)
    with pytest.raises(ge.FileFormatError, match=f"opset {serialize.OPSET_VERSION + 1}"):
        ge.load(tmp_path / "newer.pb")


# -- API errors -------------------------------------------------------------------------------


def test_unknown_format_name_is_refused(model_graph, tmp_path):
    with pytest.raises(ge.FileFormatError, match="unknown format 'xml'"):
        ge.save(model_graph, tmp_path / "m.xml", format="xml")


def test_stale_gradient_info_is_refused_on_save(model_graph, tmp_path):
    info = model_graph.gradient
    model_graph.gradient = type(info)(info.loss, info.grads, info.nodes + ("ghost",))
    with pytest.raises(ge.GraphError, match="gradient node 'ghost' is not in the graph"):
        ge.save(model_graph, tmp_path / "m.pb")
    assert not (tmp_path / "m.pb").exists()


def test_negative_threshold_is_refused(model_graph, tmp_path):
    with pytest.raises(ge.FileFormatError, match="external_data_threshold"):
        ge.save(model_graph, tmp_path / "m.pb", external_data_threshold=-1)


# -- the training spec ---------------------------------------------------------------------


def test_training_spec_defaults_and_proto_round_trip():
    spec = TrainingSpec(
        loss="loss",
        trainable=["w"],
        metrics=(),
        schedule=ScheduleSpec("step", step_size=10, gamma=0.5),
        optimizer=OptimizerSpec("sgd", momentum=0.9, nesterov=True),
        seed=2**64 - 1,
        data_map={"y": "labels", "x": "inputs"},
    )
    assert spec.metrics == ("loss",) and spec.trainable == ("w",)
    assert list(spec.data_map) == ["x", "y"]
    assert TrainingSpec.from_proto(spec.to_proto()) == spec
    hash(spec)
    # Absent fields take the documented defaults.
    assert TrainingSpec.from_proto(pb.TrainingSpecProto(loss="l")) == TrainingSpec(loss="l")


BAD_SPECS = [
    (lambda: OptimizerSpec(learning_rate=0.0), "optimizer.learning_rate"),
    (lambda: OptimizerSpec(learning_rate=float("nan")), "optimizer.learning_rate"),
    (lambda: OptimizerSpec(name="rmsprop"), "optimizer.name"),
    (lambda: OptimizerSpec(momentum=1.0), "optimizer.momentum"),
    (lambda: OptimizerSpec(nesterov=True), "optimizer.nesterov"),
    (lambda: OptimizerSpec("adam", beta2=1.5), "optimizer.beta2"),
    (lambda: OptimizerSpec(epsilon=0), "optimizer.epsilon"),
    (lambda: ScheduleSpec("step"), "schedule.step_size"),
    (lambda: ScheduleSpec("linear"), "schedule.kind"),
    (lambda: ScheduleSpec(gamma=0), "schedule.gamma"),
    (lambda: TrainingSpec(loss=""), "loss"),
    (lambda: TrainingSpec(loss="l", batch_size=0), "batch_size"),
    (lambda: TrainingSpec(loss="l", epochs=1.5), "epochs"),
    (lambda: TrainingSpec(loss="l", metrics=("f2",)), "metrics"),
    (lambda: TrainingSpec(loss="l", metrics=("accuracy",)), "labels"),
    (lambda: TrainingSpec(loss="l", trainable=("bad name",)), "trainable"),
    (lambda: TrainingSpec(loss="l", data_map={"x": ""}), "data_map"),
]


@pytest.mark.parametrize("make, field", BAD_SPECS, ids=[f for _, f in BAD_SPECS])
def test_bad_training_values_name_the_field(make, field):
    with pytest.raises(ge.GraphError, match=f"training spec: {field}"):
        make()


def test_training_spec_must_fit_the_graph(model_graph, tmp_path):
    model_graph.training = TrainingSpec(loss="missing")
    with pytest.raises(ge.GraphError, match="loss names 'missing'"):
        ge.save(model_graph, tmp_path / "m.pb")


# -- property: random graphs round trip bitwise -----------------------------------------------

UNARY = ["tanh", "exp", "negative", "square", "abs", "sigmoid", "identity"]
BINARY = ["add", "multiply", "subtract", "maximum", "minimum"]


@st.composite
def random_graphs(draw):
    dtype = np.dtype(draw(st.sampled_from(["float16", "float32", "float64"])))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    arrays = hnp.arrays(
        dtype,
        shape,
        elements=st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True),
    )
    g = ge.Graph("random")
    tensors = [g.placeholder("x", shape, dtype)]
    for i in range(draw(st.integers(1, 3))):
        tensors.append(g.parameter(f"p{i}", draw(arrays), trainable=draw(st.booleans())))
    tensors.append(g.constant(draw(arrays)))
    for _ in range(draw(st.integers(1, 8))):
        scope = draw(st.sampled_from(["", "a", "a/b"]))
        with g.name_scope(scope) if scope else contextlib.nullcontext():
            if draw(st.booleans()):
                op = draw(st.sampled_from(UNARY))
                tensors.append(g.apply(op, [draw(st.sampled_from(tensors))]))
            else:
                op = draw(st.sampled_from(BINARY))
                tensors.append(
                    g.apply(op, [draw(st.sampled_from(tensors)), draw(st.sampled_from(tensors))])
                )
    if draw(st.booleans()):
        g.mark_output(tensors[-1])
    g.metadata = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
    return g


@settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    graph=random_graphs(),
    fmt=st.sampled_from(["binary", "text"]),
    threshold=st.sampled_from([None, 8]),
)
def test_random_graphs_round_trip_bitwise(graph, fmt, threshold):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.model"
        ge.save(graph, path, fmt, external_data_threshold=threshold)
        assert_same_graph(graph, ge.load(path, fmt))


def test_a_parameter_value_of_the_wrong_type_is_refused_on_save(model_graph, tmp_path):
    model_graph.values["layer1/w"] = np.zeros(3, np.float64)
    with pytest.raises(ge.ShapeError, match="'layer1/w': graph.values holds float64"):
        ge.save(model_graph, tmp_path / "m.pb")


def test_a_full_disk_fails_before_any_tensor_is_written_and_leaves_nothing(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate")
    path = tmp_path / "m.pb"
    ge.save(_big_graph(), path, external_data_threshold=16)
    before = sorted(p.name for p in tmp_path.iterdir())

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    g = _big_graph()
    g.values["w"][:] = 3
    with pytest.raises(OSError, match="No space left") as info:
        ge.save(g, path, external_data_threshold=16)
    assert info.value.filename == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary left
    assert_same_graph(_big_graph(), ge.load(path))  # the old save is intact


# -- checksums of inline tensors (format 1.1) --------------------------------------------


def _inline_graph() -> ge.Graph:
    g = ge.Graph("inline")
    x = g.placeholder("x", (3,))
    w = g.parameter("w", np.arange(3, dtype=np.float32) + 0.5)
    c = g.constant(np.array([1.0, -2.0, 4.0], np.float64), name="c")
    g.mark_output(x * w + ge.cast(c, np.float32))
    return g


def _inline_tensors(model: pb.ModelProto) -> list[pb.TensorProto]:
    tensors = [p.value for p in model.graph.parameters]
    for node in model.graph.nodes:
        tensors += [a.value.tensor for a in node.attribute if a.value.HasField("tensor")]
    return tensors


def test_every_inline_tensor_records_its_crc32(tmp_path):
    ge.save(_inline_graph(), tmp_path / "m.pb")
    model = _model(tmp_path / "m.pb")
    tensors = _inline_tensors(model)
    assert len(tensors) == 2
    for tensor in tensors:
        assert tensor.HasField("crc32") and tensor.crc32 == zlib.crc32(tensor.raw_data)
    assert (model.format_version_major, model.format_version_minor) == (1, 1)


@pytest.mark.parametrize("name", ["m.pb", "m.pbtxt"])
@pytest.mark.parametrize(
    "tensor, where",
    [
        ("w", r"graph.parameters\[0\] \('w'\).value"),
        ("c", r"graph.nodes\[0\] \('c'\) attribute 'value'"),
    ],
)
def test_a_flipped_bit_in_an_inline_tensor_is_refused_naming_it(tmp_path, name, tensor, where):
    g = _inline_graph()
    path = tmp_path / name
    ge.save(g, path)
    value = g.values["w"] if tensor == "w" else g.node("c").attrs["value"]
    raw = value.tobytes()
    data = path.read_bytes()
    if name.endswith(".pbtxt"):  # text escapes bytes: flip one in the escaped form
        model = _model_text(path)
        target = next(t for t in _inline_tensors(model) if t.raw_data == raw)
        flipped = bytearray(target.raw_data)
        flipped[5] ^= 0x10
        target.raw_data = bytes(flipped)
        from google.protobuf import text_format

        path.write_text(text_format.MessageToString(model, as_utf8=True))
    else:
        at = data.index(raw) + 5
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
    with pytest.raises(
        ge.FileFormatError,
        match=where + ": its bytes do not match the recorded "
        r"crc32 .*damaged.*save the graph again.*verify_data=False",
    ):
        ge.load(path)
    loaded = ge.load(path, verify_data=False)  # unchecked, on request
    got = loaded.values["w"] if tensor == "w" else loaded.node("c").attrs["value"]
    assert got.tobytes() != raw and got.shape == value.shape


def _model_text(path: Path) -> pb.ModelProto:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb.ModelProto())


@pytest.mark.parametrize("name", ["m.pb", "m.pbtxt"])
def test_files_of_format_1_0_without_tensor_checksums_still_load(tmp_path, name):
    g = _inline_graph()
    path = tmp_path / name
    ge.save(g, path)
    model = _model_text(path) if name.endswith(".pbtxt") else _model(path)
    model.format_version_minor = 0
    for tensor in _inline_tensors(model):
        tensor.ClearField("crc32")
    if name.endswith(".pbtxt"):
        from google.protobuf import text_format

        path.write_text(text_format.MessageToString(model, as_utf8=True))
    else:
        _write(path, model)
    assert_same_graph(g, ge.load(path))


# -- the data file's writer ---------------------------------------------------------------


@settings(max_examples=60, derandomize=True, deadline=None)
@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_crc32_combine_matches_zlib(a, b):
    from graphengine.serialize.checksums import crc32_combine

    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_matches_zlib_on_long_and_odd_lengths():
    from graphengine.serialize.checksums import crc32_combine

    rng = np.random.default_rng(8)
    data = rng.integers(0, 256, 3 * 2**20 + 11, np.uint8).tobytes()
    lengths = [0, 1, 3, 4095, 4096, 65_537, 2**20, 3 * 2**20 + 11]
    lengths += [int(n) for n in rng.integers(0, len(data), 12)]
    for first in (0, 5, 2**20 + 1):
        for n in lengths:
            a, b = data[:first], data[first : first + n]
            assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b), (
                first,
                n,
            )


def test_the_fast_crc32_of_zlib_ng_gives_zlibs_values():
    zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")
    from graphengine.serialize.checksums import crc32

    assert crc32 is zlib_ng.crc32  # the one serialize uses when it is installed
    data = np.random.default_rng(5).integers(0, 256, 3 * 2**20 + 7, np.uint8)
    for piece in (b"", b"a", data[:1000].tobytes(), memoryview(data)):
        assert zlib_ng.crc32(piece) == zlib.crc32(piece)
    assert zlib_ng.crc32(b"more", 12345) == zlib.crc32(b"more", 12345)


def test_a_tensor_of_many_pieces_is_written_and_checksummed_whole(tmp_path, monkeypatch):
    from graphengine.serialize import data_writes

    monkeypatch.setattr(data_writes, "PIECE_BYTES", 4096)  # 2.5 pieces per tensor
    g = ge.Graph("pieces")
    rng = np.random.default_rng(3)
    for i in range(3):
        g.parameter(f"w{i}", rng.standard_normal(2560).astype(np.float32))
    for sync in (True, False):
        path = tmp_path / f"m{sync}.pb"
        ge.save(g, path, external_data_threshold=16, sync=sync)
        model = _model(path)
        for p in model.graph.parameters:
            assert p.value.external.crc32 == zlib.crc32(g.values[p.name].tobytes())
        assert_same_graph(g, ge.load(path))


def test_saving_the_same_tensors_again_keeps_their_data_file(tmp_path):
    """The old file of the same name is freed in the background, never the new one."""
    path = tmp_path / "m.pb"
    a, b = _big_graph(), _big_graph()
    b.values["w"][:] = 5
    for graph in (a, b, a, a, b):  # each save frees the previous one's data file
        ge.save(graph, path, external_data_threshold=16)
        assert_same_graph(graph, ge.load(path))
    serialize.wait_for_removals()
    assert_same_graph(b, ge.load(path))
    _data_file(tmp_path, "m.pb")  # exactly one left


def test_replaced_data_files_leave_no_open_descriptor(tmp_path):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    path = tmp_path / "m.pb"
    ge.save(_big_graph(), path, external_data_threshold=16)
    serialize.wait_for_removals()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(5):
        ge.save(_big_graph(), path, external_data_threshold=16)  # same name: kept open, freed
    serialize.wait_for_removals()
    assert len(list(Path("/proc/self/fd").iterdir())) == before


# -- data files written around the page cache (O_DIRECT) ------------------------------


def _direct_supported(folder: Path) -> bool:
    """Whether files in ``folder`` take O_DIRECT (tmpfs before Linux 6.6 does not)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


def _odd_tensors() -> ge.Graph:
    """77 KB of tensors of odd sizes: with 8 KiB chunks, tensors straddle chunks,
    alignment gaps fall inside them, and the last chunk is partial."""
    g = ge.Graph("odd")
    rng = np.random.default_rng(4)
    total = None
    for i, n in enumerate([5000, 3, 2048, 12_289, 1]):
        w = g.parameter(f"w{i}", rng.standard_normal(n).astype(np.float32))
        total = ge.sum(w) if total is None else total + ge.sum(w)
    g.mark_output(total)
    return g


@pytest.fixture
def direct_writes(monkeypatch):
    """data_writes, with every data file saved with a flush written around the
    cache in 8 KiB chunks; ``calls`` records which writer wrote each file."""
    from graphengine.serialize import data_writes

    monkeypatch.setattr(data_writes, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(data_writes, "DIRECT_CHUNK_BYTES", 8192)
    calls = []
    for name in ("write_tensors_buffered", "write_tensors_direct"):
        real = getattr(data_writes, name)
        monkeypatch.setattr(
            data_writes, name, lambda *a, n=name, f=real, **k: calls.append(n) or f(*a, **k)
        )
    data_writes.calls = calls
    return data_writes


def _save_both_ways(folder: Path, data_writes, monkeypatch) -> tuple[Path, Path]:
    """The odd tensors saved as folder/a/m.pb as configured, and as folder/b/m.pb
    through the page cache; returns both models."""
    g = _odd_tensors()
    a, b = folder / "a" / "m.pb", folder / "b" / "m.pb"
    for path in (a, b):
        path.parent.mkdir()
    ge.save(g, a, external_data_threshold=0)
    assert_same_graph(g, ge.load(a))
    with monkeypatch.context() as m:
        m.setattr(data_writes, "USE_DIRECT", False)
        ge.save(g, b, external_data_threshold=0)
    return a, b


def _assert_same_files(a: Path, b: Path) -> None:
    data_a, data_b = _data_file(a.parent, a.name), _data_file(b.parent, b.name)
    assert data_a.name == data_b.name and a.read_bytes() == b.read_bytes()
    assert data_a.read_bytes() == data_b.read_bytes()
    model = pb.ModelProto.FromString(a.read_bytes())
    ends = [p.value.external.offset + p.value.external.length for p in model.graph.parameters]
    assert data_a.stat().st_size == max(ends)  # the last block's padding is cut off
    assert sorted(p.name for p in a.parent.iterdir()) == ["m.pb", data_a.name]  # no temporaries


def test_a_data_file_written_around_the_cache_is_the_one_written_through_it(
    tmp_path, direct_writes, monkeypatch
):
    if not _direct_supported(tmp_path):
        pytest.skip("the file system of tmp_path refuses O_DIRECT")
    a, b = _save_both_ways(tmp_path, direct_writes, monkeypatch)
    assert direct_writes.calls == ["write_tensors_direct", "write_tensors_buffered"]
    _assert_same_files(a, b)


def test_a_file_system_without_o_direct_gets_the_same_file_through_the_cache(
    tmp_path, direct_writes, monkeypatch
):
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system")
    import fcntl

    real_fcntl = fcntl.fcntl

    def fcntl_without_direct(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs before 6.6 says
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", fcntl_without_direct)
    a, b = _save_both_ways(tmp_path, direct_writes, monkeypatch)
    assert direct_writes.calls == [
        "write_tensors_direct",  # refused: the same save goes through the cache
        "write_tensors_buffered",
        "write_tensors_buffered",
    ]
    _assert_same_files(a, b)


def _pwrite_failing_when_direct(monkeypatch, code: int) -> list[int]:
    """os.pwrite raising OSError(code) on descriptors in O_DIRECT mode; returns the
    list of descriptors it refused."""
    import fcntl

    real_pwrite, refused = os.pwrite, []

    def pwrite(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(code, os.strerror(code))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return refused


def test_a_device_refusing_the_alignment_gets_the_same_file_through_the_cache(
    tmp_path, direct_writes, monkeypatch
):
    if not _direct_supported(tmp_path):
        pytest.skip("the file system of tmp_path refuses O_DIRECT")
    refused = _pwrite_failing_when_direct(monkeypatch, errno.EINVAL)
    a, b = _save_both_ways(tmp_path, direct_writes, monkeypatch)
    assert refused  # the direct writes were tried, then the descriptor left O_DIRECT
    assert direct_writes.calls == ["write_tensors_direct"] + ["write_tensors_buffered"] * 2
    _assert_same_files(a, b)


def test_a_full_disk_during_a_direct_write_fails_the_save_and_keeps_the_old_model(
    tmp_path, direct_writes, monkeypatch
):
    import graphengine.serialize as serialize

    if not _direct_supported(tmp_path):
        pytest.skip("the file system of tmp_path refuses O_DIRECT")
    # The old data file counts as not cached, so the new one goes around the
    # cache (what the kernel keeps cached is not the test's to rely on).
    monkeypatch.setattr(serialize, "cached_bytes", lambda paths: 0)
    path = tmp_path / "m.pb"
    old = _odd_tensors()
    ge.save(old, path, external_data_threshold=0)  # around the cache
    new = _odd_tensors()
    new.values["w0"][:] = 7
    _pwrite_failing_when_direct(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError) as info:
        ge.save(new, path, external_data_threshold=0)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert direct_writes.calls == ["write_tensors_direct"] * 2
    assert_same_graph(old, ge.load(path))
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 0


def test_only_large_files_saved_with_a_flush_may_go_around_the_cache(monkeypatch):
    from graphengine.serialize import data_writes

    large = data_writes.DIRECT_MIN_BYTES
    assert not data_writes.may_write_direct(large - 1, sync=True)
    assert not data_writes.may_write_direct(large, sync=False)  # no flush: the cache may keep it
    assert data_writes.may_write_direct(large, sync=True) == hasattr(os, "O_DIRECT")
    monkeypatch.delattr(os, "O_DIRECT", raising=False)  # macOS, Windows
    assert not data_writes.may_write_direct(large, sync=True)


def test_a_save_over_a_cached_model_goes_through_the_cache_and_others_around_it(
    tmp_path, direct_writes, monkeypatch
):
    """Which writer a save picks follows what cached_bytes says of the data files
    it replaces.  What the page cache holds is the kernel's to decide (a small
    file written around it may still have a page cached after its last partial
    block is cut), so the probe is replaced here by one the test controls; the
    real probe is checked on its own below."""
    import graphengine.serialize as serialize

    if not _direct_supported(tmp_path):
        pytest.skip("the file system of tmp_path refuses O_DIRECT")
    cached: set[Path] = set()
    asked: list[list[Path]] = []

    def cached_bytes(paths):
        asked.append([Path(p) for p in paths])
        return sum(Path(p).stat().st_size for p in paths if Path(p) in cached)

    monkeypatch.setattr(serialize, "cached_bytes", cached_bytes)
    path, g = tmp_path / "m.pb", _odd_tensors()
    ge.save(g, path, external_data_threshold=0)  # a first save
    ge.save(g, path, external_data_threshold=0)  # over a data file not in the cache
    assert_same_graph(g, ge.load(path))
    cached.add(_data_file(tmp_path, "m.pb"))
    ge.save(g, path, external_data_threshold=0)  # over a cached data file
    assert direct_writes.calls == ["write_tensors_direct"] * 2 + ["write_tensors_buffered"]
    assert asked[0] == [] and asked[2] == [_data_file(tmp_path, "m.pb")] == list(cached)
    assert_same_graph(g, ge.load(path))


def test_cached_bytes_counts_files_whose_pages_are_cached_and_skips_the_rest(tmp_path):
    """The probe reads sample bytes without waiting: a file just written through
    the page cache and read back counts with its size; missing paths, folders
    and FIFOs count 0 (a FIFO must not block the probe)."""
    from graphengine.serialize.cleanup import cached_bytes

    if not hasattr(os, "RWF_NOWAIT"):
        pytest.skip("no RWF_NOWAIT reads here: the probe answers 0")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(64 * 1024))
    data.read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cached_bytes([tmp_path / "missing", tmp_path, fifo]) == 0
    # Just written and read: in the cache unless the kernel evicted it at once.
    assert cached_bytes([data, tmp_path / "missing", fifo]) == data.stat().st_size


# -- the checksum of a binary file as a whole (format 1.1) ---------------------------------


def test_a_binary_file_starts_with_the_checksum_of_the_rest(tmp_path):
    ge.save(_inline_graph(), tmp_path / "m.pb")
    data = (tmp_path / "m.pb").read_bytes()
    assert data[0] == 0x55  # field 10, fixed32
    assert int.from_bytes(data[1:5], "little") == zlib.crc32(data[5:])
    assert _model(tmp_path / "m.pb").content_crc32 == zlib.crc32(data[5:])
    ge.save(_inline_graph(), tmp_path / "m.pbtxt")
    # Text files are meant to be edited: no file checksum.
    assert "content_crc32" not in (tmp_path / "m.pbtxt").read_text()


def test_a_flip_outside_the_tensors_is_caught_by_the_file_checksum(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_inline_graph(), path)
    data = bytearray(path.read_bytes())
    at = data.index(b"inline")  # the graph's name: no tensor checksum covers it
    data[at] ^= 0x02  # "inline" -> "knline": a valid name, a different graph
    path.write_bytes(bytes(data))
    with pytest.raises(
        ge.FileFormatError,
        match=r"do not match its recorded checksum "
        r"\(content_crc32.*damaged.*save the graph again",
    ):
        ge.load(path)
    assert ge.load(path, verify_data=False).name == "knline"  # unchecked, on request


def test_a_file_cut_short_at_a_field_boundary_is_caught(tmp_path):
    g = _inline_graph()
    g.metadata["note"] = "the last field of the file"
    path = tmp_path / "m.pb"
    ge.save(g, path)
    data = path.read_bytes()
    model = _model(path)
    del model.metadata["note"]
    cut = model.ByteSize()  # the checksum and every field but the metadata entry
    assert pb.ModelProto.FromString(data[:cut]).metadata == {}  # protobuf reads it happily
    path.write_bytes(data[:cut])
    with pytest.raises(ge.FileFormatError, match="content_crc32"):
        ge.load(path)


def test_a_file_rewritten_by_another_tool_is_read_without_the_file_check(tmp_path):
    path = tmp_path / "m.pb"
    ge.save(_inline_graph(), path)
    model = _model(path)
    model.graph.name = "edited"
    path.write_bytes(model.SerializeToString())  # protobuf puts field 10 after field 9
    assert ge.load(path).name == "edited"  # the old checksum describes other bytes
    model.graph.parameters[0].value.raw_data = b"\0" * 12  # the tensors' checks still hold
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ge.FileFormatError, match=r"\('w'\).*recorded crc32"):
        ge.load(path)
