"""max_pool2d, avg_pool2d and their gradient ops against naive numpy references
written here, and their gradients by finite differences."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests
from .test_conv import out_size, pad4, patch_index

R = np.random.default_rng(7)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def distinct(*shape):
    """Values 0.1 apart in random order: no ties, so max pooling has one argmax."""
    return R.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


# -- references: plain loops over output positions ------------------------------------

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


# -- spec rows ---------------------------------------------------------------------------

SPECS = []

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

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shapes and attributes -----------------------------------------------------------------

def test_pool_stride_defaults_to_kernel_size():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 9, 6))
    y = ge.avg_pool2d(x, (3, 2))
    assert y.shape == ("N", 2, 3, 3)
    assert g.node(y.node).attrs["stride"] == (3, 2)


@pytest.mark.parametrize("build, fragment", [
    (lambda g, x: ge.max_pool2d(x, 0), "kernel_size must be 2 positive ints"),
    (lambda g, x: ge.max_pool2d(x, 2, padding=2), "must be smaller than the kernel"),
    (lambda g, x: ge.avg_pool2d(x, 9), "the window spans 9 along the height"),
])
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


def test_conv_and_pool_gradients_with_symbolic_batch():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 6, 5), "float64")
    w = g.parameter("w", u(3, 2, 3, 2))
    h = ge.max_pool2d(ge.conv2d(x, w, stride=(1, 2), padding=1), 2, stride=1)
    loss = ge.sum(ge.avg_pool2d(h, (2, 1), padding=(1, 0)) * 0.5)
    result = ge.gradcheck(g, loss, ["x", "w"], {"x": distinct(3, 2, 6, 5)})
    assert result.ok, str(result)
