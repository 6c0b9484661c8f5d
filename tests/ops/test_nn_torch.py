"""A second opinion: conv2d, pooling, batch norm, softmax cross-entropy and a small
CNN compared with PyTorch, values and gradients, in float64.  Skipped when
PyTorch is not installed."""

import numpy as np
import pytest

import graphengine as ge

torch = pytest.importorskip("torch")
TF = torch.nn.functional
R = np.random.default_rng(5)


def u(*shape):
    return R.uniform(-1, 1, size=shape)


def ours(build, arrays, weights, training=False):
    """Output of build(*placeholders) and the gradient of sum(output * weights)
    with respect to every float input."""
    g = ge.Graph()
    tensors = [g.placeholder(f"p{i}", a.shape, a.dtype) for i, a in enumerate(arrays)]
    out = build(*tensors)
    loss = ge.sum(out * g.constant(weights))
    wrt = [f"p{i}" for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    tg = ge.gradients(g, loss, wrt)
    feeds = {f"p{i}": a for i, a in enumerate(arrays)}
    got = ge.run(tg, [out.name] + [tg.gradient.grads[w] for w in wrt], feeds, training=training)
    return got[out.name], [got[tg.gradient.grads[w]] for w in wrt]


def theirs(build, arrays, weights):
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = build(*tensors)
    (out * torch.tensor(weights)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors if t.requires_grad]


def compare(build_ours, build_theirs, arrays, training=False):
    # The weights need the output's shape, which torch tells us first.
    probe = build_theirs(*[torch.tensor(a) for a in arrays])
    weights = R.uniform(0.5, 1.5, size=tuple(probe.shape))
    expected, expected_grads = theirs(build_theirs, arrays, weights)
    value, grads = ours(build_ours, arrays, weights, training)
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    assert len(grads) == len(expected_grads)
    for have, want in zip(grads, expected_grads):
        np.testing.assert_allclose(have, want, rtol=1e-9, atol=1e-11)


def torch_pad(x, pads, value=0.0):
    top, left, bottom, right = pads
    return TF.pad(x, (left, right, top, bottom), value=value)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, pads, dilation",
    [
        ((2, 3, 9, 8), (4, 3, 3, 2), (1, 1), (1, 1, 1, 1), (1, 1)),
        ((2, 2, 10, 9), (5, 2, 3, 3), (2, 3), (0, 2, 1, 1), (2, 1)),
        ((1, 4, 7, 11), (2, 4, 2, 4), (3, 2), (2, 0, 0, 3), (1, 2)),
    ],
)
def test_conv2d(x_shape, w_shape, stride, pads, dilation):
    compare(
        lambda x, w: ge.conv2d(x, w, stride=stride, padding=pads, dilation=dilation),
        lambda x, w: TF.conv2d(torch_pad(x, pads), w, stride=stride, dilation=dilation),
        [u(*x_shape), u(*w_shape)],
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_same_padding(stride):
    def expected(x, w):
        if stride == 1:
            return TF.conv2d(x, w, padding="same")
        # torch's "same" needs stride 1: pad as TensorFlow and ONNX SAME_UPPER do.
        return TF.conv2d(torch_pad(x, (0, 1, 1, 1)), w, stride=2)

    compare(
        lambda x, w: ge.conv2d(x, w, stride=stride, padding="same"),
        expected,
        [u(2, 3, 6, 7), u(4, 3, 3, 3)],
    )


@pytest.mark.parametrize(
    "kernel, stride, pads",
    [
        ((2, 2), (2, 2), (0, 0, 0, 0)),
        ((3, 2), (2, 1), (1, 1, 1, 1)),
        ((3, 3), (1, 2), (2, 1, 0, 2)),
    ],
)
def test_max_pool2d(kernel, stride, pads):
    x = R.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.01  # no ties
    compare(
        lambda t: ge.max_pool2d(t, kernel, stride, pads),
        lambda t: TF.max_pool2d(torch_pad(t, pads, -np.inf), kernel, stride),
        [x],
    )


@pytest.mark.parametrize(
    "kernel, stride, padding, include",
    [
        ((2, 2), (2, 2), (0, 0), True),
        ((3, 2), (2, 1), (1, 1), True),
        ((3, 3), (1, 2), (1, 1), False),
        ((2, 3), (1, 1), (1, 0), False),
    ],
)
def test_avg_pool2d(kernel, stride, padding, include):
    compare(
        lambda t: ge.avg_pool2d(t, kernel, stride, padding, count_include_pad=include),
        lambda t: TF.avg_pool2d(t, kernel, stride, padding, count_include_pad=include),
        [u(2, 3, 7, 6)],
    )


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(shape, training):
    c = shape[1]
    mean, var = u(c), R.uniform(0.5, 2.0, size=c)

    def expected(x, gamma, beta):
        return TF.batch_norm(
            x, torch.tensor(mean), torch.tensor(var), gamma, beta, training=training, eps=1e-5
        )

    def build(x, gamma, beta):
        g = x.graph
        y = ge.batch_norm(x, gamma, beta, g.constant(mean), g.constant(var))
        return y

    compare(build, expected, [u(*shape) * 3 + 1, R.uniform(0.5, 2, c), u(c)], training)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", [False, True])
def test_softmax_cross_entropy(reduction, targets):
    logits = u(4, 5, 3) * 3
    if targets:
        labels = R.uniform(0.1, 1, size=(4, 5, 3))
        labels /= labels.sum(axis=1, keepdims=True)
    else:
        labels = R.integers(0, 5, size=(4, 3))

    def build(x, t):
        loss = ge.softmax_cross_entropy(x, t, axis=1, reduction=reduction)
        return loss

    compare(build, lambda x, t: TF.cross_entropy(x, t, reduction=reduction), [logits, labels])


@pytest.mark.parametrize("pool", [False, True], ids=["relu", "max_pool-of-relu"])
def test_relu_gradient_where_sqrt_of_zero_sends_inf(pool):
    """sqrt(relu(x)) at x <= 0: the gradient arriving at relu is inf, and relu's
    is 0 there (PyTorch's threshold_backward), not nan."""
    x = u(2, 3, 4, 4)
    x[0, 0, :2, :2] = -np.abs(x[0, 0, :2, :2])  # a pooling window at most 0
    x[1, 2, 0, 0] = 0.0

    def build_ours(x):
        h = ge.relu(x)
        return ge.sqrt(ge.max_pool2d(h, 2) if pool else h)

    def build_theirs(x):
        h = TF.relu(x)
        return torch.sqrt(TF.max_pool2d(h, 2) if pool else h)

    compare(build_ours, build_theirs, [x])
    _, (grad,) = ours(build_ours, [x], np.ones_like(build_theirs(torch.tensor(x)).numpy()))
    assert np.isfinite(grad).all() and (grad[x <= 0] == 0).all()


def test_small_cnn_loss_and_gradients():
    """conv + bias, relu, max pool, conv, batch norm, avg pool, dense, cross-entropy."""
    params = {
        "w1": u(6, 2, 3, 3) * 0.5,
        "b1": u(6, 1, 1),
        "w2": u(4, 6, 3, 2) * 0.5,
        "gamma": R.uniform(0.5, 1.5, 4),
        "beta": u(4),
        "dense": u(4 * 2 * 2, 3),
    }
    x = u(5, 2, 9, 8)
    labels = R.integers(0, 3, size=5)
    stats = np.zeros(4), np.ones(4)

    g = ge.Graph()
    px = g.placeholder("x", (None, 2, 9, 8), "float64")
    pl = g.placeholder("labels", (None,), "int64")
    p = {k: g.parameter(k, v) for k, v in params.items()}
    h = ge.max_pool2d(ge.relu(ge.conv2d(px, p["w1"], padding=1) + p["b1"]), 2)  # (N,6,4,4)
    h = ge.conv2d(h, p["w2"], stride=(1, 2), padding=(1, 1, 0, 1))  # (N,4,3,3)
    h = ge.batch_norm(h, p["gamma"], p["beta"], g.constant(stats[0]), g.constant(stats[1]))
    h = ge.avg_pool2d(ge.relu(h), 2, stride=1)  # (N,4,2,2)
    flat = ge.reshape(h, (-1, 16))
    loss = ge.softmax_cross_entropy(ge.matmul(flat, p["dense"]), pl)
    tg = ge.gradients(g, loss)
    got = ge.run(
        tg, [loss.name, *tg.gradient.grads.values()], {"x": x, "labels": labels}, training=True
    )

    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    th = TF.max_pool2d(TF.relu(TF.conv2d(torch.tensor(x), t["w1"], padding=1) + t["b1"]), 2)
    th = TF.conv2d(TF.pad(th, (1, 1, 1, 0)), t["w2"], stride=(1, 2))
    th = TF.batch_norm(
        th,
        torch.zeros(4, dtype=torch.float64),
        torch.ones(4, dtype=torch.float64),
        t["gamma"],
        t["beta"],
        training=True,
        eps=1e-5,
    )
    th = TF.avg_pool2d(TF.relu(th), 2, stride=1)
    t_loss = TF.cross_entropy(th.reshape(-1, 16) @ t["dense"], torch.tensor(labels))
    t_loss.backward()
    np.testing.assert_allclose(got[loss.name], t_loss.item(), rtol=1e-10)
    for name in params:
        np.testing.assert_allclose(
            got[tg.gradient.grads[name]], t[name].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name
        )


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation, groups",
    [
        ((2, 4, 7, 6), (6, 2, 3, 3), (1, 2), (1, 0), (1, 1), 2),
        ((2, 3, 8, 7), (3, 1, 3, 3), (2, 1), (1, 1), (2, 1), 3),  # depthwise
    ],
)
def test_grouped_conv2d(x_shape, w_shape, stride, padding, dilation, groups):
    compare(
        lambda x, w: ge.conv2d(x, w, stride, padding, dilation, groups),
        lambda x, w: TF.conv2d(
            x, w, stride=stride, padding=padding, dilation=dilation, groups=groups
        ),
        [u(*x_shape), u(*w_shape)],
    )


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, extra, dilation, groups",
    [
        ((2, 4, 5, 4), (4, 3, 3, 3), (2, 2), (1, 1), (1, 0), (1, 1), 1),
        ((1, 4, 4, 5), (4, 2, 2, 3), (3, 1), (0, 1), (2, 0), (1, 2), 2),
    ],
)
def test_conv_transpose2d(x_shape, w_shape, stride, padding, extra, dilation, groups):
    compare(
        lambda x, w: ge.conv_transpose2d(x, w, stride, padding, dilation, groups, extra),
        lambda x, w: TF.conv_transpose2d(
            x,
            w,
            stride=stride,
            padding=padding,
            output_padding=extra,
            groups=groups,
            dilation=dilation,
        ),
        [u(*x_shape), u(*w_shape)],
    )


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, dilation, ceil",
    [
        ((2, 3, 9), 3, 2, 1, 1, True),
        ((2, 2, 9, 8), (3, 2), (2, 2), (1, 1), (1, 2), True),
        ((1, 2, 5, 6, 7), 2, (1, 2, 2), (1, 0, 1), 1, False),
    ],
)
def test_nd_pools_with_ceil_mode_and_dilation(shape, kernel, stride, padding, dilation, ceil):
    rank = len(shape) - 2
    x = R.permutation(int(np.prod(shape))).reshape(shape) * 0.01  # no ties
    ge_max, ge_avg = getattr(ge, f"max_pool{rank}d"), getattr(ge, f"avg_pool{rank}d")
    torch_max = getattr(TF, f"max_pool{rank}d")
    torch_avg = getattr(TF, f"avg_pool{rank}d")
    compare(
        lambda t: ge_max(t, kernel, stride, padding, dilation, ceil),
        lambda t: torch_max(t, kernel, stride, padding, dilation, ceil),
        [x],
    )
    if dilation == 1:  # PyTorch's average pools have no dilation
        for include in (True, False):
            compare(
                lambda t, i=include: ge_avg(t, kernel, stride, padding, 1, ceil, i),
                lambda t, i=include: torch_avg(t, kernel, stride, padding, ceil, i),
                [x],
            )
