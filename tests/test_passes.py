"""The optimization passes: each one, and the whole pipeline, must leave every
result and every gradient unchanged on random inputs, for the models users bring
(MLP, CNN with batch norm, ResNet block, transformer layer, RNN) and for random
graphs (a seeded hypothesis property).  The optimized graphs must save, load,
draw and differentiate like any other."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import graphengine as ge
from graphengine.executor import compile_plan
from graphengine.passes import DEFAULT_PASSES, PASSES

R = np.random.default_rng(5)


def f32(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape).astype(np.float32)


# -- models ---------------------------------------------------------------------------


def mlp():
    g = ge.Graph("mlp")
    x = g.placeholder("x", (None, 6))
    labels = g.placeholder("labels", (None,), "int64")
    h = x
    for i, (k, m) in enumerate([(6, 8), (8, 8)]):
        with g.name_scope(f"layer{i}"):
            w = g.parameter("w", shape=(k, m))
            b = g.parameter("b", shape=(m,), init="normal")
            h = ge.relu(h @ w + b)
    with g.name_scope("head"):
        logits = h @ g.parameter("w", shape=(8, 4)) + g.parameter("b", shape=(4,))
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    feeds = {"x": f32(5, 6), "labels": R.integers(0, 4, size=5)}
    return g, loss, feeds


def cnn_batch_norm():
    g = ge.Graph("cnn")
    x = g.placeholder("x", (None, 1, 8, 8))
    labels = g.placeholder("labels", (None,), "int64")
    with g.name_scope("block"):
        k = g.parameter("kernel", shape=(3, 1, 3, 3), init="he_normal")
        h = ge.conv2d(x, k, padding=1)
        gamma = g.parameter("gamma", np.ones(3, np.float32) * 1.5)
        beta = g.parameter("beta", np.full(3, 0.1, np.float32))
        mean = g.parameter("running_mean", np.zeros(3, np.float32), trainable=False)
        var = g.parameter("running_var", np.ones(3, np.float32), trainable=False)
        h = ge.batch_norm(h, gamma, beta, mean, var)
        h = ge.max_pool2d(ge.relu(h), 2)
    flat = ge.reshape(h, (-1, 48))
    with g.name_scope("head"):
        logits = ge.matmul(flat, g.parameter("w", shape=(48, 5))) + g.parameter("b", shape=(5,))
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    feeds = {"x": f32(4, 1, 8, 8), "labels": R.integers(0, 5, size=4)}
    return g, loss, feeds


def resnet_block():
    g = ge.Graph("resnet")
    x = g.placeholder("x", (None, 2, 6, 6))
    h = x
    with g.name_scope("block"):
        for i in range(2):
            with g.name_scope(f"conv{i}"):
                k = g.parameter("kernel", shape=(2, 2, 3, 3), init="he_normal")
                h = ge.conv2d(h, k, padding=1)
                gamma = g.parameter("gamma", np.ones(2, np.float32))
                beta = g.parameter("beta", np.zeros(2, np.float32))
                rm = g.parameter("running_mean", np.zeros(2, np.float32), trainable=False)
                rv = g.parameter("running_var", np.ones(2, np.float32), trainable=False)
                h = ge.batch_norm(h, gamma, beta, rm, rv)
                if i == 0:
                    h = ge.relu(h)
        h = ge.relu(h + x)
    loss = ge.mean(h * h, name="loss")
    return g, loss, {"x": f32(3, 2, 6, 6)}


def transformer_layer():
    g = ge.Graph("transformer")
    t, d = 5, 8
    x = g.placeholder("x", (t, d))
    labels = g.placeholder("labels", (t,), "int64")

    def layer_norm(h, name):
        with g.name_scope(name):
            mu = ge.mean(h, axis=-1, keepdims=True)
            c = h - mu
            var = ge.mean(c * c, axis=-1, keepdims=True)
            return c / ge.sqrt(var + 1e-5) * g.parameter(
                "scale", np.ones(d, np.float32)
            ) + g.parameter("shift", np.zeros(d, np.float32))

    with g.name_scope("attention"):
        q = x @ g.parameter("wq", shape=(d, d))
        k = x @ g.parameter("wk", shape=(d, d))
        v = x @ g.parameter("wv", shape=(d, d))
        scores = ge.matmul(q, ge.transpose(k)) * (1.0 / np.sqrt(d))
        attended = ge.matmul(ge.softmax(scores, axis=-1), v)
        h = layer_norm(x + attended @ g.parameter("wo", shape=(d, d)), "norm1")
    with g.name_scope("mlp"):
        inner = ge.relu(h @ g.parameter("w1", shape=(d, 16)) + g.parameter("b1", shape=(16,)))
        h = layer_norm(h + inner @ g.parameter("w2", shape=(16, d)), "norm2")
    with g.name_scope("head"):
        # Cross-entropy written by hand: log-softmax times a one-hot, summed.
        logp = ge.log_softmax(h @ g.parameter("w", shape=(d, 4)), axis=-1)
        picked = ge.sum(logp * ge.one_hot(labels, 4), axis=-1)
    loss = ge.negative(ge.mean(picked), name="loss")
    return g, loss, {"x": f32(t, d), "labels": R.integers(0, 4, size=t)}


def rnn():
    g = ge.Graph("rnn")
    steps, n, d, hidden = 4, 3, 2, 5
    xs = [g.placeholder(f"x{t}", (None, d)) for t in range(steps)]
    with g.name_scope("rnn"):
        wx = g.parameter("wx", shape=(d, hidden))
        wh = g.parameter("wh", shape=(hidden, hidden))
        b = g.parameter("b", shape=(hidden,), init="normal")
        h = g.constant(np.zeros((1, hidden), np.float32), name="h0")
        for t, x in enumerate(xs):
            with g.name_scope(f"step{t}"):
                with g.name_scope("cell"):
                    h = (
                        ge.tanh(x @ wx + ge.broadcast_to(h, (1, hidden)) @ wh + b)
                        if t == 0
                        else ge.tanh(x @ wx + h @ wh + b)
                    )
    with g.name_scope("readout"):
        y = ge.sigmoid(h @ g.parameter("w", shape=(hidden, 1)) + g.parameter("c", shape=(1,)))
    loss = ge.mean(ge.square(y - 0.5), name="loss")
    return g, loss, {f"x{t}": f32(n, d) for t in range(steps)}


MODELS = {
    "mlp": mlp,
    "cnn_batch_norm": cnn_batch_norm,
    "resnet_block": resnet_block,
    "transformer_layer": transformer_layer,
    "rnn": rnn,
}


def _compare(a, b, fetches, feeds, training, rtol=2e-5, atol=2e-6):
    got_a = ge.run(a, fetches, feeds, training=training)
    got_b = ge.run(b, fetches, feeds, training=training)
    for name in fetches:
        np.testing.assert_allclose(
            got_b[name], got_a[name], rtol=rtol, atol=atol, err_msg=f"{name} (training={training})"
        )


def _gradient_graph(g, loss):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ge.GradientWarning)
        return ge.gradients(g, loss)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "passes", [[name] for name in PASSES] + [None], ids=lambda p: "all" if p is None else p[0]
)
def test_pass_keeps_results_and_gradients(model, passes):
    g, loss, feeds = MODELS[model]()
    tg = _gradient_graph(g, loss)
    opt, report = ge.optimize(tg, passes)
    assert [r.name for r in report.records] == list(passes or DEFAULT_PASSES)
    assert report.nodes_after == len(opt) <= len(tg)
    fetches = [tg.gradient.loss, *tg.gradient.grads.values()]
    for training in (True, False):
        _compare(tg, opt, fetches, feeds, training)
    assert opt.gradient.grads == tg.gradient.grads
    assert set(opt.gradient.nodes) <= set(opt.names())


EXPECTED_FUSIONS = {
    # Three weight gradients and two input gradients read a transposed operand.
    # Three bias gradients sum dz over the batch.
    "mlp": {
        "dense": 2,
        "relu_grad": 2,
        "softmax_cross_entropy_grad": 1,
        "matmul_transposed": 5,
        "sum_rows": 3,
    },
    "cnn_batch_norm": {"batch_norm_grad": 1, "relu_grad": 1, "softmax_cross_entropy_grad": 1},
    "resnet_block": {"batch_norm_grad": 2, "relu_grad": 2},
    "transformer_layer": {"dense": 1, "relu_grad": 1},
    "rnn": {"dense": 1},
}


@pytest.mark.parametrize("model", MODELS)
def test_pipeline_fuses_the_common_patterns(model):
    g, loss, _ = MODELS[model]()
    opt, report = ge.optimize(_gradient_graph(g, loss))
    ops = Counter(n.op for n in opt.nodes)
    for op, count in EXPECTED_FUSIONS[model].items():
        assert ops[op] >= count, f"{model}: {op} x{ops[op]}, expected {count}\n{report}"
    assert report.nodes_after < report.nodes_before


def test_transposed_matmuls_fuse_in_gradient_graphs_only():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", shape=(2, 3))
    loss = ge.sum(ge.tanh(x @ ge.transpose(w)))
    tg = _gradient_graph(g, loss)
    opt, _ = ge.optimize(tg, ["fuse"])
    fused = [n for n in opt.nodes if n.op == "matmul_transposed"]
    assert fused and all(n.name in opt.gradient.nodes for n in fused)
    forward = [n for n in opt.nodes if n.name not in opt.gradient.nodes]
    assert [n.op for n in forward if n.op.startswith("matmul")] == ["matmul"]
    feeds = {"x": f32(4, 3)}
    _compare(tg, opt, [tg.gradient.loss, tg.gradient.grads["w"]], feeds, training=True)


def test_bias_gradients_become_sum_rows_matching_sum_like():
    """sum_like(dz, b) of the mlp's three bias gradients -> sum_rows(dz): the
    same gradients up to rounding (another summation order), before and after;
    the forward graph and the sums over other axes keep sum_like."""
    g, loss, feeds = mlp()
    tg = _gradient_graph(g, loss)
    opt, _ = ge.optimize(tg, ["fuse"])
    before = Counter(n.op for n in tg.nodes)
    after = Counter(n.op for n in opt.nodes)
    assert after["sum_rows"] == 3 and after["sum_like"] == before["sum_like"] - 3
    assert all(n.name in opt.gradient.nodes for n in opt.nodes if n.op == "sum_rows")
    biases = [tg.gradient.grads[p] for p in ("layer0/b", "layer1/b", "head/b")]
    for training in (True, False):
        _compare(tg, opt, biases, feeds, training, rtol=1e-6, atol=1e-7)
    # A (1,) bias stretched over 4 columns sums over both axes: not fused.
    g2 = ge.Graph()
    x = g2.placeholder("x", (None, 4))
    b = g2.parameter("b", shape=(1,))
    tg2 = _gradient_graph(g2, ge.sum(ge.tanh(x + b)))
    opt2, _ = ge.optimize(tg2, ["fuse"])
    assert [n.op for n in opt2.nodes].count("sum_like") == 1
    assert not [n for n in opt2.nodes if n.op == "sum_rows"]
    _compare(tg2, opt2, [tg2.gradient.grads["b"]], {"x": f32(3, 4)}, True)


def test_log_softmax_times_one_hot_becomes_cross_entropy():
    # In a forward graph; in a gradient graph the log-softmax feeds its own rule too.
    g, loss, feeds = transformer_layer()
    g.mark_output(loss)
    opt, _ = ge.optimize(g)
    ops = Counter(n.op for n in opt.nodes)
    assert ops["softmax_cross_entropy"] == 1 and ops["log_softmax"] == 0 and ops["dense"] == 1
    _compare(g, opt, [loss.name], feeds, False)


@pytest.mark.parametrize("model", MODELS)
def test_optimized_forward_graph_differentiates(model, tmp_path):
    """Optimize the forward graph, then differentiate it: the fused ops' own
    gradient rules must give the same gradients, also after a save-load."""
    g, loss, feeds = MODELS[model]()
    g.mark_output(loss)
    opt, _ = ge.optimize(g)
    path = tmp_path / "opt.pb"
    opt.save(path)
    loaded = ge.load(path)
    assert [(n.name, n.op, n.inputs) for n in loaded.nodes] == [
        (n.name, n.op, n.inputs) for n in opt.nodes
    ]
    ta, tb = _gradient_graph(g, loss.name), _gradient_graph(loaded, loss.name)
    fetches = [loss.name, *ta.gradient.grads.values()]
    for training in (True, False):
        _compare(ta, tb, fetches, feeds, training)
    assert "digraph" in ge.to_dot(tb)


@pytest.mark.parametrize("model", ["mlp", "cnn_batch_norm", "rnn"])
def test_optimized_graph_passes_gradcheck(model):
    g, loss, feeds = MODELS[model]()
    g.mark_output(loss)
    opt, _ = ge.optimize(g)
    assert any(n.op in ("dense", "elementwise_chain") for n in opt.nodes)
    result = ge.gradcheck(opt, loss.name, None, feeds, rtol=1e-4, atol=1e-6)
    assert result.ok, str(result)


def test_optimized_gradient_graph_saves_and_loads(tmp_path):
    g, loss, feeds = cnn_batch_norm()
    opt, _ = ge.optimize(_gradient_graph(g, loss))
    path = tmp_path / "grad_opt.pb"
    opt.save(path)
    loaded = ge.load(path)
    assert loaded.gradient.nodes == opt.gradient.nodes
    fetches = [opt.gradient.loss, *opt.gradient.grads.values()]
    _compare(opt, loaded, fetches, feeds, True, rtol=0, atol=0)


def test_training_an_optimized_graph_matches():
    g, loss, feeds = mlp()
    g.set_training(loss, optimizer="sgd", learning_rate=0.1, batch_size=5, epochs=3)
    opt, _ = ge.optimize(g)
    assert opt.training == g.training
    data = {"x": feeds["x"], "labels": feeds["labels"]}
    a = ge.train(g.copy(), data, quiet=True) if _train_takes_quiet() else ge.train(g.copy(), data)
    b = ge.train(opt, data, quiet=True) if _train_takes_quiet() else ge.train(opt, data)
    for name in g.values:
        np.testing.assert_allclose(
            b.graph.values[name], a.graph.values[name], rtol=1e-5, atol=1e-6, err_msg=name
        )


def _train_takes_quiet() -> bool:
    import inspect

    return "quiet" in inspect.signature(ge.train).parameters


def test_optimized_forward_graph_exports_to_onnx():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g = ge.Graph("exported")
    x = g.placeholder("x", (None, 6))
    h = ge.tanh(x @ g.parameter("w", shape=(6, 5)) + g.parameter("b", shape=(5,)))
    g.mark_output(ge.square(ge.sigmoid(ge.exp(h @ g.parameter("w2", shape=(5, 2))))))
    opt, _ = ge.optimize(g)
    assert {"dense", "elementwise_chain"} <= {n.op for n in opt.nodes}
    model = ge.to_onnx(opt)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": f32(3, 6)}
    (theirs,) = session.run(None, feeds)
    np.testing.assert_allclose(theirs, ge.run(g, g.outputs[0], feeds), rtol=1e-5, atol=1e-6)


# -- single passes on small graphs --------------------------------------------------------


def test_dead_code_is_removed_but_interface_stays():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    g.placeholder("unused", (2,))
    g.parameter("p", np.ones(2, np.float32))
    ge.exp(ge.sin(x))
    g.mark_output(ge.cos(x, name="out"))
    opt, report = ge.optimize(g, ["dce"])
    assert [n.name for n in opt.nodes] == ["x", "unused", "p", "out"]
    assert report.records[0].nodes_before == 6 and report.records[0].nodes_after == 4


def test_cse_never_merges_random_ops():
    g = ge.Graph()
    x = g.placeholder("x", (100,))
    a = ge.dropout(x, 0.5, seed=1)
    b = ge.dropout(x, 0.5, seed=1)
    g.mark_output(a - b, ge.exp(x) + ge.exp(x))
    opt, _ = ge.optimize(g, ["cse"])
    ops = Counter(n.op for n in opt.nodes)
    assert ops["dropout"] == 2 and ops["exp"] == 1


def test_constant_folding_is_bounded():
    g = ge.Graph()
    x = g.placeholder("x", (4,))
    small = ge.exp(g.constant(np.arange(4, dtype=np.float32)))
    big = ge.broadcast_to(g.constant(np.float32(2.0)), (300, 300))
    g.mark_output(x * small, ge.sum(big) + ge.sum(x))
    opt, _ = ge.optimize(g, ["fold"])
    ops = Counter(n.op for n in opt.nodes)
    assert ops["exp"] == 0 and ops["broadcast_to"] == 1
    assert max(n.attrs["value"].size for n in opt.nodes if n.op == "constant") <= 65536
    opt2, _ = ge.optimize(g, ["fold"], max_fold_elements=1 << 20)
    assert Counter(n.op for n in opt2.nodes)["broadcast_to"] == 0
    feeds = {"x": f32(4)}
    _compare(g, opt, g.outputs, feeds, False)


def test_constant_folding_leaves_context_ops():
    g = ge.Graph()
    c = g.constant(np.ones((2, 3), np.float32))
    flag = ge.ops.api.training_flag(c)
    g.mark_output(flag * 2.0)
    opt, _ = ge.optimize(g, ["fold"])
    assert Counter(n.op for n in opt.nodes)["training_flag"] == 1
    assert float(ge.run(opt, g.outputs[0], {}, training=True)) == 2.0


def test_algebraic_rewrites():
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 3))
    t = ge.transpose(ge.transpose(x, (0, 2, 1)), (0, 2, 1))
    r = ge.reshape(ge.reshape(x, (-1, 6)), (-1, 3, 2))
    s = x * ge.broadcast_to(g.constant(np.float32(3.0)), (2, 3))
    one = x * 1.0
    g.mark_output(ge.exp(t), ge.exp(r), ge.exp(s), ge.exp(one))
    opt, _ = ge.optimize(g, ["simplify"])
    ops = Counter(n.op for n in opt.nodes)
    assert ops["transpose"] == 0 and ops["reshape"] == 1 and ops["broadcast_to"] == 0
    assert ops["multiply"] == 1
    _compare(g, opt, g.outputs, {"x": f32(3, 2, 3)}, False, rtol=0, atol=0)


@pytest.mark.parametrize("kept", [False, True])
def test_a_reshape_chain_back_to_the_input_type_goes_in_one_run(kept):
    """reshape(reshape(x, (-1,)), (-1, 3)) of an (N, 3) x is typed (None, 3), the
    flat axis having lost N; collapsed to reshape(x, (-1, 3)) it is (N, 3), x's
    own type, so it is x.  One run of the pass finds that (it took a second run,
    so optimize was not idempotent); a kept reshape stays as an identity."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    r = ge.reshape(ge.reshape(x, (-1,)), (-1, 3), name="r")
    g.mark_output(ge.exp(r), *([r] if kept else []))
    once, _ = ge.optimize(g, ["simplify"])
    assert [n.op for n in once.nodes] == ["placeholder", *(["identity"] if kept else []), "exp"]
    twice, _ = ge.optimize(once, ["simplify"])
    assert [n.op for n in twice.nodes] == [n.op for n in once.nodes]
    _compare(g, once, g.outputs, {"x": f32(4, 3)}, False, rtol=0, atol=0)


def test_the_pipeline_merges_what_simplify_makes_equal():
    """exp(x) + 0 is exp(x), so after simplify exp(x) * exp(x) and (exp(x) + 0) *
    (exp(x) + 0) are the same node: the default pipeline merges them in one run
    (cse ran only before simplify, so a second optimize still merged them)."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    e, a = ge.exp(x), ge.exp(x) + 0.0
    g.mark_output(ge.mean(e * e) + ge.mean(a * a))
    once, _ = ge.optimize(g)
    assert Counter(n.op for n in once.nodes)["mean"] == 1, [n.op for n in once.nodes]
    twice, _ = ge.optimize(once)
    assert [n.op for n in twice.nodes] == [n.op for n in once.nodes]
    _compare(g, once, g.outputs, {"x": f32(4, 3)}, False, rtol=0, atol=0)


def test_the_commands_pass_names_are_the_pipelines():
    from graphengine.cli import optimize_cmd  # spelled out there, to import nothing

    assert optimize_cmd._PASS_NAMES == tuple(PASSES)
    assert optimize_cmd._DEFAULT == DEFAULT_PASSES


def test_unknown_pass_and_keep_are_refused():
    g, loss, _ = mlp()
    with pytest.raises(ge.GraphError, match="unknown pass 'inline'; the passes are dce"):
        ge.optimize(g, ["inline"])
    with pytest.raises(ge.FeedError, match="no tensor 'nope'"):
        ge.optimize(g, keep=["nope"])


def test_kept_tensor_survives_under_its_name():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", shape=(3, 2))
    b = g.parameter("b", shape=(2,))
    z = ge.add(x @ w, b, name="z")
    g.mark_output(ge.relu(z, name="y"))
    opt, _ = ge.optimize(g, keep=["z"])
    feeds = {"x": f32(4, 3)}
    _compare(g, opt, ["z", "y"], feeds, False)
    opt2, _ = ge.optimize(g)
    assert "z" not in opt2 and opt2.node("y").op == "dense"


def test_matmul_plus_a_broadcast_bias_of_one_is_not_fused():
    """x @ w + b with b (1,) broadcast over the M columns: dense takes b (M,)
    only, so the sum stays as it is (the fuser emitted a dense that failed its
    shape check)."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 4))
    w = g.parameter("w", shape=(4, 3))
    b = g.parameter("b", shape=(1,), init="normal")
    g.mark_output(ge.tanh(x @ w + b, name="y"), ge.add(x @ w, b, name="z"))
    opt, _ = ge.optimize(g, ["fuse"])
    assert "dense" not in {n.op for n in opt.nodes}
    _compare(g, opt, g.outputs, {"x": f32(2, 4)}, False, rtol=0, atol=0)


def test_a_forward_where_that_hides_nan_is_not_fused_into_relu_grad():
    """where(x > 0, log(x), 0), a "safe log", gives 0 where x <= 0, hiding
    log(x)'s nan and -inf.  Only the gradient section's where(y > 0, dy, 0) is
    fused into relu_grad (which now gives 0 there too; a forward graph keeps
    the ops ONNX export knows)."""
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    zero = g.constant(np.float32(0))
    g.mark_output(ge.where(ge.greater(x, zero), ge.log(x), zero, name="y"))
    opt, _ = ge.optimize(g)
    assert "relu_grad" not in {n.op for n in opt.nodes}
    feeds = {"x": np.array([-1.0, 0.0, 2.0], np.float32)}
    y = ge.run(opt, ["y"], feeds)["y"]
    np.testing.assert_array_equal(y, [0.0, 0.0, np.log(np.float32(2))])
    _compare(g, opt, ["y"], feeds, False, rtol=0, atol=0)


def test_relu_gradient_is_zero_where_the_upstream_gradient_is_infinite():
    """sqrt(relu(z)) at z <= 0: sqrt's gradient is inf there and relu's mask is
    off, so z's gradient is 0 (PyTorch's too), through the fused dense and the
    relu moved behind max pooling as through the plain ops.  relu_grad as a
    product with the mask gave nan (0 * inf), and the nan spread to every weight
    gradient."""
    g = ge.Graph()
    x = g.placeholder("x", (4, 3), "float64")
    w = g.parameter("w", R.standard_normal((3, 5)))
    b = g.parameter("b", R.standard_normal(5))
    img = R.standard_normal((2, 1, 4, 4))
    img[0, 0, :2, :2] = -np.abs(img[0, 0, :2, :2])  # a window whose maximum is below 0
    image = g.parameter("image", img)
    dense_loss = ge.sum(ge.sqrt(ge.relu(x @ w + b)))
    pool_loss = ge.sum(ge.sqrt(ge.max_pool2d(ge.relu(image), 2)))
    loss = ge.add(dense_loss, pool_loss, name="loss")
    tg = _gradient_graph(g, loss)
    opt, _ = ge.optimize(tg)
    ops = Counter(n.op for n in opt.nodes)
    assert ops["dense"] == 1 and ops["relu_grad"] == 2
    feeds = {"x": R.standard_normal((4, 3))}
    z = feeds["x"] @ g.values["w"] + g.values["b"]
    assert (z < 0).any()
    dz = np.where(z > 0, 0.5 / np.sqrt(np.maximum(z, 1e-300)), 0.0)
    windows = img.reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 1, 2, 2, 4)
    top = windows.max(axis=-1)
    at = windows.argmax(axis=-1)
    d_windows = np.zeros_like(windows)
    np.put_along_axis(
        d_windows, at[..., None], np.where(top > 0, 0.5 / np.sqrt(np.abs(top)), 0.0)[..., None], -1
    )
    d_image = d_windows.reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(img.shape)
    want = {"w": feeds["x"].T @ dz, "b": dz.sum(axis=0), "image": d_image}
    for graph in (tg, opt):
        got = ge.run(graph, [graph.gradient.grads[k] for k in want], feeds)
        for name, value in zip(want, got.values()):
            np.testing.assert_allclose(value, want[name], rtol=1e-12, atol=0, err_msg=name)


def hand_written_cross_entropy(shape=(6, 4), axis=-1):
    """-mean(sum(log_softmax(z) * one_hot(y), axis)) in float64, with labels -1 and
    classes (out of range: one_hot gives them a row of zeros) among in-range ones."""
    g = ge.Graph("xent")
    classes = shape[axis]
    samples = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    x = g.placeholder("x", (None, 3), "float64")
    w = g.parameter("w", R.standard_normal((3, int(np.prod(shape[1:])))))
    z = ge.reshape(x @ w, (-1, *shape[1:]))
    labels = g.placeholder("labels", (None, *samples[1:]), "int64")
    hot = ge.one_hot(labels, classes, dtype="float64", axis=axis)
    picked = ge.sum(ge.log_softmax(z, axis=axis) * hot, axis=axis)
    loss = ge.negative(ge.mean(picked), name="loss")
    y = R.integers(0, classes, size=samples)
    y.reshape(-1)[:3] = [-1, classes, classes + 5]
    return g, loss, {"x": R.standard_normal((shape[0], 3)), "labels": y}, picked


@pytest.mark.parametrize("shape, axis", [((6, 4), -1), ((5, 3, 2), 1)], ids=["rows", "axis1"])
def test_cross_entropy_rewrite_keeps_one_hots_rule_for_out_of_range_labels(shape, axis, tmp_path):
    """The rewrite of sum(log_softmax * one_hot) into softmax_cross_entropy must
    not raise for a label out of range, nor change a number: the sample's loss and
    gradient are 0, as one_hot's zero row gives them.  The cross-entropy op
    raised (the graph ran before ge.optimize and failed after it)."""
    g, loss, feeds, picked = hand_written_cross_entropy(shape, axis)
    g.mark_output(loss)
    g.mark_output(picked)
    opt, _ = ge.optimize(g)
    _compare(g, opt, [loss.name, picked.name], feeds, False, rtol=1e-12, atol=1e-15)
    (xent,) = [n for n in opt.nodes if n.op == "softmax_cross_entropy"]
    assert xent.attrs["out_of_range"] == "zero"
    per_sample = ge.run(opt, picked.name, feeds).reshape(-1)
    np.testing.assert_array_equal(per_sample[:3], 0.0)
    assert np.all(per_sample[3:] < 0)
    # Differentiated after the rewrite (the cross-entropy's own rule, fused
    # kernels and planned buffers as the trainer runs them) and before it.
    want = ge.run(_gradient_graph(g, loss), [loss.name, "gradients/w"], feeds)
    for graph in (_gradient_graph(opt, loss), ge.optimize(_gradient_graph(g, loss))[0]):
        plan = compile_plan(graph, [loss.name, graph.gradient.grads["w"]], list(feeds))
        for _ in range(3):  # unplanned, then into planned buffers
            got = plan.run(feeds)
            np.testing.assert_allclose(got[0], want[loss.name], rtol=1e-12)
            np.testing.assert_allclose(got[1], want["gradients/w"], rtol=1e-10, atol=1e-14)
    for name in ("xent.pb", "xent.pbtxt"):
        opt.save(tmp_path / name)
        loaded = ge.load(tmp_path / name)
        assert [n.attrs for n in loaded.nodes] == [n.attrs for n in opt.nodes]


def test_cross_entropy_gradient_pattern_keeps_one_hots_rule_for_out_of_range_labels():
    """(exp(P) - one_hot(L)) * broadcast_like(G) fuses into
    softmax_cross_entropy_grad, whose default keeps one_hot's zero row for a
    label out of range: the row is exp(P) * G, as before the fusion."""
    g = ge.Graph()
    lp = g.placeholder("lp", (None, 4), "float64")
    labels = g.placeholder("labels", (None,), "int64")
    gs = g.placeholder("g", (None,), "float64")
    hot = ge.one_hot(labels, 4, dtype="float64")
    spread = ge.ops.api.broadcast_like(gs, lp, axes=[1])
    g.mark_output(ge.multiply(ge.exp(lp) - hot, spread, name="d"))
    opt, _ = ge.optimize(g, ["fuse"])
    assert "softmax_cross_entropy_grad" in {n.op for n in opt.nodes}
    z = R.standard_normal((5, 4))
    feeds = {
        "lp": z - np.log(np.exp(z).sum(axis=1, keepdims=True)),
        "labels": np.array([-1, 4, 0, 3, 2]),
        "g": R.standard_normal(5),
    }
    _compare(g, opt, ["d"], feeds, False, rtol=1e-14, atol=0)


def test_training_the_rewritten_cross_entropy_with_out_of_range_labels_matches():
    """ge.train of the optimized graph (the rewrite's cross-entropy, then the
    trainer's own fused plan) takes labels out of range as the unoptimized graph
    does: its label check passes the attribute's rule, and the weights match."""
    g, loss, feeds, _ = hand_written_cross_entropy()
    g.set_training(loss, optimizer="sgd", learning_rate=0.1, batch_size=3, epochs=2)
    opt, _ = ge.optimize(g)
    assert "softmax_cross_entropy" in {n.op for n in opt.nodes}
    a = ge.train(g.copy(), dict(feeds))
    b = ge.train(opt, dict(feeds))
    np.testing.assert_allclose(b.graph.values["w"], a.graph.values["w"], rtol=1e-12, atol=1e-14)
    assert not np.allclose(b.graph.values["w"], g.values["w"])


def test_rewritten_cross_entropy_exports_to_onnx():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    g, loss, feeds, picked = hand_written_cross_entropy()
    g.mark_output(picked)
    opt, _ = ge.optimize(g)
    assert "softmax_cross_entropy" in {n.op for n in opt.nodes}
    model = ge.to_onnx(opt)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, feeds)
    np.testing.assert_allclose(theirs, ge.run(g, picked.name, feeds), rtol=1e-12, atol=1e-15)


# -- random graphs (a property) ------------------------------------------------------------

UNARY = ["exp", "tanh", "sigmoid", "relu", "negative", "square", "sin"]
BINARY = ["add", "subtract", "multiply", "maximum"]


@st.composite
def random_graphs(draw):
    g = ge.Graph("random")
    x = g.placeholder("x", (None, 3))
    y = g.placeholder("y", (None, 3))
    w = g.parameter("w", shape=(3, 3))
    b = g.parameter("b", shape=(3,), init="normal")
    pool = [x, y, w]
    for _ in range(draw(st.integers(3, 14))):
        kind = draw(
            st.sampled_from(["unary", "binary", "const", "dense", "transpose", "reshape", "dup"])
        )
        a = draw(st.sampled_from(pool))
        if kind == "unary":
            pool.append(getattr(ge, draw(st.sampled_from(UNARY)))(a))
        elif kind == "binary":
            other = draw(st.sampled_from([t for t in pool if t.shape == a.shape] or [a]))
            pool.append(getattr(ge, draw(st.sampled_from(BINARY)))(a, other))
        elif kind == "const":
            c = ge.exp(g.constant(np.float32(draw(st.floats(-1, 1)))))
            pool.append(a * c + draw(st.sampled_from([0.0, 1.0])))
        elif kind == "dense" and a.ndim == 2 and a.shape[1] == 3:
            pool.append(ge.tanh(a @ w + b))
        elif kind == "transpose" and a.shape == (3, 3):
            pool.append(ge.transpose(ge.transpose(a)))
        elif kind == "reshape":
            pool.append(ge.reshape(ge.reshape(a, (-1,)), (-1, 3)))
        else:  # the same expression twice: CSE's case
            pool.append(ge.sin(a) + ge.sin(a))
    outs = [t for t in pool[3:] if "N" in t.shape][-2:] or [x * w[0]]
    loss = ge.add_n([ge.mean(t * t) for t in outs]) if len(outs) > 1 else ge.mean(outs[0] ** 2)
    return g, loss


@seed(20251201)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_graphs(), st.sampled_from([None, ["cse", "simplify"], ["fold", "fuse"]]))
def test_property_random_graphs_keep_values_and_gradients(built, passes):
    g, loss = built
    tg = _gradient_graph(g, loss)
    opt, _ = ge.optimize(tg, passes)
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.uniform(-1, 1, (4, 3)).astype(np.float32),
        "y": rng.uniform(-1, 1, (4, 3)).astype(np.float32),
    }
    fetches = [loss.name, *tg.gradient.grads.values()]
    _compare(tg, opt, fetches, feeds, False, rtol=1e-4, atol=1e-5)
    assert len(opt) <= len(tg)


# -- the command -----------------------------------------------------------------------------


def test_cli_optimize_writes_a_smaller_equivalent_file(tmp_path):
    g, loss, feeds = mlp()
    tg = _gradient_graph(g, loss)
    src, out = tmp_path / "grad.pb", tmp_path / "opt.pb"
    tg.save(src)
    done = subprocess.run(
        [sys.executable, "-m", "graphengine", "optimize", str(src), "-o", str(out), "--report"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "fuse" in done.stdout and "nodes before" in done.stdout
    assert f"{len(tg)} -> " in done.stdout
    opt = ge.load(out)
    _compare(tg, opt, [tg.gradient.loss, *tg.gradient.grads.values()], feeds, True)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphengine",
            "optimize",
            str(src),
            "-o",
            str(out),
            "--passes",
            "dce,bogus",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "unknown pass 'bogus'" in bad.stderr
