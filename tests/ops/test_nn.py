"""Neural-network ops (softmax, conv2d, pooling, dropout, batch norm) against naive
numpy references written here, and their gradients by finite differences."""

import warnings

import numpy as np
import pytest

import graphengine as ge
from graphengine.gradcheck import to_float64

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(3)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def distinct(*shape):
    """Values 0.1 apart in random order: no ties, so max pooling has one argmax."""
    return R.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


# -- references: plain loops over output positions ------------------------------------

def pad4(x, pads, value=0.0):
    top, left, bottom, right = pads
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def out_size(size, k, stride, dilation, pad):
    return (size + pad - dilation * (k - 1) - 1) // stride + 1


def patch_index(p, q, kernel, stride, dilation):
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (slice(None), slice(None), slice(p * sh, p * sh + dh * (kh - 1) + 1, dh),
            slice(q * sw, q * sw + dw * (kw - 1) + 1, dw))


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
                "no,ocij->ncij", dy[:, :, p, q], w)
    return xp[:, :, pads[0]:pads[0] + like.shape[2], pads[1]:pads[1] + like.shape[3]]


def conv2d_filter_grad_ref(x, dy, like, stride, pads, dilation):
    xp = pad4(x, pads)
    out = np.zeros(like.shape, x.dtype)
    for p in range(dy.shape[2]):
        for q in range(dy.shape[3]):
            patch = xp[patch_index(p, q, like.shape[2:], stride, dilation)]
            out += np.einsum("no,ncij->ocij", dy[:, :, p, q], patch)
    return out


def pool_windows(x, kernel, stride, pads, value):
    """Yield (p, q, window (N, C, kh, kw)) of the padded input."""
    xp = pad4(x, pads, value)
    oh = out_size(x.shape[2], kernel[0], stride[0], 1, pads[0] + pads[2])
    ow = out_size(x.shape[3], kernel[1], stride[1], 1, pads[1] + pads[3])
    for p in range(oh):
        for q in range(ow):
            yield p, q, xp[patch_index(p, q, kernel, stride, (1, 1))]


def max_pool_ref(x, kernel, stride, pads):
    windows = list(pool_windows(x, kernel, stride, pads, -np.inf))
    out = np.zeros(x.shape[:2] + (windows[-1][0] + 1, windows[-1][1] + 1), x.dtype)
    for p, q, win in windows:
        out[:, :, p, q] = win.max(axis=(2, 3))
    return out


def avg_pool_ref(x, kernel, stride, pads, count_include_pad=True):
    windows = list(pool_windows(x, kernel, stride, pads, 0.0))
    ones = np.ones((1, 1) + x.shape[2:], x.dtype)
    real = {(p, q): win for p, q, win in pool_windows(ones, kernel, stride, pads, 0.0)}
    out = np.zeros(x.shape[:2] + (windows[-1][0] + 1, windows[-1][1] + 1), x.dtype)
    for p, q, win in windows:
        count = kernel[0] * kernel[1] if count_include_pad else real[p, q].sum()
        out[:, :, p, q] = win.sum(axis=(2, 3)) / count
    return out


def max_pool_scatter_ref(x, dy, kernel, stride, pads):
    """dy of each window added at its first maximum (row-major)."""
    dxp = np.zeros(pad4(x, pads).shape, dy.dtype)
    for p, q, win in pool_windows(x, kernel, stride, pads, -np.inf):
        flat = win.reshape(win.shape[:2] + (-1,)).argmax(axis=2)
        i, j = np.divmod(flat, kernel[1])
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                dxp[n, c, p * stride[0] + i[n, c], q * stride[1] + j[n, c]] += dy[n, c, p, q]
    return dxp[:, :, pads[0]:pads[0] + x.shape[2], pads[1]:pads[1] + x.shape[3]]


def max_pool_gather_ref(x, g, kernel, stride, pads):
    gp = pad4(g, pads)
    windows = list(pool_windows(x, kernel, stride, pads, -np.inf))
    out = np.zeros(x.shape[:2] + (windows[-1][0] + 1, windows[-1][1] + 1), g.dtype)
    for p, q, win in windows:
        flat = win.reshape(win.shape[:2] + (-1,)).argmax(axis=2)
        i, j = np.divmod(flat, kernel[1])
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                out[n, c, p, q] = gp[n, c, p * stride[0] + i[n, c], q * stride[1] + j[n, c]]
    return out


def avg_pool_grad_ref(dy, like, kernel, stride, pads, count_include_pad=True):
    # The adjoint of avg_pool_ref, column by column of its matrix.
    out = np.zeros(like.shape, dy.dtype)
    for index in np.ndindex(like.shape):
        e = np.zeros(like.shape, dy.dtype)
        e[index] = 1
        out[index] = np.sum(avg_pool_ref(e, kernel, stride, pads, count_include_pad) * dy)
    return out


def softmax_ref(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis):
    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def dropout_ref(x, rate, seed, training):
    if not training:
        return x, np.ones_like(x)
    keep = np.random.default_rng((0, seed)).random(x.shape) >= rate
    mask = np.where(keep, 1 / (1 - rate), 0).astype(x.dtype)
    return x * mask, mask


def batch_norm_ref(x, gamma, beta, mean, var, training, epsilon=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    return (gamma.reshape(shape) * y + beta.reshape(shape)).astype(x.dtype), mean, var


# -- spec rows ---------------------------------------------------------------------------

SPECS = []
for axis in (-1, 0, 1):
    SPECS += [
        OpSpec("softmax", lambda x, a=axis: ge.softmax(x, axis=a),
               lambda x, a=axis: softmax_ref(x, a), [u(2, 3, 4, low=-3, high=3)],
               id=f"axis={axis}", order2=True),
        OpSpec("log_softmax", lambda x, a=axis: ge.log_softmax(x, axis=a),
               lambda x, a=axis: log_softmax_ref(x, a), [u(2, 3, 4, low=-3, high=3)],
               id=f"axis={axis}", order2=True),
    ]
SPECS += [
    OpSpec("softmax", ge.softmax, lambda x: softmax_ref(x - 1000, -1),
           [np.array([[1000.0, 999.0, 1001.0]])], id="large", grad=()),
    OpSpec("log_softmax", ge.log_softmax, lambda x: log_softmax_ref(x + 1000, -1),
           [np.array([[-1000.0, -1002.0, -999.0]])], id="small", grad=()),
]

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
    SPECS.append(OpSpec(
        "conv2d", lambda x, w, a=attrs: ge.conv2d(x, w, **a),
        lambda x, w, a=attrs: conv2d_ref(x, w, a["stride"], a["padding"], a["dilation"]),
        [u(*xs), u(*ws)], id=case, order2=(xs == (2, 3, 7, 6))))
    oh, ow = conv_geometry(xs, ws, stride, pads, dil)
    dy_shape = (xs[0], ws[0], oh, ow)
    SPECS.append(OpSpec(
        "conv2d_backprop_input", lambda dy, w, x, a=attrs: api.conv2d_backprop_input(dy, w, x, **a),
        lambda dy, w, x, a=attrs: conv2d_input_grad_ref(dy, w, x, a["stride"], a["padding"],
                                                        a["dilation"]),
        [u(*dy_shape), u(*ws), u(*xs)], id=case, order2=(xs == (2, 2, 8, 7))))
    SPECS.append(OpSpec(
        "conv2d_backprop_filter",
        lambda x, dy, w, a=attrs: api.conv2d_backprop_filter(x, dy, w, **a),
        lambda x, dy, w, a=attrs: conv2d_filter_grad_ref(x, dy, w, a["stride"], a["padding"],
                                                         a["dilation"]),
        [u(*xs), u(*dy_shape), u(*ws)], id=case, order2=(xs == (1, 2, 7, 8))))
SPECS += [
    OpSpec("conv2d", lambda x, w: ge.conv2d(x, w, padding="same"),
           lambda x, w: conv2d_ref(x, w, pads=(1, 0, 1, 1)), [u(2, 2, 5, 4), u(3, 2, 3, 2)],
           id="same"),
    OpSpec("conv2d", lambda x, w: ge.conv2d(x, w, stride=2, padding="same"),
           lambda x, w: conv2d_ref(x, w, (2, 2), (0, 1, 1, 1)), [u(1, 2, 6, 7), u(3, 2, 3, 3)],
           id="same-stride2"),
]

# pooling: (x shape, kernel, stride, pads)
POOL_CASES = [
    ((2, 3, 6, 4), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((2, 2, 7, 5), (3, 2), (2, 1), (1, 1, 1, 0)),
    ((1, 3, 5, 6), (3, 3), (1, 2), (2, 1, 0, 2)),
]
for xs, kernel, stride, pads in POOL_CASES:
    attrs = {"kernel_size": kernel, "stride": stride, "padding": pads}
    case = f"x{xs}-k{kernel}-s{stride}-p{pads}".replace(" ", "")
    oh = out_size(xs[2], kernel[0], stride[0], 1, pads[0] + pads[2])
    ow = out_size(xs[3], kernel[1], stride[1], 1, pads[1] + pads[3])
    dy_shape = xs[:2] + (oh, ow)
    SPECS += [
        OpSpec("max_pool2d", lambda x, a=attrs: ge.max_pool2d(x, **a),
               lambda x, a=attrs: max_pool_ref(x, a["kernel_size"], a["stride"], a["padding"]),
               [distinct(*xs)], id=case, batch=True),
        OpSpec("max_pool2d_grad", lambda x, dy, a=attrs: api.max_pool2d_grad(x, dy, **a),
               lambda x, dy, a=attrs: max_pool_scatter_ref(x, dy, a["kernel_size"], a["stride"],
                                                           a["padding"]),
               [distinct(*xs), u(*dy_shape)], id=case),
        OpSpec("max_pool2d_gather", lambda x, g, a=attrs: api.max_pool2d_gather(x, g, **a),
               lambda x, g, a=attrs: max_pool_gather_ref(x, g, a["kernel_size"], a["stride"],
                                                         a["padding"]),
               [distinct(*xs), u(*xs)], id=case),
    ]
    for include in (True, False):
        a2 = {**attrs, "count_include_pad": include}
        SPECS += [
            OpSpec("avg_pool2d", lambda x, a=a2: ge.avg_pool2d(x, **a),
                   lambda x, a=a2: avg_pool_ref(x, a["kernel_size"], a["stride"], a["padding"],
                                                a["count_include_pad"]),
                   [u(*xs)], id=f"{case}-include_pad={include}", batch=True),
            OpSpec("avg_pool2d_grad", lambda dy, x, a=a2: api.avg_pool2d_grad(dy, x, **a),
                   lambda dy, x, a=a2: avg_pool_grad_ref(dy, x, a["kernel_size"], a["stride"],
                                                         a["padding"], a["count_include_pad"]),
                   [u(*dy_shape), u(*xs)], id=f"{case}-include_pad={include}"),
        ]
SPECS.append(OpSpec("max_pool2d", lambda x: ge.max_pool2d(x, 3, stride=1, padding="same"),
                    lambda x: max_pool_ref(x, (3, 3), (1, 1), (1, 1, 1, 1)), [distinct(1, 2, 4, 5)],
                    id="same"))

for training in (False, True):
    for rate, seed in [(0.5, 0), (0.25, 7)]:
        SPECS.append(OpSpec(
            "dropout", lambda x, r=rate, s=seed: ge.dropout(x, r, s),
            lambda x, r=rate, s=seed, t=training: dropout_ref(x, r, s, t),
            [u(3, 4, 5)], id=f"rate={rate}-seed={seed}-training={training}", training=training))
    SPECS.append(OpSpec("training_flag", api.training_flag,
                        lambda x, t=training: np.asarray(float(t), x.dtype), [u(2)],
                        id=f"training={training}", training=training))

BN_SHAPES = [(4, 3), (3, 2, 4, 5), (2, 3, 5)]
for shape in BN_SHAPES:
    c = shape[1]
    for training in (True, False):
        SPECS.append(OpSpec(
            "batch_norm", lambda x, g, b, m, v: ge.batch_norm(x, g, b, m, v),
            lambda x, g, b, m, v, t=training: batch_norm_ref(x, g, b, m, v, t),
            [u(*shape, low=-2, high=3), u(c, low=0.5, high=2), u(c), u(c), u(c, low=0.5, high=2)],
            id=f"{shape}-training={training}".replace(" ", ""), training=training,
            order2=not training))

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shapes and attributes -----------------------------------------------------------------

def test_conv2d_infers_symbolic_batch_and_spatial_dims():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, "H", 9))
    w = g.parameter("w", np.zeros((5, 3, 3, 2), np.float32))
    y = ge.conv2d(x, w, stride=(1, 2), padding=1)
    assert y.shape == ("N", 5, None, 5)
    assert g.node(y.node).attrs["padding"] == (1, 1, 1, 1)   # stored in ONNX's 4-int form


def test_pool_stride_defaults_to_kernel_size():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 9, 6))
    y = ge.avg_pool2d(x, (3, 2))
    assert y.shape == ("N", 2, 3, 3)
    assert g.node(y.node).attrs["stride"] == (3, 2)


@pytest.mark.parametrize("build, fragment", [
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 2, 3, 3), np.float32))),
     "x has 3 channels (axis 1 of (N, 3, 8, 7)) but w expects 2"),
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 9, 3), np.float32))),
     "the window spans 9 along the height"),
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)), stride=0),
     "stride must be 2 positive ints"),
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)),
                            dilation=(1, 4)), "(3 dilated by 4)"),
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 3, 3), np.float32)),
                            padding=(1, 2, 3)), "padding must be 4 non-negative ints"),
    (lambda g, x: ge.conv2d(x, g.parameter("w", np.zeros((4, 3, 3), np.float32))),
     "w (out_channels, in_channels, kh, kw) must have rank 4"),
    (lambda g, x: ge.max_pool2d(x, 0), "kernel_size must be 2 positive ints"),
    (lambda g, x: ge.max_pool2d(x, 2, padding=2), "must be smaller than the kernel"),
    (lambda g, x: ge.avg_pool2d(x, 9), "the window spans 9 along the height"),
    (lambda g, x: ge.dropout(x, 1.0), "rate must be in [0, 1)"),
    (lambda g, x: ge.batch_norm(x, *[g.parameter(n, np.ones(4, np.float32))
                                     for n in ("g", "b", "m", "v")]),
     "gamma must have shape (3,), one value per channel"),
    (lambda g, x: ge.softmax(x, axis=4), "axis 4 is out of range"),
])
def test_build_errors_name_node_and_problem(build, fragment):
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 8, 7))
    with pytest.raises(ge.ShapeError, match="node '") as info:
        build(g, x)
    assert fragment in str(info.value)


def test_same_padding_needs_known_size_with_stride():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, "H", 7))
    w = g.parameter("w", np.zeros((4, 3, 3, 3), np.float32))
    assert ge.conv2d(x, w, padding="same").shape == ("N", 4, None, 7)
    with pytest.raises(ge.ShapeError, match="padding='same' needs a known height"):
        ge.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ge.ShapeError, match="padding must be 'valid', 'same'"):
        ge.conv2d(x, w, padding="full")


def test_conv_and_pool_gradients_with_symbolic_batch():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 5), "float64")
    w = g.parameter("w", u(3, 2, 3, 2))
    h = ge.max_pool2d(ge.conv2d(x, w, stride=(1, 2), padding=1), 2, stride=1)
    loss = ge.sum(ge.avg_pool2d(h, (2, 1), padding=(1, 0)) * 0.5)
    result = ge.gradcheck(g, loss, ["x", "w"], {"x": distinct(3, 2, 6, 5)})
    assert result.ok, str(result)


# -- dropout ----------------------------------------------------------------------------------

def test_dropout_masks_scale_and_reproduce():
    g = ge.Graph()
    x = g.placeholder("x", (200, 50), "float32")
    y, mask = ge.dropout(x, 0.3)
    _, mask2 = ge.dropout(x, 0.3)
    feeds = {"x": np.ones((200, 50), np.float32)}
    first = ge.run(g, [y, mask, mask2], feeds, training=True, seed=5)
    again = ge.run(g, [mask], feeds, training=True, seed=5)[mask.name]
    other = ge.run(g, [mask], feeds, training=True, seed=6)[mask.name]
    m = first[mask.name]
    assert set(np.unique(m)) == {np.float32(0), np.float32(1 / 0.7)}
    assert abs((m == 0).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(first[y.name], m)          # y = x * mask with x = 1
    np.testing.assert_array_equal(again, m)                  # same run seed, same mask
    assert not np.array_equal(other, m)                      # another run seed, another mask
    assert not np.array_equal(first[mask2.name], m)          # another layer, another seed
    inference = ge.run(g, [y, mask], feeds)
    np.testing.assert_array_equal(inference[y.name], feeds["x"])
    np.testing.assert_array_equal(inference[mask.name], 1)


# -- batch norm ---------------------------------------------------------------------------

def test_batch_norm_second_order_in_training_mode():
    """Hessian-vector product through the batch statistics (training run)."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 2, 3), "float64")      # symbolic batch
    gamma = g.placeholder("gamma", (2,), "float64")
    beta = g.parameter("beta", np.array([0.1, -0.2]))
    stats = g.parameter("stats", np.array([0.3, 0.5]), trainable=False)
    y, _, _ = ge.batch_norm(x, gamma, beta, stats, stats)
    loss = ge.sum(ge.square(y) * g.constant(u(3, 2, 2, 3)))
    feeds = {"x": u(3, 2, 2, 3), "gamma": np.array([1.5, 0.7])}
    wrt = ["x", "gamma"]
    tg = ge.gradients(to_float64(g), loss.name, wrt)
    grads = [tg.tensor(tg.gradient.grads[w]) for w in wrt]
    vs = {w: R.standard_normal(feeds[w].shape) for w in wrt}
    dot = ge.add_n([ge.sum(gr * tg.constant(vs[w])) for gr, w in zip(grads, wrt)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ge.GradientWarning)
        hg = ge.gradients(tg, dot, wrt)
    hv = ge.run(hg, [hg.gradient.grads[w] for w in wrt], feeds, training=True)
    eps = 1e-5

    def grad_at(sign):
        shifted = {w: feeds[w] + sign * eps * vs[w] for w in wrt}
        out = ge.run(tg, [gr.name for gr in grads], shifted, training=True)
        return [out[gr.name] for gr in grads]

    for w, plus, minus in zip(wrt, grad_at(1), grad_at(-1)):
        np.testing.assert_allclose(hv[hg.gradient.grads[w]], (plus - minus) / (2 * eps),
                                   rtol=1e-4, atol=1e-6, err_msg=f"H v wrt {w}")


def test_batch_norm_inference_gradient_is_scaled_dy():
    g = ge.Graph()
    x = g.placeholder("x", (4, 3), "float64")
    gamma = g.parameter("gamma", np.array([2.0, 0.5, 1.0]))
    beta = g.parameter("beta", np.zeros(3))
    mean = g.parameter("mean", np.array([0.1, 0.2, 0.3]), trainable=False)
    var = g.parameter("var", np.array([4.0, 1.0, 0.25]), trainable=False)
    y, _, _ = ge.batch_norm(x, gamma, beta, mean, var, epsilon=1e-3)
    tg = ge.gradients(g, ge.sum(y), ["x"])
    dx = ge.run(tg, tg.gradient.grads["x"], {"x": u(4, 3)})
    np.testing.assert_allclose(dx, np.broadcast_to(np.array([2.0, 0.5, 1.0])
                                                   / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-3),
                                                   (4, 3)))


# -- speed: the digits CNN must train in reasonable time ------------------------------------------

def test_conv_layer_of_a_digits_batch_is_fast():
    """Forward + backward of two 3x3 conv layers on a (128, 1, 8, 8) batch."""
    import time

    g = ge.Graph()
    x = g.placeholder("x", (None, 1, 8, 8), "float32")
    w1 = g.parameter("w1", shape=(16, 1, 3, 3))
    w2 = g.parameter("w2", shape=(32, 16, 3, 3))
    h = ge.relu(ge.conv2d(x, w1, padding=1))
    out = ge.conv2d(ge.max_pool2d(h, 2), w2, padding=1)
    tg = ge.gradients(g, ge.mean(ge.square(out)), ["w1", "w2"])
    feeds = {"x": R.standard_normal((128, 1, 8, 8)).astype(np.float32)}
    fetches = list(tg.gradient.grads.values())
    ge.run(tg, fetches, feeds)
    start = time.perf_counter()
    for _ in range(5):
        ge.run(tg, fetches, feeds)
    assert (time.perf_counter() - start) / 5 < 1.0   # about 10 ms when the machine is idle
