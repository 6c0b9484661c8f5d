"""conv2d and its backprop ops against naive numpy references written here, and
their gradients by finite differences."""

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

R = np.random.default_rng(6)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


# -- references: plain loops over output positions ------------------------------------


def pad4(x, pads, value=0.0):
    top, left, bottom, right = pads
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    return out


def out_size(size, k, stride, dilation, pad):
    return (size + pad - dilation * (k - 1) - 1) // stride + 1


def patch_index(p, q, kernel, stride, dilation):
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (
        slice(None),
        slice(None),
        slice(p * sh, p * sh + dh * (kh - 1) + 1, dh),
        slice(q * sw, q * sw + dw * (kw - 1) + 1, dw),
    )


def conv_geometry(x_shape, w_shape, stride, pads, dilation):
    oh = out_size(x_shape[2], w_shape[2], stride[0], dilation[0], pads[0] + pads[2])
    ow = out_size(x_shape[3], w_shape[3], stride[1], dilation[1], pads[1] + pads[3])
    return oh, ow


def conv2d_ref(x, w, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1)):
    xp = pad4(x, pads)
    oh, ow = conv_geometry(x.shape, w.shape, stride, pads, dilation)
    out = np.zeros((x.shape[0], w.shape[0], oh, ow), x.dtype)
    for p in range(oh):
        for q in range(ow):
            patch = xp[patch_index(p, q, w.shape[2:], stride, dilation)]
            out[:, :, p, q] = np.einsum("ncij,ocij->no", patch, w)
    return out


def conv2d_input_grad_ref(dy, w, like, stride, pads, dilation):
    xp = np.zeros(pad4(like, pads).shape, dy.dtype)
    for p in range(dy.shape[2]):
        for q in range(dy.shape[3]):
            xp[patch_index(p, q, w.shape[2:], stride, dilation)] += np.einsum(
                "no,ocij->ncij", dy[:, :, p, q], w
            )
    return xp[:, :, pads[0] : pads[0] + like.shape[2], pads[1] : pads[1] + like.shape[3]]


def conv2d_filter_grad_ref(x, dy, like, stride, pads, dilation):
    xp = pad4(x, pads)
    out = np.zeros(like.shape, x.dtype)
    for p in range(dy.shape[2]):
        for q in range(dy.shape[3]):
            patch = xp[patch_index(p, q, like.shape[2:], stride, dilation)]
            out += np.einsum("no,ncij->ocij", dy[:, :, p, q], patch)
    return out


# -- spec rows ---------------------------------------------------------------------------

SPECS = []


def columns(x, w, attrs):
    """conv2d's second output: the im2col columns of x that its vjp hands on."""
    return x.graph.apply("conv2d", [x, w], attrs)[1]


# conv2d: (x shape, w shape, stride, pads, dilation); every case has dims that all differ.
CONV_CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 2), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((2, 3, 7, 6), (4, 3, 3, 3), (2, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 7, 8), (3, 2, 2, 3), (2, 3), (1, 0, 2, 1), (1, 1)),
    ((2, 2, 8, 7), (3, 2, 3, 2), (1, 2), (2, 1, 0, 1), (2, 3)),
    ((3, 1, 6, 5), (2, 1, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
]
for xs, ws, stride, pads, dil in CONV_CASES:
    attrs = {"stride": stride, "padding": pads, "dilation": dil}
    case = f"x{xs}-w{ws}-s{stride}-p{pads}-d{dil}".replace(" ", "")
    SPECS.append(
        OpSpec(
            "conv2d",
            lambda x, w, a=attrs: ge.conv2d(x, w, **a),
            lambda x, w, a=attrs: conv2d_ref(x, w, a["stride"], a["padding"], a["dilation"]),
            [u(*xs), u(*ws)],
            id=case,
            order2=(xs == (2, 3, 7, 6)),
        )
    )
    oh, ow = conv_geometry(xs, ws, stride, pads, dil)
    dy_shape = (xs[0], ws[0], oh, ow)
    SPECS.append(
        OpSpec(
            "conv2d_backprop_input",
            lambda dy, w, x, a=attrs: api.conv2d_backprop_input(dy, w, x, **a),
            lambda dy, w, x, a=attrs: conv2d_input_grad_ref(
                dy, w, x, a["stride"], a["padding"], a["dilation"]
            ),
            [u(*dy_shape), u(*ws), u(*xs)],
            id=case,
            order2=(xs == (2, 2, 8, 7)),
        )
    )
    SPECS.append(
        OpSpec(
            "conv2d_backprop_filter",
            lambda x, dy, w, a=attrs: api.conv2d_backprop_filter(x, dy, w, **a),
            lambda x, dy, w, a=attrs: conv2d_filter_grad_ref(
                x, dy, w, a["stride"], a["padding"], a["dilation"]
            ),
            [u(*xs), u(*dy_shape), u(*ws)],
            id=case,
            order2=(xs == (1, 2, 7, 8)),
        )
    )
    SPECS.append(
        OpSpec(
            "conv2d_backprop_filter_cols",
            lambda x, dy, w, a=attrs: api.conv2d_backprop_filter_cols(
                x, dy, w, columns(x, w, a), **a
            ),
            lambda x, dy, w, a=attrs: conv2d_filter_grad_ref(
                x, dy, w, a["stride"], a["padding"], a["dilation"]
            ),
            [u(*xs), u(*dy_shape), u(*ws)],
            id=case,
            order2=(xs == (2, 3, 7, 6)),
        )
    )
SPECS += [
    OpSpec(
        "conv2d",
        lambda x, w: ge.conv2d(x, w, padding="same"),
        lambda x, w: conv2d_ref(x, w, pads=(1, 0, 1, 1)),
        [u(2, 2, 5, 4), u(3, 2, 3, 2)],
        id="same",
    ),
    OpSpec(
        "conv2d",
        lambda x, w: ge.conv2d(x, w, stride=2, padding="same"),
        lambda x, w: conv2d_ref(x, w, (2, 2), (0, 1, 1, 1)),
        [u(1, 2, 6, 7), u(3, 2, 3, 3)],
        id="same-stride2",
    ),
]


# -- groups and transposed convolution ------------------------------------------------------


def grouped(ref, groups):
    """A reference applied to each group of channels (x split on axis 1, w on axis 0)."""

    def run(x, w, *args):
        xs, ws = np.split(x, groups, axis=1), np.split(w, groups, axis=0)
        return np.concatenate([ref(a, b, *args) for a, b in zip(xs, ws)], axis=1)

    return run


def conv_transpose_ref(x, w, stride, pads, dilation, groups, output_padding):
    c_out = w.shape[1] * groups
    sizes = [
        (x.shape[2 + i] - 1) * stride[i]
        + dilation[i] * (w.shape[2 + i] - 1)
        + 1
        - pads[i]
        - pads[2 + i]
        + output_padding[i]
        for i in range(2)
    ]
    out = []
    for xg, wg in zip(np.split(x, groups, axis=1), np.split(w, groups, axis=0)):
        like = np.zeros((x.shape[0], c_out // groups, *sizes), x.dtype)
        out.append(conv2d_input_grad_ref(xg, wg, like, stride, pads, dilation))
    return np.concatenate(out, axis=1)


# (x shape, w shape, stride, pads, dilation, groups)
GROUP_CASES = [
    ((2, 4, 6, 5), (6, 2, 3, 2), (1, 1), (1, 0, 1, 1), (1, 1), 2),
    ((2, 3, 7, 6), (3, 1, 3, 3), (2, 1), (1, 1, 1, 1), (1, 2), 3),  # depthwise
    ((1, 4, 5, 7), (8, 1, 2, 3), (1, 2), (0, 1, 1, 0), (1, 1), 4),  # depthwise, multiplier 2
]
for xs, ws, stride, pads, dil, groups in GROUP_CASES:
    attrs = {"stride": stride, "padding": pads, "dilation": dil, "groups": groups}
    case = f"x{xs}-w{ws}-s{stride}-p{pads}-d{dil}-g{groups}".replace(" ", "")
    oh, ow = conv_geometry(xs, ws, stride, pads, dil)
    dy_shape = (xs[0], ws[0], oh, ow)
    args = (stride, pads, dil)
    SPECS += [
        OpSpec(
            "conv2d",
            lambda x, w, a=attrs: ge.conv2d(x, w, **a),
            lambda x, w, a=args, n=groups: grouped(conv2d_ref, n)(x, w, *a),
            [u(*xs), u(*ws)],
            id=case,
            order2=groups == 3,
        ),
        OpSpec(
            "conv2d_backprop_input",
            lambda dy, w, x, a=attrs: api.conv2d_backprop_input(dy, w, x, **a),
            lambda dy, w, x, a=args, n=groups: np.concatenate(
                [
                    conv2d_input_grad_ref(d, ww, xx, *a)
                    for d, ww, xx in zip(np.split(dy, n, 1), np.split(w, n, 0), np.split(x, n, 1))
                ],
                axis=1,
            ),
            [u(*dy_shape), u(*ws), u(*xs)],
            id=case,
        ),
        OpSpec(
            "conv2d_backprop_filter",
            lambda x, dy, w, a=attrs: api.conv2d_backprop_filter(x, dy, w, **a),
            lambda x, dy, w, a=args, n=groups: np.concatenate(
                [
                    conv2d_filter_grad_ref(xx, d, ww, *a)
                    for xx, d, ww in zip(np.split(x, n, 1), np.split(dy, n, 1), np.split(w, n, 0))
                ],
                axis=0,
            ),
            [u(*xs), u(*dy_shape), u(*ws)],
            id=case,
        ),
        OpSpec(
            "conv2d_backprop_filter_cols",
            lambda x, dy, w, a=attrs: api.conv2d_backprop_filter_cols(
                x, dy, w, columns(x, w, a), **a
            ),
            lambda x, dy, w, a=args, n=groups: np.concatenate(
                [
                    conv2d_filter_grad_ref(xx, d, ww, *a)
                    for xx, d, ww in zip(np.split(x, n, 1), np.split(dy, n, 1), np.split(w, n, 0))
                ],
                axis=0,
            ),
            [u(*xs), u(*dy_shape), u(*ws)],
            id=case,
            order2=groups == 2,
        ),
    ]

# conv_transpose2d: (x shape, w shape (C_in, C_out/groups, kh, kw), stride, pads, dilation,
# groups, output_padding)
TRANSPOSE_CASES = [
    ((2, 3, 4, 5), (3, 2, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 1)),
    ((1, 4, 3, 4), (4, 3, 2, 3), (1, 2), (0, 1, 1, 0), (2, 1), 2, (0, 1)),
    ((2, 2, 5, 3), (2, 1, 3, 2), (3, 1), (2, 0, 0, 1), (1, 1), 2, (2, 0)),
]
for xs, ws, stride, pads, dil, groups, extra in TRANSPOSE_CASES:
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
            "conv_transpose2d",
            lambda x, w, a=attrs: ge.conv_transpose2d(x, w, **a),
            lambda x, w, a=attrs: conv_transpose_ref(
                x, w, a["stride"], a["padding"], a["dilation"], a["groups"], a["output_padding"]
            ),
            [u(*xs), u(*ws)],
            id=case,
            order2=groups == 1,
        )
    )

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shapes and attributes -----------------------------------------------------------------


def test_conv2d_infers_symbolic_batch_and_spatial_dims():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, "H", 9))
    w = g.parameter("w", np.zeros((5, 3, 3, 2), np.float32))
    y = ge.conv2d(x, w, stride=(1, 2), padding=1)
    assert y.shape == ("N", 5, None, 5)
    assert g.node(y.node).attrs["padding"] == (1, 1, 1, 1)  # stored in ONNX's 4-int form


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 2, 3, 3), np.float32))),
            "x has 3 channels (axis 1 of (N, 3, 8, 7)) but w expects 2",
        ),
        (
            lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 9, 3), np.float32))),
            "the window spans 9 along the height",
        ),
        (
            lambda g, x: ge.conv2d(
                x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)), stride=0
            ),
            "stride must be 2 positive ints",
        ),
        (
            lambda g, x: ge.conv2d(
                x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)), dilation=(1, 4)
            ),
            "(3 dilated by 4)",
        ),
        (
            lambda g, x: ge.conv2d(
                x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)), padding=(1, 2, 3)
            ),
            "padding must be 4 non-negative ints",
        ),
        (
            lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 3), np.float32))),
            "w (out_channels, in_channels / groups, kh, kw) must have rank 4",
        ),
        (
            lambda g, x: ge.conv2d(
                x, g.parameter("w", np.zeros((4, 1, 3, 3), np.float32)), groups=2
            ),
            "the input channel count 3 is not divisible by groups=2",
        ),
        (
            lambda g, x: ge.conv2d(
                x, g.parameter("w", np.zeros((3, 3, 3, 3), np.float32)), groups=3
            ),
            "the weight's axis 1 must be 3 / groups=3 = 1",
        ),
        (
            lambda g, x: ge.conv_transpose2d(
                x, g.parameter("w", np.zeros((3, 2, 3, 3), np.float32)), stride=2, output_padding=2
            ),
            "output_padding must be 2 ints, each >= 0 and smaller than the stride",
        ),
        (
            lambda g, x: ge.conv_transpose2d(
                x, g.parameter("w", np.zeros((2, 2, 3, 3), np.float32))
            ),
            "expects 2",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


def test_conv_transpose2d_inverts_the_shape_of_a_strided_conv():
    g = ge.Graph()
    x = g.placeholder("x", (None, 8, 5, 7))
    w = g.parameter("w", np.zeros((8, 3, 3, 3), np.float32))
    y = ge.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert y.shape == ("N", 3, 10, 14)
    assert ge.conv2d(y, w, stride=2, padding=1).shape == ("N", 8, 5, 7)
    with pytest.raises(ge.ShapeError, match="padding must be an int"):
        ge.conv_transpose2d(x, w, padding="same")


def test_same_padding_needs_known_size_with_stride():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, "H", 7))
    w = g.parameter("w", np.zeros((4, 3, 3, 3), np.float32))
    assert ge.conv2d(x, w, padding="same").shape == ("N", 4, None, 7)
    with pytest.raises(ge.ShapeError, match="padding='same' needs a known height"):
        ge.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ge.ShapeError, match="padding must be 'valid', 'same'"):
        ge.conv2d(x, w, padding="full")


@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [((1, 1), 1, (1, 1), 1), ((2, 1), (1, 0, 0, 2), (1, 2), 2), ((1, 1), 2, (2, 1), 4)],
)
def test_planned_buffers_hold_what_the_kernels_return(stride, padding, dilation, groups):
    """conv2d, its two gradients and conv_transpose2d write into the plan's
    buffers (out_kernel): every planned run equals the unplanned first run, bit
    for bit, and each of those steps got a buffer."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 4, 9, 7))
    w = g.parameter("w", R.standard_normal((8, 4 // groups, 3, 2)).astype(np.float32))
    wt = g.parameter("wt", R.standard_normal((8, 6 // groups, 2, 3)).astype(np.float32))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    y = ge.relu(ge.conv2d(x, w, **attrs)) * 1.5
    z = ge.conv_transpose2d(y, wt, stride=2, padding=1, groups=groups) * 1.5
    loss = ge.sum(z * z)
    tg = ge.gradients(g, loss, ["w", "wt", "x"])
    fetches = [z.name] + [tg.gradient.grads[p] for p in ("w", "wt", "x")]
    feed = {"x": R.standard_normal((3, 4, 9, 7)).astype(np.float32)}
    planned = planned_ops_matching_unplanned(tg, fetches, feed)
    ops = {"conv2d", "conv_transpose2d", "conv2d_backprop_input", "conv2d_backprop_filter"}
    assert ops <= planned, planned


def test_conv2d_columns_output_matches_its_inferred_type_and_feeds_the_filter_gradient():
    g = ge.Graph()
    x = g.placeholder("x", (None, 6, 9, 7))
    w = g.parameter("w", R.standard_normal((4, 3, 3, 2)).astype(np.float32))
    attrs = {"stride": (2, 1), "padding": (1, 0, 0, 1), "dilation": (1, 2), "groups": 2}
    y, cols = g.apply("conv2d", [x, w], attrs)
    assert cols.shape == ("N", 2, 3 * 3 * 2, 4 * 6)
    feed = {"x": R.standard_normal((3, 6, 9, 7)).astype(np.float32)}
    got = ge.run(g, cols, feed)
    assert got.shape == (3, 2, 18, 24) and got.dtype == np.float32
    # Row (c, i, j), column (p, q) of image n, group g is x_pad[n, 3g + c, 2p + i, q + 2j].
    xp = np.pad(feed["x"], ((0, 0), (0, 0), (1, 0), (0, 1)))
    for n, grp, c, i, j, p, q in [(2, 1, 1, 1, 1, 3, 2), (0, 0, 2, 2, 0, 1, 5)]:
        assert got[n, grp, 6 * c + 2 * i + j, 6 * p + q] == xp[n, 3 * grp + c, 2 * p + i, q + 2 * j]
    loss = ge.sum(ge.conv2d(x, w, **attrs) ** 2.0)
    tg = ge.gradients(g, loss, ["w"])
    ops = [n.op for n in tg.nodes]
    assert "conv2d_backprop_filter_cols" in ops and "conv2d_backprop_filter" not in ops
    with pytest.raises(ge.GradientError, match=r"output 1 \(cols"):
        ge.gradients(g, ge.sum(cols), ["w"])


def test_large_columns_are_copied_again_instead_of_kept(monkeypatch):
    """Above REUSE_COLUMNS_BYTES per image the filter gradient reads x, so
    training does not keep the columns; both ways give the same gradient."""
    from graphengine.ops import conv

    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 8, 7))
    w = g.parameter("w", R.standard_normal((5, 3, 3, 3)).astype(np.float32))
    loss = ge.sum(ge.conv2d(x, w, padding=1) ** 2.0)
    feed = {"x": R.standard_normal((2, 3, 8, 7)).astype(np.float32)}
    kept = ge.gradients(g, loss, ["w"])
    monkeypatch.setattr(conv, "REUSE_COLUMNS_BYTES", 3 * 9 * 8 * 7 * 4 - 1)
    copied = ge.gradients(g, loss, ["w"])
    assert "conv2d_backprop_filter_cols" in [n.op for n in kept.nodes]
    assert "conv2d_backprop_filter_cols" not in [n.op for n in copied.nodes]
    a = ge.run(kept, kept.gradient.grads["w"], feed)
    b = ge.run(copied, copied.gradient.grads["w"], feed)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_filter_gradient_refuses_columns_of_other_attributes():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 8, 7))
    w = g.parameter("w", np.zeros((4, 3, 3, 3), np.float32))
    dy = g.placeholder("dy", (None, 4, 6, 5))
    cols = g.apply("conv2d", [x, w], {"padding": (1, 1, 1, 1)})[1]
    with pytest.raises(ge.ShapeError, match="pass output 1 of the conv2d node that read x"):
        api.conv2d_backprop_filter_cols(x, dy, w, cols)
