"""Reading ONNX files: external data under containment rules."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper

import graphengine as ge
from graphengine.onnx import OnnxConversionError, OnnxFileError

W = np.arange(12, dtype=np.float32).reshape(3, 4)


def model_with_external(location: str, *, offset: int = 0, length: int | None = None):
    """x (2, 3) @ W, with W's bytes stored at ``location`` (relative to the model)."""
    w = numpy_helper.from_array(W, "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = {
        "location": location,
        "offset": str(offset),
        "length": str(W.nbytes if length is None else length),
    }
    for key, value in entries.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def write(folder, model, name="model.onnx"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_saved_by_onnx_is_read(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert (tmp_path / "weights.bin").exists()
    np.testing.assert_array_equal(ge.from_onnx(path).values["W"], W)


def test_offsets_inside_a_data_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "all.bin").write_bytes(b"\x00" * 16 + W.tobytes() + b"tail")
    path = write(tmp_path, model_with_external("data/all.bin", offset=16))
    np.testing.assert_array_equal(ge.from_onnx(path).values["W"], W)


def test_a_model_proto_needs_its_folder(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    model = model_with_external("w.bin")
    with pytest.raises(OnnxFileError, match="pass its path, or base_dir"):
        ge.from_onnx(model)
    np.testing.assert_array_equal(ge.from_onnx(model, base_dir=tmp_path).values["W"], W)


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin"])
def test_paths_leaving_the_folder_are_refused(tmp_path, location):
    (tmp_path / "outside.bin").write_bytes(W.tobytes())
    path = write(tmp_path / "model", model_with_external(location))
    with pytest.raises(OnnxFileError, match="outside the model's folder"):
        ge.from_onnx(path)


def test_absolute_paths_are_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    path = write(tmp_path / "model", model_with_external(str(tmp_path / "w.bin")))
    with pytest.raises(OnnxFileError, match="absolute path"):
        ge.from_onnx(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_symlinks_leaving_the_folder_are_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    try:
        (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    except OSError:
        pytest.skip("cannot create symlinks here")
    path = write(folder, model_with_external("w.bin"))
    with pytest.raises(OnnxFileError, match="outside the model's folder"):
        ge.from_onnx(path)
    # A link that stays inside the folder is fine.
    (folder / "real.bin").write_bytes(W.tobytes())
    (folder / "inside.bin").symlink_to(folder / "real.bin")
    path = write(folder, model_with_external("inside.bin"), "inside.onnx")
    np.testing.assert_array_equal(ge.from_onnx(path).values["W"], W)


def test_missing_and_short_data_files_are_refused(tmp_path):
    path = write(tmp_path, model_with_external("missing.bin"))
    with pytest.raises(OnnxFileError, match="does not exist"):
        ge.from_onnx(path)
    (tmp_path / "short.bin").write_bytes(W.tobytes()[:20])
    path = write(tmp_path, model_with_external("short.bin"), "short.onnx")
    with pytest.raises(OnnxFileError, match="too few"):
        ge.from_onnx(path)
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    path = write(tmp_path, model_with_external("w.bin", length=8), "length.onnx")
    with pytest.raises(OnnxFileError, match="length 8 does not match"):
        ge.from_onnx(path)


def test_unreadable_files_raise_file_format_errors(tmp_path):
    with pytest.raises(OnnxFileError, match="ONNX model .* does not exist"):
        ge.from_onnx(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x96\x01 definitely not a model")
    with pytest.raises(OnnxFileError):
        ge.from_onnx(tmp_path / "bad.onnx")


def _two_layer_model():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w1, w2


def test_save_as_external_data_in_a_subfolder_imports_and_runs_from_the_cli(tmp_path):
    import subprocess
    import sys

    model, w1, w2 = _two_layer_model()
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "weights").mkdir()
    onnx.save_model(
        model,
        folder / "mlp.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights/mlp.bin",
        size_threshold=0,
    )
    out = tmp_path / "mlp.pb"
    done = subprocess.run(
        [sys.executable, "-m", "graphengine", "import", str(folder / "mlp.onnx"), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path.parent,  # the data is found beside the model, not in the cwd
    )
    assert done.returncode == 0, done.stderr
    graph = ge.load(out)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        ge.run(graph, "y", {"x": x}), np.maximum(x @ w1, 0) @ w2, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("damage", ["missing", "escaping"])
def test_external_data_refusals_name_the_tensor(tmp_path, damage):
    model, _, _ = _two_layer_model()
    onnx.save_model(
        model, tmp_path / "m.onnx", save_as_external_data=True, location="m.bin", size_threshold=0
    )
    saved = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    entry = next(e for e in saved.graph.initializer[1].external_data if e.key == "location")
    if damage == "missing":
        entry.value = "gone.bin"
        expected = r"initializer 'w2'.*'gone.bin' does not exist"
    else:
        entry.value = "../m.bin"
        (tmp_path / "sub").mkdir()
        expected = r"initializer 'w2'.*outside the model's folder"
    target = tmp_path / "sub" / "m.onnx" if damage == "escaping" else tmp_path / "m.onnx"
    if damage == "escaping":
        (tmp_path / "sub" / "m.bin").write_bytes((tmp_path / "m.bin").read_bytes())
    target.write_bytes(saved.SerializeToString())
    with pytest.raises(OnnxFileError, match=expected):
        ge.from_onnx(target)


def _external(name: str, array: np.ndarray, location: str, offset: int = 0) -> TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {
        "location": location,
        "offset": str(offset),
        "length": str(array.nbytes),
    }.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _two_tensor_model(folder, offset_b: int, location_b: str = "w.bin"):
    """y = a + b, both (4,) float32 stored in w.bin (a at 0, b at ``offset_b``)."""
    a = np.arange(4, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [_external("a", a, "w.bin"), _external("b", a + 10, location_b, offset_b)],
    )
    return write(folder, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_tensors_sharing_bytes_are_refused_naming_both(tmp_path):
    data = (
        np.arange(4, dtype=np.float32).tobytes() + (np.arange(4, dtype=np.float32) + 10).tobytes()
    )
    (tmp_path / "w.bin").write_bytes(data)
    np.testing.assert_array_equal(
        ge.run(ge.from_onnx(_two_tensor_model(tmp_path, 16)), "y"), [10, 12, 14, 16]
    )
    with pytest.raises(OnnxFileError, match=r"initializer 'b'.*overlaps that of initializer 'a'"):
        ge.from_onnx(_two_tensor_model(tmp_path, 8))
    with pytest.raises(OnnxFileError, match=r"initializer 'b'.*bytes 0 to 16.*overlaps"):
        ge.from_onnx(_two_tensor_model(tmp_path, 0))


def _refusal(tmp_path, case):
    """Set up one way for external data to be refused; returns the model path."""
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(W.tobytes())
    if case == "missing":
        return write(folder, model_with_external("gone.bin"))
    if case == "outside":
        return write(folder, model_with_external("../outside.bin"))
    if case == "absolute":
        return write(folder, model_with_external(str(tmp_path / "outside.bin")))
    if case == "symlink out":
        (folder / "w.bin").symlink_to(tmp_path / "outside.bin")
        return write(folder, model_with_external("w.bin"))
    if case == "hard link":
        os.link(tmp_path / "outside.bin", folder / "w.bin")
        return write(folder, model_with_external("w.bin"))
    if case == "truncated":
        (folder / "w.bin").write_bytes(W.tobytes()[:-1])
        return write(folder, model_with_external("w.bin"))
    if case == "past the end":
        (folder / "w.bin").write_bytes(W.tobytes())
        return write(folder, model_with_external("w.bin", offset=4))
    if case == "wrong length":
        (folder / "w.bin").write_bytes(W.tobytes())
        return write(folder, model_with_external("w.bin", length=W.nbytes - 4))
    if case == "negative offset":
        (folder / "w.bin").write_bytes(W.tobytes())
        return write(folder, model_with_external("w.bin", offset=-4))
    if case == "folder":
        (folder / "w.bin").mkdir()
        return write(folder, model_with_external("w.bin"))
    if case == "fifo":
        os.mkfifo(folder / "w.bin")
        return write(folder, model_with_external("w.bin"))
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "'gone.bin' does not exist"),
        ("outside", "outside the model's folder"),
        ("absolute", "absolute path"),
        ("symlink out", "outside the model's folder"),
        ("hard link", "2 hard links"),
        ("truncated", "too few"),
        ("past the end", "too few"),
        ("wrong length", "length 44 does not match"),
        ("negative offset", "offset -4 is negative"),
        ("folder", "is a folder"),
        ("fifo", "FIFO"),
    ],
)
def test_every_external_data_refusal_is_an_onnx_error_naming_the_tensor(tmp_path, case, message):
    if case == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    path = _refusal(tmp_path, case)
    with pytest.raises(OnnxConversionError, match=message) as info:
        ge.from_onnx(path)
    assert str(info.value).startswith("initializer 'W'"), str(info.value)
    # Also a FileFormatError, as file refusals were before OnnxFileError existed.
    assert isinstance(info.value, ge.FileFormatError)


def test_a_constant_attribute_stored_externally_is_read_and_its_refusals_name_the_node(tmp_path):
    (tmp_path / "c.bin").write_bytes(W.tobytes())
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], name="const", value=_external("v", W, "c.bin")),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = write(tmp_path, model)
    np.testing.assert_array_equal(ge.run(ge.from_onnx(path), "y"), W)
    (tmp_path / "c.bin").write_bytes(W.tobytes()[:8])
    with pytest.raises(OnnxFileError, match=r"attribute 'value' of node 'const'.*too few"):
        ge.from_onnx(path)


def test_model_files_that_cannot_be_read_are_onnx_errors(tmp_path):
    (tmp_path / "folder.onnx").mkdir()
    for path, message in [
        (tmp_path / "nope.onnx", "does not exist"),
        (tmp_path / "folder.onnx", "is a folder"),
    ]:
        with pytest.raises(OnnxFileError, match=message):
            ge.from_onnx(path)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x96\x01 definitely not a model")
    with pytest.raises(OnnxConversionError, match="not an ONNX model"):
        ge.from_onnx(tmp_path / "bad.onnx")


def test_a_folded_node_that_fails_names_the_onnx_node():
    from tests.onnx_helpers import make_model

    model = make_model(
        [
            helper.make_node("Gather", ["c", "i"], ["g"], name="pick"),
            helper.make_node("Add", ["x", "g"], ["y"], name="add"),
        ],
        {"x": (np.int64, [2])},
        ["y"],
        initializers={"c": np.arange(3, dtype=np.int64), "i": np.array([7, 1], np.int64)},
    )
    with pytest.raises(OnnxConversionError, match=r"node 'pick' \(Gather\):.*out of bounds"):
        ge.from_onnx(model)
