"""max_pool, avg_pool (1-D, 2-D, 3-D) and their gradient ops against naive numpy
references written here (loops over output positions), and their gradients by
finite differences."""

import itertools
import math

import numpy as np
import pytest

import graphengine as ge

from .spec import (
    OpSpec,
    check_build_error,
    forward_tests,
    gradient_tests,
    planned_ops_matching_unplanned,
)

R = np.random.default_rng(7)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def distinct(*shape):
    """Values 0.1 apart in random order: no ties, so max pooling has one argmax."""
    return R.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


# -- references: plain loops over output positions and window elements ------------------


def out_sizes(sizes, kernel, stride, pads, dilation, ceil_mode):
    rank, out = len(kernel), []
    for i in range(rank):
        room = sizes[i] + pads[i] + pads[rank + i] - dilation[i] * (kernel[i] - 1) - 1
        o = (-(-room // stride[i]) if ceil_mode else room // stride[i]) + 1
        if ceil_mode and (o - 1) * stride[i] >= sizes[i] + pads[i]:
            o -= 1
        out.append(o)
    return tuple(out)


def window_elements(sizes, kernel, stride, pads, dilation, position):
    """(input coordinates or None when in the padding, inside explicit padding?)
    of every element of the window at output ``position``, row-major."""
    rank = len(kernel)
    for offsets in itertools.product(*(range(k) for k in kernel)):
        coords = tuple(
            position[i] * stride[i] - pads[i] + offsets[i] * dilation[i] for i in range(rank)
        )
        inside = all(0 <= c < s for c, s in zip(coords, sizes))
        in_pads = all(-pads[i] <= coords[i] < sizes[i] + pads[rank + i] for i in range(rank))
        yield (coords if inside else None), in_pads


def pool_ref(x, kernel, stride, pads, dilation, ceil_mode, kind, count_include_pad=True):
    """(values, flat indices) for kind='max'; values for kind='avg'."""
    sizes = x.shape[2:]
    out = out_sizes(sizes, kernel, stride, pads, dilation, ceil_mode)
    y = np.zeros(x.shape[:2] + out, x.dtype)
    idx = np.zeros(x.shape[:2] + out, np.int64)
    for n, c in np.ndindex(x.shape[:2]):
        for pos in np.ndindex(out):
            elems = list(window_elements(sizes, kernel, stride, pads, dilation, pos))
            real = [e for e, _ in elems if e is not None]
            if kind == "max":
                values = [x[(n, c) + e] for e in real]
                best = int(np.argmax(values))  # the first maximum
                y[(n, c) + pos] = values[best]
                idx[(n, c) + pos] = np.ravel_multi_index((n, c) + real[best], x.shape)
            else:
                count = sum(p for _, p in elems) if count_include_pad else len(real)
                y[(n, c) + pos] = sum(x[(n, c) + e] for e in real) / count
    return (y, idx) if kind == "max" else y


def scatter_ref(dy, indices, like):
    out = np.zeros(like.size, dy.dtype)
    for value, i in zip(dy.ravel(), indices.ravel()):
        out[i] += value
    return out.reshape(like.shape)


def adjoint_ref(forward, dy, like):
    """The adjoint of the linear map ``forward``, column by column of its matrix."""
    out = np.zeros(like.shape, dy.dtype)
    for index in np.ndindex(like.shape):
        e = np.zeros(like.shape, dy.dtype)
        e[index] = 1
        out[index] = np.sum(forward(e) * dy)
    return out


# -- spec rows ---------------------------------------------------------------------------

SPECS = []

# (x shape, kernel, stride, pads, dilation, ceil_mode): 1-D, 2-D and 3-D windows.
POOL_CASES = [
    ((2, 3, 6, 4), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 2, 7, 5), (3, 2), (2, 1), (1, 1, 1, 0), (1, 1), False),
    ((1, 3, 5, 6), (3, 3), (1, 2), (2, 1, 0, 2), (1, 1), False),
    ((2, 2, 7, 6), (3, 2), (2, 2), (1, 0, 0, 1), (1, 1), True),
    ((1, 2, 8, 7), (2, 3), (1, 2), (0, 1, 1, 0), (3, 2), False),
    ((1, 2, 9, 7), (2, 2), (3, 2), (1, 0, 0, 1), (2, 2), True),
    ((2, 3, 9), (3,), (2,), (1, 1), (1,), True),
    ((2, 2, 10), (2,), (3,), (0, 1), (3,), False),
    ((1, 2, 4, 5, 6), (2, 2, 3), (2, 1, 2), (0, 1, 1, 0, 0, 1), (1, 1, 1), True),
    ((1, 1, 5, 4, 5), (2, 2, 2), (1, 2, 1), (0, 0, 0, 1, 0, 0), (2, 1, 2), False),
]
for xs, kernel, stride, pads, dil, ceil in POOL_CASES:
    attrs = {
        "kernel_size": kernel,
        "stride": stride,
        "padding": pads,
        "dilation": dil,
        "ceil_mode": ceil,
    }
    geometry = (kernel, stride, pads, dil, ceil)
    case = f"x{xs}-k{kernel}-s{stride}-p{pads}-d{dil}-ceil{int(ceil)}".replace(" ", "")
    dy_shape = xs[:2] + out_sizes(xs[2:], *geometry[:4], ceil)
    x = distinct(*xs)
    _, indices = pool_ref(x, *geometry, "max")
    SPECS += [
        OpSpec(
            "max_pool",
            lambda x, a=attrs: api.max_pool(x, **a),
            lambda x, a=geometry: pool_ref(x, *a, "max"),
            [x],
            id=case,
            batch=True,
        ),
        OpSpec(
            "max_pool_grad",
            lambda dy, i, x: api.max_pool_grad(dy, i, x, disjoint=False),
            scatter_ref,
            [u(*dy_shape), indices, u(*xs)],
            id=case,
        ),
    ]
    for include in (True, False):
        a2 = {**attrs, "count_include_pad": include}

        def avg(x, a=geometry, include=include):
            return pool_ref(x, *a, "avg", include)

        SPECS += [
            OpSpec(
                "avg_pool",
                lambda x, a=a2: api.avg_pool(x, **a),
                avg,
                [u(*xs)],
                id=f"{case}-include_pad={include}",
                batch=True,
            ),
            OpSpec(
                "avg_pool_grad",
                lambda dy, x, a=a2: api.avg_pool_grad(dy, x, **a),
                lambda dy, x, f=avg: adjoint_ref(f, dy, x),
                [u(*dy_shape), u(*xs)],
                id=f"{case}-include_pad={include}",
            ),
        ]

# The gradient of a disjoint max pool (stride >= window) stores instead of adding.
_x = distinct(2, 3, 6, 4)
SPECS += [
    OpSpec(
        "max_pool_grad",
        lambda dy, i, x: api.max_pool_grad(dy, i, x, disjoint=True),
        scatter_ref,
        [u(2, 3, 3, 2), pool_ref(_x, (2, 2), (2, 2), (0,) * 4, (1, 1), False, "max")[1], _x],
        id="disjoint",
        order2=True,
    ),
    OpSpec(
        "max_pool",
        lambda x: ge.max_pool2d(x, 3, stride=1, padding="same"),
        lambda x: pool_ref(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False, "max")[0],
        [distinct(1, 2, 4, 5)],
        id="same",
    ),
    OpSpec(
        "avg_pool",
        lambda x: ge.avg_pool3d(x, 2, ceil_mode=True),
        lambda x: pool_ref(x, (2, 2, 2), (2, 2, 2), (0,) * 6, (1, 1, 1), True, "avg"),
        [u(1, 2, 3, 4, 5)],
        id="frontend-3d",
        order2=True,
    ),
    OpSpec(
        "max_pool",
        lambda x: ge.max_pool1d(x, 2, stride=1, dilation=2, return_indices=True),
        lambda x: pool_ref(x, (2,), (1,), (0, 0), (2,), False, "max"),
        [distinct(2, 3, 7)],
        id="frontend-1d",
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shapes and attributes -----------------------------------------------------------------


def test_pool_stride_defaults_to_kernel_size():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 9, 6))
    y = ge.avg_pool2d(x, (3, 2))
    assert y.shape == ("N", 2, 3, 3)
    assert g.node(y.node).attrs["stride"] == (3, 2)


def test_ceil_mode_drops_a_window_that_starts_in_the_padding():
    g = ge.Graph()
    x = g.placeholder("x", (None, 1, 5, 5))
    # (5 + 1 - 2) / 2 rounds up to 2, + 1 = 3 windows; the third starts at 4 < 5 + 0.
    assert ge.max_pool2d(x, 2, padding=(0, 0, 1, 1), ceil_mode=True).shape == ("N", 1, 3, 3)
    # (5 + 2 - 3) / 2 = 2, + 1 = 3 either way
    assert ge.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True).shape == ("N", 1, 3, 3)
    y = g.placeholder("y", (None, 1, 6))
    # room 6 + 1 - 2 = 5 -> ceil(5 / 2) + 1 = 4, but window 4 would start at 6 >= 6 + 0.
    assert ge.avg_pool1d(y, 2, stride=2, padding=(0, 1), ceil_mode=True).shape == ("N", 1, 3)


def test_max_pool_gradient_uses_the_forward_indices():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 4), "float64")
    loss = ge.sum(ge.max_pool2d(x, 2) * 3.0)
    tg = ge.gradients(g, loss, ["x"])
    ops = [n.op for n in tg.nodes]
    assert "max_pool_grad" in ops and ops.count("max_pool") == 1
    grad = ge.run(tg, tg.gradient.grads["x"], {"x": distinct(2, 2, 6, 4)})
    assert np.count_nonzero(grad) == 2 * 2 * 3 * 2 and np.all(grad[grad != 0] == 3.0)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda g, x: ge.max_pool2d(x, 0), "kernel_size must be 1, 2 or 3 positive ints"),
        (lambda g, x: ge.max_pool2d(x, 2, padding=2), "must be smaller than the kernel"),
        (lambda g, x: ge.avg_pool2d(x, 9), "the window spans 9 along the height"),
        (lambda g, x: ge.max_pool3d(x, 2), "a 3-D pool needs x of rank 5"),
        (lambda g, x: ge.avg_pool2d(x, 2, dilation=(1, 0)), "dilation must be 2 positive ints"),
        (
            lambda g, x: ge.max_pool2d(x, 2, padding=(1, 1, 1)),
            "padding must be 4 non-negative ints",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


def test_conv_and_pool_gradients_with_symbolic_batch():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 5), "float64")
    w = g.parameter("w", u(3, 2, 3, 2))
    h = ge.max_pool2d(ge.conv2d(x, w, stride=(1, 2), padding=1), 2, stride=1)
    loss = ge.sum(ge.avg_pool2d(h, (2, 1), padding=(1, 0), ceil_mode=True) * 0.5)
    result = ge.gradcheck(g, loss, ["x", "w"], {"x": distinct(3, 2, 6, 5)})
    assert result.ok, str(result)


def test_max_pool_indices_count_through_batch_and_channels():
    x = distinct(2, 3, 4, 4)
    g = ge.Graph()
    xt = g.placeholder("x", x.shape, "float64")
    y, i = ge.max_pool2d(xt, 2, return_indices=True)
    out = ge.run(g, [y, i], {"x": x})
    np.testing.assert_array_equal(x.reshape(-1)[out[i.name]], out[y.name])
    assert out[i.name].max() < math.prod(x.shape)


# Geometries that take the tiled path (stride = kernel, no padding, windows inside
# the input, possibly leaving a remainder) and ones that take the strided path.
TIE_CASES = [
    ((2, 3, 6, 4), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 2, 7, 5), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((1, 2, 9), (3,), (3,), (0, 0), (1,), False),
    ((1, 2, 4, 6, 5), (2, 3, 2), (2, 3, 2), (0,) * 6, (1, 1, 1), False),
    ((2, 2, 7, 5), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),
    ((2, 2, 7, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((1, 2, 8, 7), (2, 3), (1, 2), (0, 1, 1, 0), (2, 1), False),
]


@pytest.mark.parametrize("xs, kernel, stride, pads, dil, ceil", TIE_CASES)
def test_max_pool_ties_pick_the_first_maximum(xs, kernel, stride, pads, dil, ceil):
    x = R.integers(-2, 3, size=xs).astype(np.float32)  # many ties in every window
    attrs = dict(kernel_size=kernel, stride=stride, padding=pads, dilation=dil, ceil_mode=ceil)
    y, indices = ge.ops.registry.REGISTRY["max_pool"].kernel(x, **attrs)
    ref_y, ref_indices = pool_ref(x, kernel, stride, pads, dil, ceil, "max")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(indices, ref_indices)
    assert y.dtype == np.float32 and indices.dtype == np.int64


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 2), (1, 2))])
def test_max_pool_propagates_nan_and_points_at_it(kernel, stride):
    x = distinct(1, 2, 6, 4)
    x[0, 1, 3, 1] = x[0, 1, 2, 3] = np.nan
    attrs = dict(kernel_size=kernel, stride=stride, padding=(0,) * 4, dilation=(1, 1))
    y, indices = ge.ops.registry.REGISTRY["max_pool"].kernel(x, ceil_mode=False, **attrs)
    nan = np.isnan(y)
    assert nan.any() and not nan[0, 0].any()
    # every NaN maximum points at a NaN, every other maximum at its value
    assert np.isnan(x.reshape(-1)[indices[nan]]).all()
    np.testing.assert_array_equal(x.reshape(-1)[indices[~nan]], y[~nan])
    ref_y, ref_indices = pool_ref(
        np.nan_to_num(x, nan=9.0), kernel, stride, (0,) * 4, (1, 1), False, "max"
    )
    np.testing.assert_array_equal(indices, ref_indices)  # the first NaN, as if it were largest


def test_max_pool_with_more_than_256_window_positions():
    x = distinct(1, 1, 18, 17)
    y, indices = ge.ops.registry.REGISTRY["max_pool"].kernel(
        x, kernel_size=(17, 17), stride=(1, 1), padding=(0,) * 4, dilation=(1, 1), ceil_mode=False
    )
    ref_y, ref_indices = pool_ref(x, (17, 17), (1, 1), (0,) * 4, (1, 1), False, "max")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(indices, ref_indices)


@pytest.mark.parametrize(
    "kernel, stride",
    [(2, 2), (3, 2)],  # disjoint windows (a store), overlapping ones (a sum)
)
def test_fused_training_plan_masks_relu_at_the_pooled_size(kernel, stride):
    """The fuse pass turns relu_grad(max_pool_grad(dy, i, r), r) into
    max_pool_grad(relu_grad(dy, max_pool(r)), i, r), and max_pool(relu(z)) into
    relu(max_pool(z)): the same gradients, bit for bit, with ties (relu's
    zeros), NaN and negative values in the windows, and relu runs at the pooled
    size only.  The bias gradient, sum_like(max_pool_grad(m, i, r), b), sums m
    instead (the same numbers in another order, so equal up to rounding)."""
    from graphengine.executor import compile_plan
    from graphengine.training.trainer import compile_training_plan

    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 9, 8))
    b = g.parameter("b", R.standard_normal((3, 1, 1)).astype(np.float32))
    pooled = ge.max_pool2d(ge.relu(x + b), kernel, stride=stride)
    loss = ge.sum(pooled * pooled * g.constant(R.standard_normal(pooled.shape[1:]).astype("f")))
    tg = ge.gradients(g, loss, ["b", "x"])
    fetches = [tg.gradient.grads["b"], tg.gradient.grads["x"]]
    feed = {"x": R.standard_normal((4, 3, 9, 8)).astype(np.float32)}
    feed["x"][0, 0, :3, :3] = -5.0  # an all-zero window after relu: ties at 0
    feed["x"][1, 2, 4, 4] = np.nan
    plan = compile_training_plan(tg, fetches, ["x"])
    ops = [s.node.op for s in plan.steps]
    relu_grads = [s for s in plan.steps if s.node.op == "relu_grad"]
    assert ops.count("max_pool_grad") == 1 and len(relu_grads) == 1, ops
    assert ops.index("relu_grad") < ops.index("max_pool_grad")
    # Reordered: max_pool, then relu on the pooled maxima; relu(x + b) is gone.
    assert ops.index("max_pool") < ops.index("relu")
    (relu,) = [s.node for s in plan.steps if s.node.op == "relu"]
    assert relu.types[0].shape[1:] == pooled.shape[1:]
    (bias_sum,) = [s for s in plan.steps if s.node.op == "sum_like"]
    assert plan.steps[ops.index("relu_grad")].outputs[0] in bias_sum.inputs
    want = compile_plan(tg, fetches, ["x"]).run(feed)
    for _ in range(2):  # the recording run, then the planned one
        db, dx = plan.run(feed)
        np.testing.assert_allclose(db, want[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(dx, want[1])


def test_a_bias_that_keeps_a_spatial_axis_is_summed_at_full_size():
    """Only a per-channel sum of max_pool_grad's output may read the pooled
    gradient instead: a bias per column (W,) keeps the column axis, whose sums
    differ, so its sum_like stays on the full-size gradient."""
    from graphengine.executor import compile_plan
    from graphengine.training.trainer import compile_training_plan

    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 6))
    b = g.parameter("b", R.standard_normal(6).astype(np.float32))
    pooled = ge.max_pool2d(ge.relu(x + b), 2)
    tg = ge.gradients(g, ge.sum(pooled * pooled), ["b"])
    fetches = [tg.gradient.grads["b"]]
    plan = compile_training_plan(tg, fetches, ["x"])
    (total,) = [s for s in plan.steps if s.node.op in ("sum_like", "sum_rows")]
    spread = [s for s in plan.steps if s.node.op == "max_pool_grad"]
    assert spread and spread[0].outputs[0] in total.inputs
    feed = {"x": R.standard_normal((3, 2, 6, 6)).astype(np.float32)}
    want = compile_plan(tg, fetches, ["x"]).run(feed)
    for _ in range(2):
        np.testing.assert_allclose(plan.run(feed)[0], want[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("other_use", ["read", "indices"])
def test_relu_and_max_pool_keep_their_order_when_relu_or_the_indices_feed_more(other_use):
    """max_pool(relu(z)) is reordered only when relu's output feeds nothing but
    the pool and its gradient, and the indices only the gradient: here relu's
    output is also summed into the loss, or the indices feed a gather, and the
    plan keeps relu before the pool, with the same results as an unfused run."""
    from graphengine.executor import compile_plan
    from graphengine.training.trainer import compile_training_plan

    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 6))
    b = g.parameter("b", R.standard_normal((2, 1, 1)).astype(np.float32))
    r = ge.relu(x + b)
    pooled, indices = ge.max_pool2d(r, 2, return_indices=True)
    loss = ge.sum(pooled * pooled)
    if other_use == "read":
        loss = loss + ge.sum(r)
    else:
        loss = loss + ge.sum(ge.take(ge.reshape(x, (-1,)), indices))
    tg = ge.gradients(g, loss, ["b", "x"])
    fetches = [tg.gradient.loss, tg.gradient.grads["b"], tg.gradient.grads["x"]]
    feed = {"x": R.standard_normal((3, 2, 6, 6)).astype(np.float32)}
    plan = compile_training_plan(tg, fetches, ["x"])
    ops = [s.node.op for s in plan.steps]
    assert ops.index("relu") < ops.index("max_pool"), ops
    want = compile_plan(tg, fetches, ["x"]).run(feed)
    for _ in range(2):
        for have, expected in zip(plan.run(feed), want):
            np.testing.assert_array_equal(have, expected)


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), ((2, 3), (2, 3), 0)])
def test_planned_max_pool_and_its_gradient_match_the_kernels(kernel, stride, padding):
    """max_pool (tiled windows or not) and max_pool_grad write into the plan's
    buffers: planned runs equal the unplanned first run bit for bit, NaN and
    ties included, and both steps got buffers."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 8, 9))
    w = g.parameter("w", R.standard_normal((3, 1, 1)).astype(np.float32))
    y, indices = ge.max_pool2d(
        ge.relu(x * w), kernel, stride=stride, padding=padding, return_indices=True
    )
    loss = ge.sum(y * y)
    tg = ge.gradients(g, loss, ["w", "x"])
    fetches = [y.name, indices.name, tg.gradient.grads["w"], tg.gradient.grads["x"]]
    feed = {"x": R.standard_normal((2, 3, 8, 9)).astype(np.float32)}
    feed["x"][1, 2, 3, 3] = np.nan
    planned = planned_ops_matching_unplanned(tg, fetches, feed)
    disjoint = kernel == stride
    assert "max_pool" in planned and ("max_pool_grad" in planned) == disjoint, planned


@pytest.mark.parametrize(
    ("shape", "padding", "value", "full"),
    [
        ((2, 3, 5, 4), (1, 1, 1, 1), 0.0, None),
        ((2, 3, 5, 4), (0, 2, 1, 0), -np.inf, None),
        ((1, 2, 6), (1, 0), 0.0, (9,)),  # full extends the end padding
        ((1, 1, 3, 3, 3), (0, 1, 2, 1, 0, 0), 7.5, None),
        ((2, 3, 5, 4), (0, 0, 0, 0), 0.0, None),
    ],
)
def test_pad_spatial_is_numpy_pad_with_a_constant(shape, padding, value, full):
    # pad_spatial fills and copies instead of calling np.pad (whose Python work
    # cost a fifth of a small convolution); the values must be np.pad's.
    from graphengine.ops.window import pad_spatial

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rank = len(shape) - 2
    widths = [(padding[i], padding[rank + i]) for i in range(rank)]
    if full is not None:
        widths = [(b, max(e, f - b - s)) for (b, e), f, s in zip(widths, full, shape[2:])]
    expected = np.pad(x, [(0, 0), (0, 0), *widths], constant_values=value)
    got = pad_spatial(x, padding, value, full)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, expected)
