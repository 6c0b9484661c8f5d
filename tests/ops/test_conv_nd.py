"""conv, conv_transpose (1-D, 2-D, 3-D) and their backprop ops against naive numpy
references written here, their gradients by finite differences (first and second
order), and a second opinion from torch.nn.functional where torch is installed."""

import itertools

import numpy as np
import pytest

import graphengine as ge
from graphengine.ops import conv_nd

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(16)
api = ge.ops.api


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


# -- references: plain loops over output positions ------------------------------------------


def pad_nd(x, pads):
    rank = x.ndim - 2
    out = np.zeros(
        x.shape[:2] + tuple(x.shape[2 + i] + pads[i] + pads[rank + i] for i in range(rank)),
        x.dtype,
    )
    out[(slice(None),) * 2 + tuple(slice(p, p + s) for p, s in zip(pads, x.shape[2:]))] = x
    return out


def out_sizes(x_shape, w_shape, stride, pads, dilation):
    rank = len(x_shape) - 2
    return tuple(
        (x_shape[2 + i] + pads[i] + pads[rank + i] - dilation[i] * (w_shape[2 + i] - 1) - 1)
        // stride[i]
        + 1
        for i in range(rank)
    )


def patch(p, kernel, stride, dilation):
    """The index of the padded input elements that output position p reads."""
    return (slice(None),) * 2 + tuple(
        slice(q * s, q * s + d * (k - 1) + 1, d) for q, k, s, d in zip(p, kernel, stride, dilation)
    )


def grouped(ref, n, split_axes, out_axis):
    """ref applied to each of n groups: array argument i split along
    split_axes[i], the rest passed whole, the results concatenated on out_axis."""

    def run(*args):
        arrays, rest = args[: len(split_axes)], args[len(split_axes) :]
        pieces = zip(*(np.split(a, n, axis) for a, axis in zip(arrays, split_axes)))
        return np.concatenate([ref(*p, *rest) for p in pieces], axis=out_axis)

    return run


def conv_ref(x, w, stride, pads, dilation):
    xp = pad_nd(x, pads)
    out = out_sizes(x.shape, w.shape, stride, pads, dilation)
    y = np.zeros((x.shape[0], w.shape[0]) + out, x.dtype)
    for p in itertools.product(*(range(o) for o in out)):
        window = xp[patch(p, w.shape[2:], stride, dilation)]
        y[(slice(None),) * 2 + p] = np.tensordot(window, w, axes=(range(1, x.ndim),) * 2)
    return y


def input_grad_ref(dy, w, like, stride, pads, dilation):
    xp = np.zeros(pad_nd(like, pads).shape, dy.dtype)
    for p in itertools.product(*(range(o) for o in dy.shape[2:])):
        xp[patch(p, w.shape[2:], stride, dilation)] += np.tensordot(
            dy[(slice(None),) * 2 + p], w, axes=(1, 0)
        )
    crop = tuple(slice(b, b + s) for b, s in zip(pads, like.shape[2:]))
    return xp[(slice(None),) * 2 + crop]


def filter_grad_ref(x, dy, like, stride, pads, dilation):
    xp = pad_nd(x, pads)
    dw = np.zeros(like.shape, x.dtype)
    for p in itertools.product(*(range(o) for o in dy.shape[2:])):
        window = xp[patch(p, like.shape[2:], stride, dilation)]
        dw += np.tensordot(dy[(slice(None),) * 2 + p], window, axes=(0, 0))
    return dw


def conv_transpose_ref(x, w, stride, pads, dilation, groups, extra):
    rank = x.ndim - 2
    sizes = tuple(
        (x.shape[2 + i] - 1) * stride[i]
        + dilation[i] * (w.shape[2 + i] - 1)
        + 1
        - pads[i]
        - pads[rank + i]
        + extra[i]
        for i in range(rank)
    )
    out = []
    for xg, wg in zip(np.split(x, groups, axis=1), np.split(w, groups, axis=0)):
        like = np.zeros((x.shape[0], w.shape[1]) + sizes, x.dtype)
        out.append(input_grad_ref(xg, wg, like, stride, pads, dilation))
    return np.concatenate(out, axis=1)


# -- spec rows ------------------------------------------------------------------------------

# (x shape, w shape, stride, pads (begins, then ends), dilation, groups, order 2);
# every case has dims that all differ, asymmetric pads, and both 1-D and 3-D.
CONV_CASES = [
    ((2, 3, 9), (4, 3, 3), (1,), (0, 0), (1,), 1, True),
    ((2, 4, 11), (6, 2, 3), (2,), (2, 1), (2,), 2, False),
    ((3, 4, 8), (4, 1, 4), (3,), (1, 2), (1,), 4, True),  # depthwise
    ((1, 2, 6, 5), (3, 2, 2, 3), (2, 1), (1, 0, 0, 2), (1, 2), 1, False),
    ((2, 2, 4, 5, 3), (3, 2, 2, 3, 2), (1, 2, 1), (1, 0, 1, 0, 2, 1), (1, 1, 2), 1, True),
    ((1, 4, 5, 3, 4), (4, 2, 3, 2, 2), (2, 1, 2), (0, 1, 1, 2, 0, 1), (1, 2, 1), 2, False),
    ((2, 3, 4, 3, 5), (3, 1, 2, 2, 3), (1, 1, 2), (1, 1, 0, 0, 1, 1), (2, 1, 1), 3, False),
]

SPECS = []
for xs, ws, stride, pads, dil, groups, order2 in CONV_CASES:
    attrs = {"stride": stride, "padding": pads, "dilation": dil, "groups": groups}
    case = f"x{xs}-w{ws}-s{stride}-p{pads}-d{dil}-g{groups}".replace(" ", "")
    args = (stride, pads, dil)
    dy_shape = (xs[0], ws[0]) + out_sizes(xs, ws, stride, pads, dil)
    SPECS += [
        OpSpec(
            "conv",
            lambda x, w, a=attrs: ge.conv(x, w, **a),
            lambda x, w, a=args, n=groups: grouped(conv_ref, n, (1, 0), 1)(x, w, *a),
            [u(*xs), u(*ws)],
            id=case,
            order2=order2,
        ),
        OpSpec(
            "conv_backprop_input",
            lambda dy, w, x, a=attrs: api.conv_backprop_input(dy, w, x, **a),
            lambda dy, w, x, a=args, n=groups: grouped(input_grad_ref, n, (1, 0, 1), 1)(
                dy, w, x, *a
            ),
            [u(*dy_shape), u(*ws), u(*xs)],
            id=case,
            order2=order2 and groups == 1,
        ),
        OpSpec(
            "conv_backprop_filter",
            lambda x, dy, w, a=attrs: api.conv_backprop_filter(x, dy, w, **a),
            lambda x, dy, w, a=args, n=groups: grouped(filter_grad_ref, n, (1, 1, 0), 0)(
                x, dy, w, *a
            ),
            [u(*xs), u(*dy_shape), u(*ws)],
            id=case,
            order2=order2 and groups != 1,
        ),
    ]

SPECS += [
    OpSpec(
        "conv",
        lambda x, w: ge.conv(x, w, padding="same"),
        lambda x, w: conv_ref(x, w, (1, 1, 1), (1, 0, 1, 1, 1, 1), (1, 1, 1)),
        [u(1, 2, 4, 3, 5), u(3, 2, 3, 2, 3)],
        id="3d-same",
        order2=False,
    ),
    OpSpec(
        "conv",
        lambda x, w: ge.conv(x, w, stride=2, padding="same"),
        lambda x, w: conv_ref(x, w, (2,), (1, 1), (1,)),
        [u(2, 3, 7), u(2, 3, 3)],
        id="1d-same-stride2",
        order2=False,
    ),
    OpSpec(
        "conv",
        lambda x, w, b: ge.conv(x, w, b, stride=(1, 2, 1)),
        lambda x, w, b: conv_ref(x, w, (1, 2, 1), (0,) * 6, (1, 1, 1)) + b.reshape(-1, 1, 1, 1),
        [u(2, 2, 3, 5, 4), u(3, 2, 2, 3, 2), u(3)],
        id="3d-bias",
        grad=(0, 1, 2),  # the bias too, through the add the front-end builds
        order2=False,
    ),
]

# conv_transpose: (x shape, w shape (C_in, C_out/groups, *kernel), stride, pads, dilation,
# groups, output_padding, order 2)
TRANSPOSE_CASES = [
    ((2, 3, 5), (3, 2, 3), (2,), (1, 0), (1,), 1, (1,), True),
    ((1, 4, 6), (4, 3, 4), (3,), (2, 1), (2,), 2, (2,), False),
    (
        (2, 2, 3, 4, 2),
        (2, 3, 2, 3, 2),
        (2, 1, 2),
        (1, 0, 0, 0, 1, 1),
        (1, 2, 1),
        1,
        (1, 0, 0),
        True,
    ),
    (
        (1, 4, 2, 3, 3),
        (4, 1, 3, 2, 2),
        (1, 2, 2),
        (0, 1, 1, 1, 0, 0),
        (2, 1, 1),
        4,
        (0, 1, 1),
        False,
    ),
]
for xs, ws, stride, pads, dil, groups, extra, order2 in TRANSPOSE_CASES:
    attrs = {
        "stride": stride,
        "padding": pads,
        "dilation": dil,
        "groups": groups,
        "output_padding": extra,
    }
    case = f"x{xs}-w{ws}-s{stride}-p{pads}-d{dil}-g{groups}-o{extra}".replace(" ", "")
    SPECS.append(
        OpSpec(
            "conv_transpose",
            lambda x, w, a=attrs: ge.conv_transpose(x, w, **a),
            lambda x, w, a=(stride, pads, dil, groups, extra): conv_transpose_ref(x, w, *a),
            [u(*xs), u(*ws)],
            id=case,
            order2=order2,
        )
    )
SPECS.append(
    OpSpec(
        "conv_transpose",
        lambda x, w, b: ge.conv_transpose(x, w, b, stride=2),
        lambda x, w, b: conv_transpose_ref(x, w, (2,), (0, 0), (1,), 1, (0,)) + b.reshape(-1, 1),
        [u(2, 3, 4), u(3, 2, 3), u(2)],
        id="1d-bias",
        grad=(0, 1, 2),
        order2=False,
    )
)

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shapes, attributes and limits ---------------------------------------------------------


def test_conv_infers_symbolic_dims_and_stores_onnx_pads():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, "D", 9, 8))
    w = g.parameter("w", np.zeros((5, 3, 3, 2, 3), np.float32))
    y = ge.conv(x, w, stride=(1, 2, 3), padding=1)
    assert y.shape == ("N", 5, None, 5, 3)
    assert g.node(y.node).attrs["padding"] == (1, 1, 1, 1, 1, 1)
    assert g.node(y.node).attrs["stride"] == (1, 2, 3)
    z = ge.conv_transpose(y, g.parameter("wt", np.zeros((5, 2, 2, 3, 3), np.float32)), stride=2)
    assert z.shape == ("N", 2, None, 11, 7)


def test_conv_transpose_inverts_the_shape_of_a_strided_conv():
    g = ge.Graph()
    x = g.placeholder("x", (None, 8, 5, 7, 3))
    w = g.parameter("w", np.zeros((8, 3, 3, 3, 3), np.float32))
    y = ge.conv_transpose(x, w, stride=2, padding=1, output_padding=1)
    assert y.shape == ("N", 3, 10, 14, 6)
    assert ge.conv(y, w, stride=2, padding=1).shape == ("N", 8, 5, 7, 3)


def _w(*shape):
    return lambda g, x: g.parameter("w", np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda g, x: ge.conv(x, _w(4, 2, 3, 3, 3)(g, x)), "x has 3 channels (axis 1 of"),
        (
            lambda g, x: ge.conv(x, _w(4, 3, 3, 3)(g, x)),
            "has 2 spatial axes, so x must have rank 4",
        ),
        (lambda g, x: ge.conv(x, _w(4, 3)(g, x)), "must have rank 3, 4 or 5"),
        (lambda g, x: ge.conv(x, _w(4, 3, 3, 0, 3)(g, x)), "the kernel sizes (w's axes 2 on)"),
        (lambda g, x: ge.conv_transpose(x, _w(3, 2, 0, 2, 2)(g, x)), "must be positive"),
        (lambda g, x: ge.conv(x, _w(4, 3, 9, 3, 3)(g, x)), "the window spans 9 along the depth"),
        (lambda g, x: ge.conv(x, _w(4, 3, 3, 3, 3)(g, x), stride=0), "stride must be 3 positive"),
        (
            lambda g, x: ge.conv(x, _w(4, 3, 3, 3, 3)(g, x), stride=(1, -1, 1)),
            "stride must be 3 positive ints (depth/height/width)",
        ),
        (lambda g, x: ge.conv(x, _w(4, 3, 3, 3, 3)(g, x), dilation=(1, 4, 1)), "(3 dilated by 4)"),
        (
            lambda g, x: ge.conv(x, _w(4, 3, 3, 3, 3)(g, x), padding=(1, 2, 3, 4)),
            "padding must be 6 non-negative ints",
        ),
        (
            lambda g, x: ge.conv(x, _w(4, 1, 3, 3, 3)(g, x), groups=2),
            "the input channel count 3 is not divisible by groups=2",
        ),
        (
            lambda g, x: ge.conv(x, _w(4, 1, 3, 3, 3)(g, x), groups=3),
            "the output channel count (w's axis 0) 4 is not divisible by groups=3",
        ),
        (
            lambda g, x: ge.conv(x, _w(3, 3, 3, 3, 3)(g, x), groups=3),
            "the weight's axis 1 must be 3 / groups=3 = 1",
        ),
        (lambda g, x: ge.conv(x, _w(4, 3, 3, 3, 3)(g, x), groups=0), "groups must be a positive"),
        (
            lambda g, x: ge.conv_transpose(x, _w(3, 2, 3, 3, 3)(g, x), stride=2, output_padding=2),
            "output_padding must be 3 ints, each >= 0 and smaller than the stride",
        ),
        (lambda g, x: ge.conv_transpose(x, _w(2, 2, 3, 3, 3)(g, x)), "expects 2"),
        (
            lambda g, x: ge.conv_transpose(x, _w(3, 2, 3, 3, 3)(g, x), padding=5),
            "leaves no output",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7, 6))


def test_conv_transpose_refuses_same_padding():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 8))
    with pytest.raises(ge.ShapeError, match="padding must be an int or ints"):
        ge.conv_transpose(x, np.zeros((3, 2, 3), np.float32), padding="same")


def test_columns_over_the_tensor_budget_are_refused_at_build_time():
    g = ge.Graph()
    x = g.placeholder("x", (None, 4, 20, 20, 20))
    w = g.parameter("w", np.zeros((2, 4, 3, 3, 3), np.float32))
    # Output (2, 18^3) is 46 kB, but one image's columns take 4 * 27 * 18^3 floats.
    with ge.using_limits(max_tensor_bytes=300_000):
        with pytest.raises(ge.ShapeError, match=r"node '.*' \(conv\): the im2col columns"):
            ge.conv(x, w)
    assert ge.conv(x, w).shape == ("N", 2, 18, 18, 18)


def test_columns_over_the_budget_with_symbolic_sizes_fail_at_run_time():
    g = ge.Graph()
    x = g.placeholder("x", (1, 2, "L"))
    y = ge.conv(x, np.ones((1, 2, 5), np.float32))
    value = np.ones((1, 2, 1000), np.float32)
    with ge.using_limits(max_tensor_bytes=20_000):
        with pytest.raises(ge.GraphEngineError, match="limit"):
            ge.run(g, y, {"x": value})
    assert ge.run(g, y, {"x": value}).shape == (1, 1, 996)


def test_batch_chunks_give_the_same_result(monkeypatch):
    """A batch processed one image at a time (tiny chunks) equals one chunk."""
    x, w = u(5, 4, 6, 5, 4), u(6, 2, 3, 2, 3)
    dy = u(5, 6, 4, 4, 2)
    whole = [
        conv_nd._convolve(x, w, (1, 1, 1), (0, 0, 0, 0, 0, 0), (1, 1, 1), 2),
        conv_nd._transpose_convolve(dy, w, x.shape, (1, 1, 1), (0,) * 6, (1, 1, 1), 2),
        conv_nd._filter_gradient(x, dy, w.shape[2:], (1, 1, 1), (0,) * 6, (1, 1, 1), 2),
    ]
    monkeypatch.setattr(conv_nd, "_CHUNK_BYTES", 1)
    chunked = [
        conv_nd._convolve(x, w, (1, 1, 1), (0, 0, 0, 0, 0, 0), (1, 1, 1), 2),
        conv_nd._transpose_convolve(dy, w, x.shape, (1, 1, 1), (0,) * 6, (1, 1, 1), 2),
        conv_nd._filter_gradient(x, dy, w.shape[2:], (1, 1, 1), (0,) * 6, (1, 1, 1), 2),
    ]
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_second_order_gradient_graph_is_built_from_conv_ops():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3, 6), "float64")
    w = g.parameter("w", u(4, 3, 3))
    loss = ge.sum(ge.tanh(ge.conv(x, w, padding=1)))
    first = ge.gradients(g, loss, ["w"])
    again = ge.gradients(first, ge.sum(first.tensor(first.gradient.grads["w"])), ["x"])
    ops = {n.op for n in again.nodes}
    assert {"conv", "conv_backprop_filter", "conv_backprop_input"} <= ops


# -- a second opinion: torch.nn.functional ----------------------------------------------------

TORCH_CASES = [
    # (rank, x shape, w shape, stride, padding (symmetric, per axis), dilation, groups)
    (1, (3, 4, 17), (6, 2, 5), (2,), (2,), (1,), 2),
    (1, (2, 6, 12), (6, 1, 3), (1,), (1,), (3,), 6),
    (3, (2, 4, 6, 7, 5), (6, 2, 3, 3, 2), (1, 2, 1), (1, 1, 0), (1, 1, 2), 2),
    (3, (1, 3, 5, 6, 7), (4, 3, 2, 3, 3), (2, 1, 2), (0, 1, 1), (2, 1, 1), 1),
]


def _torch_function(torch, transposed, rank):
    functional = torch.nn.functional
    name = f"conv_transpose{rank}d" if transposed else f"conv{rank}d"
    return getattr(functional, name)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transpose"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
def test_values_and_gradients_match_torch(case, transposed):
    torch = pytest.importorskip("torch")
    rank, xs, ws, stride, padding, dilation, groups = case
    if transposed:
        ws = (xs[1], ws[0] // groups) + ws[2:]
    extra = tuple(min(s - 1, 1) for s in stride) if transposed else None
    x, w, b = u(*xs), u(*ws), u(ws[1] * groups if transposed else ws[0])
    g = ge.Graph()
    tx, tw, tb = (g.placeholder(n, v.shape, "float64") for n, v in zip("xwb", (x, w, b)))
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if transposed:
        y = ge.conv_transpose(tx, tw, tb, output_padding=extra, **kwargs)
    else:
        y = ge.conv(tx, tw, tb, **kwargs)
    weights = R.uniform(0.5, 1.5, ge.run(g, y, {"x": x, "w": w, "b": b}).shape)
    grads = ge.gradients(g, ge.sum(y * g.constant(weights)), ["x", "w", "b"])
    ours = ge.run(
        grads, [y.name] + [grads.gradient.grads[k] for k in "xwb"], {"x": x, "w": w, "b": b}
    )

    inputs = [torch.tensor(v, requires_grad=True) for v in (x, w, b)]
    if transposed:
        kwargs["output_padding"] = extra
    expected = _torch_function(torch, transposed, rank)(*inputs, **kwargs)
    (expected * torch.from_numpy(weights)).sum().backward()
    values = list(ours.values())
    np.testing.assert_allclose(values[0], expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, have, t in zip("xwb", values[1:], inputs):
        np.testing.assert_allclose(have, t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_gradient_graph_saves_loads_and_runs_the_same(tmp_path):
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 4, 5, 3), "float64")
    w = g.parameter("w", u(3, 2, 2, 3, 2))
    wt = g.parameter("wt", u(3, 2, 2, 2, 2))
    y = ge.conv_transpose(ge.relu(ge.conv(x, w, padding=1)), wt, stride=2, output_padding=1)
    tg = ge.gradients(g, ge.sum(y * y), ["x", "w", "wt"])
    fetches = [tg.gradient.grads[k] for k in ("x", "w", "wt")]
    feeds = {"x": u(2, 2, 4, 5, 3)}
    before = ge.run(tg, fetches, feeds)
    tg.save(tmp_path / "grads.pb")
    after = ge.run(ge.load(tmp_path / "grads.pb"), fetches, feeds)
    for ref in fetches:
        np.testing.assert_array_equal(before[ref], after[ref])
