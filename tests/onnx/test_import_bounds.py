"""ONNX files that ask the importer for too much: each refused with our
OnnxConversionError naming the node, quickly and in bounded memory, or
imported without folding a huge constant into the model."""

import os
import time
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphengine as ge  # noqa: E402
from graphengine.onnx.errors import OnnxConversionError, OnnxFileError  # noqa: E402
from tests.onnx_helpers import make_model  # noqa: E402


def _const(name, value):
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_value")
    )


def _bounded(fn, seconds=5.0, megabytes=200):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < seconds, f"took {elapsed:.1f} s"
        assert peak < megabytes * 2**20, f"allocated {peak / 2**20:.0f} MiB"


def test_constant_of_shape_too_large_for_any_budget_is_refused_naming_the_node():
    model = make_model(
        [
            _const("shape", np.array([10**6, 10**6], np.int64)),
            helper.make_node("ConstantOfShape", ["shape"], ["y"], name="huge"),
        ],
        {},
        ["y"],
    )
    with pytest.raises(OnnxConversionError, match="node 'huge' \\(ConstantOfShape\\).*bytes"):
        _bounded(lambda: ge.from_onnx(model))


def test_constant_of_shape_over_the_folding_limit_stays_a_node():
    model = make_model(
        [
            _const("shape", np.array([8192, 4096], np.int64)),
            helper.make_node("ConstantOfShape", ["shape"], ["y"], name="big"),
        ],
        {},
        ["y"],
    )
    graph = _bounded(lambda: ge.from_onnx(model))
    assert not any(v.nbytes > 2**20 for v in graph.values.values())
    assert all(np.asarray(n.attrs.get("value", 0)).nbytes < 2**20 for n in graph.nodes)
    with ge.using_limits(max_tensor_bytes=2**27):
        out = ge.run(graph, graph.outputs[0], {})
    assert out.shape == (8192, 4096) and not out.any()


def test_range_of_10_to_the_12_is_refused():
    model = make_model(
        [
            _const("start", np.array(0, np.int64)),
            _const("limit", np.array(10**12, np.int64)),
            _const("delta", np.array(1, np.int64)),
            helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="count"),
        ],
        {},
        ["y"],
    )
    with pytest.raises(OnnxConversionError, match="node 'count' \\(Range\\).*folding limit"):
        _bounded(lambda: ge.from_onnx(model))


def test_expand_to_a_gigabyte_is_not_written_into_the_model(tmp_path):
    model = make_model(
        [
            _const("x", np.ones((1, 1), np.float32)),
            _const("shape", np.array([16384, 16384], np.int64)),
            helper.make_node("Expand", ["x", "shape"], ["y"], name="grow"),
        ],
        {},
        ["y"],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert os.path.getsize(path) < 400
    graph = _bounded(lambda: ge.from_onnx(str(path)))
    ge.save(graph, tmp_path / "m.pb")
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 10_000


def test_tile_to_huge_sizes_is_refused_and_small_tiles_match_numpy():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = make_model(
        [helper.make_node("Tile", ["x", "r"], ["y"], name="tile")],
        {"x": x},
        ["y"],
        initializers={"r": np.array([10**9, 10**9], np.int64)},
    )
    with pytest.raises(OnnxConversionError, match="node 'tile' \\(Tile\\).*bytes"):
        _bounded(lambda: ge.from_onnx(model))
    for repeats in ([3, 2], [1, 4], [0, 2], [1, 1]):
        model = make_model(
            [helper.make_node("Tile", ["x", "r"], ["y"], name="tile")],
            {"x": x},
            ["y"],
            initializers={"r": np.array(repeats, np.int64)},
        )
        graph = ge.from_onnx(model)
        out = ge.run(graph, graph.outputs[0], {graph.placeholders()[0].name: x})
        assert np.array_equal(out, np.tile(x, repeats)), repeats


def _nested_functions(depth: int, fan: int) -> onnx.ModelProto:
    """f0 = Relu; f(k) calls f(k-1) ``fan`` times in a chain: fan**depth nodes inlined."""
    functions = [
        helper.make_function(
            "local",
            "f0",
            ["x"],
            ["y"],
            [helper.make_node("Relu", ["x"], ["y"])],
            [helper.make_opsetid("", 18)],
        )
    ]
    for k in range(1, depth + 1):
        nodes, current = [], "x"
        for i in range(fan):
            out = "y" if i == fan - 1 else f"t{i}"
            nodes.append(helper.make_node(f"f{k - 1}", [current], [out], domain="local"))
            current = out
        functions.append(
            helper.make_function(
                "local",
                f"f{k}",
                ["x"],
                ["y"],
                nodes,
                [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
            )
        )
    graph = helper.make_graph(
        [helper.make_node(f"f{depth}", ["x"], ["y"], domain="local", name="top")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(
        graph,
        functions=functions,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )


def test_nested_local_functions_that_would_explode_are_refused_before_inlining():
    model = _nested_functions(depth=20, fan=2)  # 2**20 nodes once inlined
    assert len(model.SerializeToString()) < 4000
    with pytest.raises(OnnxConversionError, match="more than 500,000 nodes"):
        _bounded(lambda: ge.from_onnx(model), seconds=2)
    small = ge.from_onnx(_nested_functions(depth=3, fan=2))  # 8 Relu: fine
    out = ge.run(
        small, small.outputs[0], {small.placeholders()[0].name: np.array([-1, 2], np.float32)}
    )
    assert out.tolist() == [0, 2]


def test_a_recursive_local_function_is_refused_naming_it():
    f = helper.make_function(
        "local",
        "loop",
        ["x"],
        ["y"],
        [helper.make_node("loop", ["x"], ["y"], domain="local", name="again")],
        [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )
    graph = helper.make_graph(
        [helper.make_node("loop", ["x"], ["y"], domain="local", name="start")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        functions=[f],
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )
    with pytest.raises(OnnxConversionError, match="function 'loop' recursively"):
        ge.from_onnx(model)


def test_an_input_of_rank_100000_is_refused():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [1] * 100_000)}, ["y"]
    )
    with pytest.raises(OnnxConversionError, match="rank 100000"):
        _bounded(lambda: ge.from_onnx(model), seconds=10, megabytes=500)


def test_external_dims_of_2_to_the_62_are_refused(tmp_path):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**62, 3])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    (tmp_path / "w.bin").write_bytes(bytes(16))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ge.GraphEngineError, match="too few|bytes"):
        ge.from_onnx(str(tmp_path / "m.onnx"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_onnx_file_or_its_external_data_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(OnnxFileError, match="FIFO"):
        ge.from_onnx(str(tmp_path / "fifo.onnx"))


def test_a_hard_linked_onnx_external_file_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    os.link(secret, folder / "w.bin")
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [tensor],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), folder / "m.onnx"
    )
    with pytest.raises(OnnxFileError, match="2 hard links"):
        ge.from_onnx(str(folder / "m.onnx"))
