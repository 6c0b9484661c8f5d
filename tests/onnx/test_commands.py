"""``graphengine import`` and ``graphengine export``."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper

import graphengine as ge
from graphengine.cli.main import main


def small_onnx(path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(np.ones((2, 3), np.float32), "w"),
            numpy_helper.from_array(np.zeros(3, np.float32), "b"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_import_then_export(tmp_path, capsys):
    small_onnx(tmp_path / "small.onnx")
    assert (
        main(
            [
                "import",
                str(tmp_path / "small.onnx"),
                "-o",
                str(tmp_path / "small.pbtxt"),
                "--freeze",
                "b",
                "--name",
                "renamed",
            ]
        )
        == 0
    )
    assert "2 parameters (1 trainable), outputs y" in capsys.readouterr().out
    graph = ge.load(tmp_path / "small.pbtxt")
    assert graph.name == "renamed" and not graph.node("b").attrs["trainable"]

    assert (
        main(
            [
                "export",
                str(tmp_path / "small.pbtxt"),
                "-o",
                str(tmp_path / "back.onnx"),
                "--opset",
                "13",
            ]
        )
        == 0
    )
    assert "opset 13" in capsys.readouterr().out
    model = onnx.load(tmp_path / "back.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["graphengine.frozen"] == "b"


def test_errors_are_one_line(tmp_path, capsys):
    small_onnx(tmp_path / "small.onnx")
    assert (
        main(
            [
                "import",
                str(tmp_path / "small.onnx"),
                "-o",
                str(tmp_path / "s.pb"),
                "--freeze",
                "nope",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("graphengine import: OnnxConversionError: cannot freeze 'nope'")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.pb").exists()
    g = ge.Graph("g")
    x = g.placeholder("x", (2,))
    g.mark_output(ge.exp(x))
    g.save(tmp_path / "g.pb")
    assert (
        main(["export", str(tmp_path / "g.pb"), "-o", str(tmp_path / "g.onnx"), "--opset", "9"])
        == 1
    )
    assert "opset 9" in capsys.readouterr().err
