"""ONNX Conv and ConvTranspose at spatial rank 1, 2 and 3 (imported against
onnxruntime, exported and round-tripped), and MaxPool's storage_order=1 indices."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import graphengine as ge
from graphengine.onnx import OnnxConversionError

from ..onnx_helpers import check, make_model, node, run_imported
from .test_export import check_export

rng = np.random.default_rng(12)


def f32(*shape):
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


# -- import: Conv --------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, w shape, attributes), the bias given in every case with "b"
    ((2, 3, 11), (4, 3, 3), {"pads": [2, 1], "strides": [2]}),
    ((2, 4, 10), (6, 2, 3), {"group": 2, "dilations": [2]}),
    ((2, 4, 9), (4, 1, 3), {"group": 4, "auto_pad": "SAME_UPPER"}),  # depthwise
    ((1, 2, 8), (3, 2, 4), {"auto_pad": "SAME_LOWER", "strides": [3]}),
    ((1, 2, 8), (3, 2, 4), {"auto_pad": "VALID"}),
    ((2, 3, 5, 6, 4), (4, 3, 3, 2, 3), {"pads": [1, 0, 2, 0, 1, 1], "strides": [1, 2, 1]}),
    ((1, 4, 6, 5, 7), (6, 2, 2, 3, 3), {"group": 2, "dilations": [2, 1, 2]}),
    ((1, 3, 5, 6, 7), (3, 1, 3, 3, 3), {"group": 3, "auto_pad": "SAME_UPPER", "strides": [2] * 3}),
    ((1, 2, 5, 6, 4), (2, 2, 2, 3, 2), {"auto_pad": "SAME_LOWER", "kernel_shape": [2, 3, 2]}),
    ((2, 3, 7, 6), (4, 3, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),  # 2-D: conv2d
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0]) - 2}d-{c[2]}")
def test_conv_matches_onnxruntime(case):
    xs, ws, attrs = case
    feeds = {"x": f32(*xs), "w": f32(*ws), "b": f32(ws[0])}
    check([node("Conv", ["x", "w", "b"], **attrs)], feeds)
    check([node("Conv", ["x", "w"], **attrs)], {"x": feeds["x"], "w": feeds["w"]})


def test_conv_uses_the_nd_op_for_1d_and_3d_and_conv2d_for_2d():
    for xs, ws, op in [((1, 2, 9), (3, 2, 3), "conv"), ((1, 2, 5, 6, 4), (3, 2, 2, 2, 2), "conv")]:
        model = make_model([node("Conv", ["x", "w"])], {"x": f32(*xs), "w": f32(*ws)}, ["y"])
        ops = [n.op for n in ge.from_onnx(model).nodes]
        assert op in ops and "expand_dims" not in ops, ops
    model = make_model(
        [node("Conv", ["x", "w"])], {"x": f32(1, 2, 5, 6), "w": f32(3, 2, 2, 2)}, ["y"]
    )
    assert "conv2d" in [n.op for n in ge.from_onnx(model).nodes]


# -- import: ConvTranspose ---------------------------------------------------------------------

TRANSPOSE_CASES = [
    ((2, 3, 5), (3, 2, 3), {"strides": [2], "pads": [1, 0], "output_padding": [1]}),
    ((1, 4, 6), (4, 3, 4), {"group": 2, "strides": [3], "dilations": [2]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [12]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 5), (2, 3, 4), {"strides": [3], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 5), (2, 3, 4), {"auto_pad": "VALID"}),
    ((2, 3, 3, 4, 2), (3, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]}),
    (
        (1, 4, 2, 3, 3),
        (4, 1, 3, 2, 2),
        {"group": 4, "strides": [1, 2, 2], "dilations": [2, 1, 1], "output_padding": [0, 1, 1]},
    ),
    ((1, 2, 3, 3, 4), (2, 3, 3, 3, 3), {"strides": [2] * 3, "output_shape": [7, 6, 8]}),
    ((1, 2, 3, 3, 4), (2, 3, 3, 2, 3), {"strides": [2, 2, 1], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_padding": [1, 0]}),  # 2-D
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: f"{len(c[0]) - 2}d-{c[2]}")
def test_conv_transpose_matches_onnxruntime(case):
    xs, ws, attrs = case
    groups = attrs.get("group", 1)
    feeds = {"x": f32(*xs), "w": f32(*ws), "b": f32(ws[1] * groups)}
    check([node("ConvTranspose", ["x", "w", "b"], **attrs)], feeds)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, xs, ws, attrs, fragment",
    [
        ("Conv", (1, 2, 3, 3, 3, 3), (2, 2, 1, 1, 1, 1), {}, "only 1-D, 2-D and 3-D"),
        ("Conv", (1, 2, 5, 5, 5), (2, 2, 3, 3), {}, "weights of the input's rank"),
        ("Conv", (1, 2, 8), (3, 2, 3), {"kernel_shape": [2]}, "kernel_shape [2] differs"),
        ("Conv", (1, 3, 8), (4, 1, 3), {"group": 2}, "not divisible by groups=2"),
        ("Conv", (1, 2, 4, 4, 4), (3, 2, 5, 3, 3), {}, "the window spans 5 along the depth"),
        ("ConvTranspose", (1, 2, 4, 4, 4), (2, 3, 3, 3, 3), {"pads": [9] * 6}, "leaves no output"),
    ],
)
def test_bad_convolutions_are_refused_naming_the_node(op, xs, ws, attrs, fragment):
    inputs = {"x": f32(*xs), "w": f32(*ws)}
    graph = onnx.helper.make_graph(
        [node(op, ["x", "w"], name="c1", **attrs)],
        "g",
        [
            onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, v.shape)
            for k, v in inputs.items()
        ],
        [onnx.helper.make_empty_tensor_value_info("y")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(OnnxConversionError, match=f"node 'c1' \\({op}\\)") as info:
        ge.from_onnx(model)
    assert fragment in str(info.value)


# -- export and the round trip ---------------------------------------------------------------


def test_nd_convolutions_export_and_round_trip():
    g = ge.Graph("conv_nd")
    s = g.placeholder("s", (2, 4, 11))
    v = g.placeholder("v", (2, 3, 5, 6, 4))
    outputs = [
        ge.conv(s, g.parameter("w1", f32(6, 2, 3)), g.parameter("b1", f32(6)), 2, (1, 2), 2, 2),
        ge.conv(s, g.parameter("wd", f32(4, 1, 3)), padding="same", groups=4),
        ge.conv_transpose(s, g.parameter("wt1", f32(4, 3, 3)), stride=2, output_padding=1),
        ge.conv(
            v, g.parameter("w3", f32(4, 3, 3, 2, 3)), stride=(1, 2, 1), padding=(1, 0, 2, 0, 1, 1)
        ),
        ge.conv_transpose(
            v,
            g.parameter("wt3", f32(3, 2, 2, 3, 2)),
            g.parameter("bt3", f32(2)),
            stride=(2, 1, 2),
            padding=(1, 0, 0, 0, 1, 1),
            dilation=(1, 2, 1),
            output_padding=(1, 0, 1),
        ),
    ]
    for out in outputs:
        g.mark_output(out)
    check_export(g, {"s": f32(2, 4, 11), "v": f32(2, 3, 5, 6, 4)})
    ops = {n.op for n in ge.from_onnx(ge.to_onnx(g)).nodes}
    assert {"conv", "conv_transpose"} <= ops


# -- MaxPool storage_order=1 -----------------------------------------------------------------


def column_major(indices, shape):
    """Row-major flat indices into ``shape`` (N, C, *spatial) as column-major ones
    within each (n, c) plane, computed here with numpy's own index helpers."""
    plane = int(np.prod(shape[2:]))
    start, within = np.divmod(indices, plane)
    positions = np.unravel_index(within, shape[2:])
    return start * plane + np.ravel_multi_index(positions, shape[2:], order="F")


@pytest.mark.parametrize(
    "xs, attrs",
    [
        ((2, 3, 5, 7), {"kernel_shape": [2, 3], "strides": [1, 2]}),
        ((1, 2, 6, 5), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 1]}),
        ((2, 2, 4, 5, 6), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2]}),
        ((1, 3, 9), {"kernel_shape": [3], "strides": [2]}),  # 1-D: both orders agree
    ],
)
def test_max_pool_column_major_indices(xs, attrs):
    x = f32(*xs)
    nodes = [node("MaxPool", ["x"], ["y", "i"], storage_order=1, **attrs)]
    y, indices = run_imported(make_model(nodes, {"x": x}, ["y", "i"]), {"x": x})
    row = run_imported(
        make_model([node("MaxPool", ["x"], ["y", "i"], **attrs)], {"x": x}, ["y", "i"]), {"x": x}
    )[1]
    np.testing.assert_array_equal(indices, column_major(row, xs))
    if len(xs) == 3:
        np.testing.assert_array_equal(indices, row)
    # The column-major index picks the maximum out of x in Fortran order.
    flat = np.concatenate([p.reshape(-1, order="F") for p in x.reshape((-1,) + xs[2:])])
    np.testing.assert_array_equal(flat[indices], y)
    if len(xs) == 4:  # onnxruntime implements storage_order for 2-D
        check(nodes, {"x": x}, ["y", "i"])


def test_max_pool_storage_order_must_be_0_or_1():
    x = f32(1, 2, 4, 4)
    model = make_model(
        [node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])], {"x": x}, ["y", "i"]
    )
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("storage_order", 2))
    with pytest.raises(OnnxConversionError, match="storage_order must be 0"):
        ge.from_onnx(model)
