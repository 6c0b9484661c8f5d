"""resize against references written with np.interp and plain indexing, its
gradient (and resize_grad's) by finite differences, second order included."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(21)


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


def along(x, axis, fn):
    return np.apply_along_axis(fn, axis, x)


def linear_1d(row, out_size, source):
    """Linear interpolation at source coordinates, clamped to the edges (ONNX's)."""
    xs = np.clip(source(np.arange(out_size)), 0, len(row) - 1)
    return np.interp(xs, np.arange(len(row)), row)


def linear_ref(x, sizes, mode):
    out = x.astype(np.float64)
    for axis, size in enumerate(sizes):
        n = out.shape[axis]
        if size == n:
            continue
        if mode == "align_corners":

            def source(j, n=n, size=size):
                return j * (n - 1) / (size - 1)
        else:

            def source(j, n=n, size=size):
                return (j + 0.5) * n / size - 0.5

        out = along(out, axis, lambda row, size=size, source=source: linear_1d(row, size, source))
    return out.astype(x.dtype)


def nearest_ref(x, scales):
    """asymmetric + floor: output j takes input floor(j / scale)."""
    out = x
    for axis, scale in enumerate(scales):
        n = out.shape[axis]
        index = np.minimum(np.floor(np.arange(int(n * scale)) / scale).astype(int), n - 1)
        out = np.take(out, index, axis=axis)
    return out


def api_resize(sizes, scales, **attrs):
    return lambda x: ge.resize(x, sizes=sizes, scales=scales, **attrs)


SPECS = [
    OpSpec(
        "resize",
        api_resize((2, 3, 6, 10), (1.0, 1.0, 2.0, 2.0), mode="linear"),
        lambda x: linear_ref(x, (2, 3, 6, 10), "half_pixel"),
        [u(2, 3, 3, 5)],
        id="linear-up",
        order2=True,
    ),
    OpSpec(
        "resize",
        api_resize((-1, 3, 2), (1.0, 1.0, 0.4), mode="linear"),
        lambda x: linear_ref(x, (x.shape[0], 3, 2), "half_pixel"),
        [u(2, 3, 5)],
        id="linear-down-batch",
        batch=True,
    ),
    OpSpec(
        "resize",
        api_resize(
            (4, 7), (4 / 3, 7 / 5), mode="linear", coordinate_transformation_mode="align_corners"
        ),
        lambda x: linear_ref(x, (4, 7), "align_corners"),
        [u(3, 5)],
        id="align_corners",
        order2=True,
    ),
    OpSpec(
        "resize",
        api_resize(
            (1, 2, 6, 4),
            (1.0, 1.0, 3.0, 2.0),
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        lambda x: nearest_ref(x, (1, 1, 3, 2)),
        [u(1, 2, 2, 2)],
        id="nearest",
    ),
    OpSpec(
        "resize",
        api_resize((5, 3), (5 / 4, 0.75), mode="cubic", exclude_outside=True, cubic_coeff_a=-0.5),
        lambda x: ge_reference(
            x, (5, 3), (5 / 4, 0.75), mode="cubic", exclude_outside=True, cubic_coeff_a=-0.5
        ),
        [u(4, 4)],
        id="cubic",
        order2=True,
        rtol=1e-5,
        atol=2e-6,
    ),
    OpSpec(
        "resize",
        api_resize((2, 3), (0.5, 0.6), mode="linear", antialias=True),
        lambda x: ge_reference(x, (2, 3), (0.5, 0.6), mode="linear", antialias=True),
        [u(4, 5)],
        id="antialias",
    ),
    OpSpec(
        "resize",
        api_resize(
            (3, 4),
            (0.75, 0.8),
            mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize",
            roi=(0.2, -0.1, 0.9, 1.3),
            extrapolation_value=2.0,
        ),
        lambda x: ge_reference(
            x,
            (3, 4),
            (0.75, 0.8),
            mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize",
            roi=(0.2, -0.1, 0.9, 1.3),
            extrapolation_value=2.0,
        ),
        [u(4, 5)],
        id="crop",
    ),
]


def resize_grad_ref(dy, like):
    """A^T dy along axis 1, A's columns being the resized unit vectors."""
    n, size = like.shape[1], dy.shape[1]
    columns = np.stack(
        [linear_ref(np.eye(n)[k][None], (1, size), "half_pixel")[0] for k in range(n)]
    )  # (n, size): row k = A e_k
    return (dy @ columns.T).astype(dy.dtype)


SPECS.append(
    OpSpec(
        "resize_grad",
        lambda dy, like: ge.ops.api.resize_grad(
            dy, like, sizes=(-1, 10), scales=(1.0, 2.0), mode="linear"
        ),
        resize_grad_ref,
        [u(3, 10), u(3, 5)],
        grad=(0,),
        order2=True,
    )
)


def ge_reference(x, sizes, scales, **attrs):
    """onnx's reference evaluator where installed (the cubic, antialias and crop
    formulas are ONNX's own); the test skips without onnx.  Its cubic weights are
    rounded to float32 (cubic_coeff_a is a float32 attribute), ours are float64:
    those rows compare to 1e-5."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    roi = attrs.pop("roi", None)
    inputs = ["x", "roi" if roi is not None else "", "", "sizes"]
    inits = [numpy_helper.from_array(np.array(sizes, np.int64), "sizes")]
    if roi is not None:
        inits.append(numpy_helper.from_array(np.array(roi, np.float64), "roi"))
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    model = helper.make_model(
        helper.make_graph(
            [node],
            "r",
            [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, x.shape)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, None)],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 19)],
    )
    return ReferenceEvaluator(model).run(None, {"x": x.astype(np.float64)})[0].astype(x.dtype)


test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


def test_resize_grad_is_the_adjoint_and_differentiates_back():
    g = ge.Graph()
    x = g.placeholder("x", (3, 4), "float64")
    dy = g.placeholder("dy", (5, 7), "float64")
    attrs = dict(sizes=(5, 7), scales=(5 / 3, 7 / 4), mode="cubic")
    y = ge.resize(x, **attrs)
    back = ge.ops.api.resize_grad(dy, x, **attrs)
    xv, dyv = u(3, 4), u(5, 7)
    got = ge.run(g, [y, back], {"x": xv, "dy": dyv})
    # <A x, dy> == <x, A^T dy>
    assert np.isclose(np.sum(got[y.name] * dyv), np.sum(xv * got[back.name]), rtol=1e-12)
    loss = ge.sum(ge.square(back))
    result = ge.gradcheck(g, loss, ["dy"], {"x": xv, "dy": dyv})
    assert result.ok, result


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        (dict(sizes=(4,), scales=(2.0,)), "one entry per axis of x (rank 2)"),
        (dict(sizes=(4, 4), scales=(2.0, 0.0)), "scales must be positive"),
        (
            dict(sizes=(4, 4), scales=(2.0, 2.0), mode="nearest", antialias=True),
            "antialias applies to the linear and cubic modes only",
        ),
    ],
)
def test_build_errors(attrs, fragment):
    check_build_error(lambda g, x: ge.resize(x, **attrs), fragment, (2, 2))
