"""The executor's static memory plan: buffers reused across runs, in place where
an input dies, and never shared with what the user holds."""

import tracemalloc

import numpy as np
import pytest

import graphengine as ge
from graphengine.executor import compile_plan

R = np.random.default_rng(3)


def mlp_grad_graph():
    g = ge.Graph()
    x = g.placeholder("x", (None, 6))
    y = g.placeholder("y", (None,), "int64")
    w1 = g.parameter("w1", R.standard_normal((6, 5)).astype(np.float32))
    b1 = g.parameter("b1", np.zeros(5, np.float32))
    w2 = g.parameter("w2", R.standard_normal((5, 3)).astype(np.float32))
    h = ge.tanh(x @ w1 + b1)
    h = ge.reshape(h, (-1, 5)) * 2.0 + h  # a view of a planned buffer
    loss = ge.softmax_cross_entropy(h @ w2, y)
    tg = ge.gradients(g, loss, ["w1", "b1", "w2"])
    fetches = [tg.gradient.loss] + [tg.gradient.grads[p] for p in ("w1", "b1", "w2")]
    return tg, fetches


def feeds(n):
    return {"x": R.standard_normal((n, 6)).astype(np.float32), "y": R.integers(0, 3, n)}


def reference(tg, fetches, f):
    """The same fetches from a fresh plan's first (recording, unplanned) run."""
    return compile_plan(tg, fetches, list(f)).run(f)


def test_planned_runs_match_unplanned_ones_and_keep_earlier_results():
    tg, fetches = mlp_grad_graph()
    plan = compile_plan(tg, fetches, ["x", "y"])
    kept = []
    for n in (4, 4, 4, 7, 4, 7):  # two shape signatures, each planned once
        f = feeds(n)
        got = plan.run(f)
        for have, want in zip(got, reference(tg, fetches, f)):
            np.testing.assert_array_equal(have, want)
        kept.append((f, [a.copy() for a in got], got))
    assert len([b for b in plan._memory.values() if b]) == 2
    # A fetched result is never a buffer a later run writes into.
    for _, copies, got in kept:
        for a, b in zip(copies, got):
            np.testing.assert_array_equal(a, b)


def test_fetches_never_alias_parameters_or_feeds():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    w = g.parameter("w", np.ones(3, np.float32))
    plan = compile_plan(g, [ge.identity(w).name, ge.reshape(x, (3,)).name, (x + w).name], ["x"])
    f = {"x": np.arange(3, dtype=np.float32)}
    for _ in range(3):
        out = plan.run(f)
        assert not np.shares_memory(out[0], g.values["w"])
        assert not np.shares_memory(out[1], f["x"])


def test_elementwise_chain_runs_in_place_and_allocates_nothing_per_run():
    g = ge.Graph()
    x = g.placeholder("x", (256, 256))
    h = x
    for i in range(12):
        h = ge.tanh(h) * 1.5 + 0.1 if i % 2 else ge.exp(-h * h)
    total = ge.sum(h)
    plan = compile_plan(g, [total.name], ["x"])
    f = {"x": R.standard_normal((256, 256)).astype(np.float32)}
    first = plan.run(f)[0]
    (buffers,) = [b for b in plan._memory.values() if b]
    planned = [b for b in buffers if b is not None]
    assert len(planned) > 30 and len({id(b) for b in planned}) <= 2  # in place
    tracemalloc.start()
    try:
        plan.run(f)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        again = plan.run(f)[0]
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 256 * 256 * 4 // 2, peak  # no (256, 256) array allocated
    np.testing.assert_allclose(again, first, rtol=1e-6)


def test_reused_fetch_buffers_are_overwritten_by_the_next_run():
    tg, fetches = mlp_grad_graph()
    plan = compile_plan(tg, fetches, ["x", "y"], reuse_fetch_buffers=True)
    f1, f2 = feeds(5), feeds(5)
    plan.run(f1)
    first = plan.run(f1)
    want2 = reference(tg, fetches, f2)
    second = plan.run(f2)
    for have, want in zip(second, want2):
        np.testing.assert_array_equal(have, want)
    assert any(a is b for a, b in zip(first, second))  # the same buffers, reused


def _planned_equals_unplanned(graph, fetches, feed):
    """Three runs of one plan (recording, then planned twice) against a fresh
    plan's unplanned first run, bit for bit; returns the plan."""
    plan = compile_plan(graph, fetches, list(feed))
    want = reference(graph, fetches, feed)
    for _ in range(3):
        got = plan.run(feed)
        for have, expected in zip(got, want):
            assert have.dtype == expected.dtype and have.shape == expected.shape
            np.testing.assert_array_equal(have, expected)
    return plan


def test_out_kernels_of_reductions_and_adjoints_match_their_kernels():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 4))
    labels = g.placeholder("labels", (None,), "int64")
    # Each result feeds one more op, so it is an intermediate the plan may buffer.
    outs = [
        ge.sum(x, axis=1) * 1.5,
        ge.sum(x, axis=(0, 2), keepdims=True) * 1.5,
        ge.mean(x, axis=-1) * 1.5,
        ge.mean(x, axis=(1, 2), keepdims=True) * 2.0,
        ge.relu(x - 0.25) * 1.5,
        ge.one_hot(labels, 5, axis=0) * 1.5,
        ge.one_hot(labels, 4, dtype="float64") * 1.5,
    ]
    w = g.parameter("w", R.standard_normal((3, 4)).astype(np.float32))
    loss = ge.mean(ge.relu(x * w) * x) + ge.sum(ge.mean(x * w, axis=1))
    tg = ge.gradients(g, loss, ["w", "x"])
    fetches = [t.name for t in outs] + [tg.gradient.grads["w"], tg.gradient.grads["x"]]
    feed = {
        "x": R.standard_normal((5, 3, 4)).astype(np.float32),
        "labels": np.array([0, 3, 1, 7, -1]),  # out of range: zero rows
    }
    plan = _planned_equals_unplanned(tg, fetches, feed)
    (buffers,) = [b for b in plan._memory.values() if b]
    planned = {s.node.op for s, b in zip(plan.steps, buffers) if b is not None}
    # Steps without a ufunc kernel that now write into planned buffers.
    assert {"sum_like", "broadcast_like", "one_hot", "relu", "mean", "sum"} <= planned, planned


def test_softmax_cross_entropy_writes_both_outputs_into_buffers_unless_fetched():
    tg, fetches = mlp_grad_graph()
    for reuse, loss_planned in ((True, True), (False, False)):
        plan = compile_plan(tg, fetches, ["x", "y"], reuse_fetch_buffers=reuse)
        f = feeds(6)
        want = reference(tg, fetches, f)
        for _ in range(3):
            for have, expected in zip(plan.run(f), want):
                np.testing.assert_array_equal(have, expected)
        (buffers,) = [b for b in plan._memory.values() if b]
        (xent,) = [b for s, b in zip(plan.steps, buffers) if s.node.op == "softmax_cross_entropy"]
        loss_buffer, log_prob_buffer = xent
        assert log_prob_buffer.shape == (6, 3)
        assert (loss_buffer is not None) == loss_planned  # the fetched loss, only when reused


def test_a_fixed_shape_training_step_allocates_little_per_run():
    tg, fetches = mlp_grad_graph()
    plan = compile_plan(tg, fetches, ["x", "y"], reuse_fetch_buffers=True)
    f = feeds(256)

    def peak_of_one_run():
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            plan.run(f)
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    unplanned = peak_of_one_run()  # the recording run: every kernel allocates
    plan.run(f)
    planned = peak_of_one_run()
    # Only views and small Python objects are allocated.
    assert planned < unplanned / 10, (planned, unplanned)


def test_dense_writes_into_planned_buffers_except_sigmoid():
    g = ge.Graph()
    x = g.placeholder("x", (None, 6))
    w = g.parameter("w", R.standard_normal((6, 5)).astype(np.float32))
    b = g.parameter("b", R.standard_normal(5).astype(np.float32))
    activations = ("none", "relu", "tanh", "sigmoid")
    # Each result feeds one more op, so it is an intermediate the plan may buffer.
    outs = [ge.ops.api.dense(x, w, b, activation=a) * 1.5 for a in activations]
    plan = _planned_equals_unplanned(
        g, [t.name for t in outs], {"x": R.standard_normal((7, 6)).astype(np.float32)}
    )
    (buffers,) = [b for b in plan._memory.values() if b]
    planned = [s.node.attrs["activation"] for s, b in zip(plan.steps, buffers) if b is not None]
    assert [a for a in planned if a in activations] == ["none", "relu", "tanh"]


def test_a_kernel_failing_in_a_planned_run_keeps_the_plan():
    g = ge.Graph()
    x = g.placeholder("x", (None, 4))
    t = g.placeholder("t", (None,), "int64")
    loss = ge.softmax_cross_entropy(x * 2.0, t, name="xent")
    plan = compile_plan(g, [loss.name], ["x", "t"])
    logits = R.standard_normal((3, 4)).astype(np.float32)
    good, bad = {"x": logits, "t": np.array([0, 1, 3])}, {"x": logits, "t": np.array([0, 9, 3])}
    want = plan.run(good)[0]
    plan.run(good)
    with pytest.raises(ge.ExecutionError, match="node 'xent'"):
        plan.run(bad)
    (key,) = plan._programs  # still planned: the failure was the feed's, not the plan's
    assert plan.run(good)[0] == want and plan._memory[key] is not None


def test_a_feed_of_another_shape_or_dtype_after_a_planned_signature_is_still_refused():
    # The signature of a planned run skips check_feeds; a feed whose shape or
    # dtype differs gives another signature, which must be checked again, even
    # when it is the same array object reshaped in place.
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    plan = compile_plan(g, [ge.exp(x).name], ["x"])
    fed = np.ones((2, 3), np.float32)
    for _ in range(3):  # recorded, then planned
        plan.run({"x": fed})
    assert plan._programs
    for bad, field in (
        (np.ones((2, 4), np.float32), "shape"),
        (np.ones((2, 3), np.int64), "dtype"),
        (np.ones((6,), np.float32), "rank"),
    ):
        with pytest.raises(
            ge.FeedError, match=f"feed 'x' has {field if field != 'rank' else 'shape'}"
        ):
            plan.run({"x": bad})
    fed.shape = (3, 2)
    with pytest.raises(ge.FeedError, match="axis 1 is 2, expected 3"):
        plan.run({"x": fed})


def test_planned_runs_return_arrays_and_copies_as_unplanned_ones_do():
    tg, fetches = mlp_grad_graph()
    plan = compile_plan(tg, fetches + [fetches[1]], ["x", "y"])
    f = feeds(4)
    for _ in range(3):
        out = plan.run(f)
    assert plan._programs
    assert all(type(a) is np.ndarray for a in out)
    assert out[0].shape == ()  # the loss, a 0-d array, not a numpy scalar
    assert not np.shares_memory(out[1], out[-1])  # the second fetch of w1's grad is a copy


def test_packed_fetches_share_one_array_back_to_back_with_the_same_values():
    tg, fetches = mlp_grad_graph()
    grads = fetches[1:]
    plan = compile_plan(tg, fetches, ["x", "y"], reuse_fetch_buffers=True, packed_fetches=grads)
    f = feeds(4)
    plan.run(f)  # records
    for _ in range(2):
        out = plan.run(f)
        for got, want in zip(out, reference(tg, fetches, f)):
            np.testing.assert_array_equal(got, want)
    block = out[1].base
    assert block is not None and block.ndim == 1
    assert block.size == sum(g.size for g in out[1:])
    start = 0
    for g in out[1:]:
        assert g.base is block and np.shares_memory(g, block[start : start + g.size])
        start += g.size


def test_packing_needs_planned_buffers_of_one_dtype():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3))
    a = ge.exp(x)
    view = ge.reshape(a, (3, 2))  # a view of a's buffer, not a buffer of its own
    b = ge.cast(ge.tanh(x), "float64")
    f = {"x": np.ones((2, 3), np.float32)}
    for packed in ([a.name, view.name], [a.name, b.name]):
        fetches = [a.name, view.name, b.name]
        plan = compile_plan(g, fetches, ["x"], reuse_fetch_buffers=True, packed_fetches=packed)
        plan.run(f)
        out = plan.run(f)
        assert out[0].base is None or out[0].base.size == out[0].size  # a buffer of its own
        np.testing.assert_array_equal(out[0], np.exp(f["x"]))
    with pytest.raises(ge.FeedError, match="not fetched"):
        compile_plan(g, [a.name], ["x"], reuse_fetch_buffers=True, packed_fetches=[b.name])


def test_shape_signature_holds_shape_dtype_and_strides_and_none_for_what_is_missing():
    from graphengine.memory_plan import shape_signature

    a = np.zeros((3, 4), np.float32)
    values = [a, a.T, None, np.float64(2.0)]
    assert shape_signature(values, [1, 0], True) == (
        True,
        ((4, 3), a.dtype, (4, 16)),
        ((3, 4), a.dtype, (16, 4)),
    )
    assert shape_signature(values, [0, 2, 3], False) == (
        False,
        ((3, 4), a.dtype, (16, 4)),
        (None, None, None),
        ((), np.dtype(np.float64), ()),
    )
