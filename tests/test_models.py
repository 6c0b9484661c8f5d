"""Composite models checked end to end: analytic gradients of whole models
against finite differences in float64, and (where PyTorch is installed) values
and gradients against PyTorch."""

import numpy as np
import pytest

import graphengine as ge

R = np.random.default_rng(0)


def mlp(dtype="float64"):
    g = ge.Graph("mlp")
    x = g.placeholder("x", (None, 5), dtype)
    labels = g.placeholder("labels", (None,), "int64")
    with g.name_scope("layer1"):
        w1 = g.parameter("w", R.normal(size=(5, 7)).astype(dtype) * 0.5)
        b1 = g.parameter("b", R.normal(size=7).astype(dtype) * 0.1)
        h = ge.tanh(x @ w1 + b1)
    with g.name_scope("layer2"):
        w2 = g.parameter("w", R.normal(size=(7, 3)).astype(dtype) * 0.5)
        b2 = g.parameter("b", np.zeros(3, dtype))
        logits = ge.identity(h @ w2 + b2, name="logits")
    loss = ge.softmax_cross_entropy(logits, labels)
    ge.identity(loss, name="loss")
    feeds = {"x": R.normal(size=(6, 5)).astype(dtype), "labels": R.integers(0, 3, size=6)}
    return g, feeds


def small_cnn():
    g = ge.Graph("cnn")
    x = g.placeholder("x", (None, 1, 6, 5), "float64")
    labels = g.placeholder("labels", (None,), "int64")
    w = g.parameter("conv/w", R.normal(size=(3, 1, 3, 3)) * 0.5)
    b = g.parameter("conv/b", R.normal(size=(3, 1, 1)) * 0.1)
    h = ge.relu(ge.conv2d(x, w, padding=1) + b)
    h = ge.max_pool2d(h, 2)  # (N, 3, 3, 2)
    h = ge.reshape(h, (-1, 18))
    w2 = g.parameter("dense/w", R.normal(size=(18, 4)) * 0.3)
    loss = ge.softmax_cross_entropy(h @ w2, labels)
    ge.identity(loss, name="loss")
    feeds = {"x": R.normal(size=(3, 1, 6, 5)), "labels": np.array([0, 3, 1])}
    return g, feeds


def test_mlp_with_softmax_cross_entropy():
    g, feeds = mlp()
    result = ge.gradcheck(g, "loss", None, feeds)
    assert result.ok, str(result)
    assert [c.name for c in result.checks] == ["layer1/w", "layer1/b", "layer2/w", "layer2/b"]


def test_small_cnn():
    g, feeds = small_cnn()
    result = ge.gradcheck(g, "loss", None, feeds, atol=1e-6)
    assert result.ok, str(result)


def test_batch_norm_in_training_mode():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 2, 2), "float64")
    gamma = g.parameter("gamma", R.uniform(0.5, 1.5, size=3))
    beta = g.parameter("beta", R.normal(size=3))
    mean = g.parameter("running_mean", np.zeros(3), trainable=False)
    var = g.parameter("running_var", np.ones(3), trainable=False)
    y = ge.batch_norm(x, gamma, beta, mean, var)
    ge.sum(ge.tanh(y) * g.constant(R.normal(size=(3, 2, 2))), name="loss")
    feeds = {"x": R.normal(size=(4, 3, 2, 2))}
    result = ge.gradcheck(g, "loss", ["gamma", "beta", "x"], feeds, training=True)
    assert result.ok, str(result)


def test_parameter_used_in_two_places_and_residual():
    g = ge.Graph()
    x = g.placeholder("x", (None, 4), "float64")
    w = g.parameter("w", R.normal(size=(4, 4)) * 0.5)
    h = x + ge.tanh(x @ w)  # residual
    h = h + ge.sigmoid(h @ w)  # w used again
    ge.mean(h * h, name="loss")
    result = ge.gradcheck(g, "loss", ["w", "x"], {"x": R.normal(size=(3, 4))})
    assert result.ok, str(result)


def test_float32_model_gradients_agree_with_float64():
    g32, feeds = mlp("float32")
    tg = ge.gradients(g32, "loss")
    out = ge.run(tg, list(tg.gradient.grads.values()), feeds)
    assert all(v.dtype == np.float32 for v in out.values())
    g64 = ge.gradcheck.__globals__["to_float64"](g32)
    tg64 = ge.gradients(g64, "loss")
    out64 = ge.run(
        tg64,
        list(tg64.gradient.grads.values()),
        {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()},
    )
    for k in out:
        np.testing.assert_allclose(out[k], out64[k], rtol=1e-4, atol=1e-6)


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    g, feeds = mlp()
    tg = ge.gradients(g, "loss")
    ours = ge.run(tg, ["loss", *tg.gradient.grads.values()], feeds)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in g.values.items()}
    x = torch.tensor(feeds["x"])
    h = torch.tanh(x @ params["layer1/w"] + params["layer1/b"])
    logits = h @ params["layer2/w"] + params["layer2/b"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(feeds["labels"]))
    loss.backward()
    np.testing.assert_allclose(ours["loss"], loss.item(), rtol=1e-10)
    for name, grad in tg.gradient.grads.items():
        np.testing.assert_allclose(ours[grad], params[name].grad.numpy(), rtol=1e-9, atol=1e-12)
