"""The executor: feeds, fetches, pruning, plan caching, memory release, errors."""

import warnings

import numpy as np
import pytest

import graphengine as ge
from graphengine import executor


def small():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    y = g.placeholder("y", (None,))
    unused = g.placeholder("unused", (5,))
    a = ge.exp(x, name="a")
    b = ge.sum(a, axis=1, name="b")
    c = ge.multiply(b, y, name="c")
    ge.tanh(unused, name="other")
    return g, x, y, c


def test_fetch_list_gives_dict_single_gives_array():
    g, x, y, c = small()
    feeds = {"x": np.zeros((2, 3), np.float32), "y": np.ones(2, np.float32)}
    out = ge.run(g, ["b", c], feeds)
    assert list(out) == ["b", "c"]
    np.testing.assert_allclose(out["c"], [3, 3])
    assert isinstance(ge.run(g, "c", feeds), np.ndarray)


def test_unneeded_placeholders_are_not_required():
    g, *_ = small()
    out = ge.run(g, "a", {"x": np.zeros((1, 3), np.float32)})
    assert out.shape == (1, 3)


@pytest.mark.parametrize(
    "feeds, fragment",
    [
        ({"x": np.zeros((2, 3), np.float64), "y": np.ones(2, np.float32)}, "dtype float64"),
        (
            {"x": np.zeros((2, 4), np.float32), "y": np.ones(2, np.float32)},
            "axis 1 is 4, expected 3",
        ),
        ({"x": np.zeros((2,), np.float32), "y": np.ones(2, np.float32)}, "rank 1"),
        ({"x": np.zeros((2, 3), np.float32), "y": np.ones(3, np.float32)}, "every feed must agree"),
        ({"x": np.zeros((2, 3), np.float32)}, "missing feed for placeholder(s) 'y'"),
        ({"x": np.zeros((2, 3), np.float32), "y": np.ones(2, np.float32), "a": 1}, "not a placeh"),
        (
            {"x": np.zeros((2, 3), np.float32), "y": np.ones(2, np.float32), "zz": 1},
            "no placeholder",
        ),
        ({"x": [[1, 2], [3]], "y": np.ones(2, np.float32)}, "cannot make a float32 array"),
    ],
)
def test_bad_feeds_are_clear_errors(feeds, fragment):
    g, *_ = small()
    with pytest.raises(ge.FeedError) as info:
        ge.run(g, "c", feeds)
    assert fragment in str(info.value)


def test_python_lists_are_converted():
    g, *_ = small()
    out = ge.run(g, "c", {"x": [[0.0, 0.0, 0.0]], "y": [2.0]})
    assert out.dtype == np.float32 and out.tolist() == [6.0]


def test_unknown_fetch_is_a_feed_error():
    g, *_ = small()
    with pytest.raises(ge.FeedError, match="no tensor 'nope'"):
        ge.run(g, "nope", {})
    with pytest.raises(ge.FeedError, match="nothing to fetch"):
        ge.run(g, [], {})


def test_plan_is_compiled_once_per_signature(monkeypatch):
    g, *_ = small()
    calls = []
    real = executor.compile_plan
    monkeypatch.setattr(executor, "compile_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    feeds = {"x": np.zeros((2, 3), np.float32), "y": np.ones(2, np.float32)}
    for _ in range(5):
        ge.run(g, "c", feeds)
    ge.run(g, "c", {**feeds, "x": np.zeros((7, 3), np.float32), "y": np.ones(7, np.float32)})
    assert len(calls) == 1
    ge.run(g, ["b", "c"], feeds)
    assert len(calls) == 2
    ge.exp(g.tensor("c"))  # changing the graph drops cached plans
    ge.run(g, "c", feeds)
    assert len(calls) == 3


def test_plan_cache_lives_in_the_executor_keyed_by_graph_version():
    import gc
    import weakref

    g = small()[0]  # no tensor handles kept: they would hold the graph
    feeds = {"x": np.zeros((2, 3), np.float32), "y": np.ones(2, np.float32)}
    assert not hasattr(g, "_plans")  # the graph carries no executor state
    version = g.version
    ge.run(g, "c", feeds)
    (plan,) = executor._default_cache.plans(g)
    assert plan.graph is g
    ge.tanh(g.tensor("c"))
    assert g.version > version and executor._default_cache.plans(g) == []
    # Cached plans hold their graph weakly: the cache never keeps a graph alive.
    ge.run(g, "c", feeds)
    ref = weakref.ref(g)
    del g, plan
    gc.collect()
    assert ref() is None


def test_plan_cache_keeps_the_most_recently_used_plans():
    g, *_ = small()
    cache = executor.PlanCache(max_plans=2)
    first = cache.get(g, ["a"], ["x"])
    cache.get(g, ["b"], ["x"])
    assert cache.get(g, ["a"], ["x"]) is first  # a hit refreshes "a"
    cache.get(g, ["c"], ["x", "y"])  # evicts "b", the least recently used
    assert [p.fetches for p in cache.plans(g)] == [("a",), ("c",)]


def test_a_directly_compiled_plan_keeps_its_graph():
    g, *_ = small()
    plan = executor.compile_plan(g, ["a"], ["x"])
    del g
    out = plan.run({"x": np.zeros((1, 3), np.float32)})
    np.testing.assert_allclose(out[0], np.ones((1, 3)))


def test_intermediates_are_released_after_last_use():
    g = ge.Graph()
    x = g.placeholder("x", (4,))
    h = x
    for _ in range(10):
        h = ge.exp(h) * 0.5
    plan = executor.compile_plan(g, [h.name], ["x"])
    released = {s for step in plan.steps for s in step.release}
    computed = {s for step in plan.steps for s in step.outputs}
    assert computed - released == {plan.fetch_slots[0]}
    # The live set never exceeds a few slots, whatever the depth.
    live, peak = set(), 0
    for step in plan.steps:
        live |= set(step.outputs)
        peak = max(peak, len(live))
        live -= set(step.release)
    assert peak <= 3


def test_float32_stays_float32_through_every_step():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    y = ge.mean(ge.softplus(ge.sigmoid(x) * 2.0 - 1.0) / 3.0, axis=0)
    out = ge.run(g, y, {"x": np.ones((4, 3), np.float32)})
    assert out.dtype == np.float32


def test_kernel_failure_names_the_node_and_input_shapes():
    g = ge.Graph()
    x = g.placeholder("x", ("A", 3))
    y = g.placeholder("y", ("B", 3))
    ge.add(x, y, name="broken")  # A and B are different symbols: only known at run time
    with pytest.raises(ge.ExecutionError, match="node 'broken' \\(add\\) failed") as info:
        ge.run(g, "broken", {"x": np.zeros((2, 3), np.float32), "y": np.zeros((3, 3), np.float32)})
    assert "(2, 3)" in str(info.value) and isinstance(info.value.__cause__, ValueError)


def test_parameters_are_read_at_run_time():
    g = ge.Graph()
    w = g.parameter("w", np.ones(2, np.float32))
    y = ge.sum(w * 3.0)
    assert ge.run(g, y) == 6.0
    g.values["w"] = np.full(2, 2.0, np.float32)
    assert ge.run(g, y) == 12.0


def test_fetched_parameters_and_constants_are_copies():
    g = ge.Graph()
    w = g.parameter("w", np.ones(2, np.float32))
    c = g.constant(np.zeros(2, np.float32), name="c")
    out = ge.run(g, [w, c, ge.identity(w)])
    for value in out.values():
        value += 5
    np.testing.assert_array_equal(g.values["w"], [1, 1])
    np.testing.assert_array_equal(ge.run(g, c), [0, 0])


def test_identity_and_stop_gradient_share_their_input_slot():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    y = ge.identity(ge.exp(x))
    z = ge.stop_gradient(y) * 2.0
    plan = executor.compile_plan(g, [y.name, z.name], ["x"])
    assert [s.node.op for s in plan.steps] == ["exp", "multiply"]
    out = ge.run(g, [y, z], {"x": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(out[y.name], [1, 1, 1])
    np.testing.assert_array_equal(out[z.name], [2, 2, 2])


@pytest.mark.parametrize(
    "view",
    [
        lambda w: ge.reshape(w, (3, 2)),
        lambda w: ge.transpose(w),
        lambda w: ge.transpose(ge.reshape(w, (6,))[1:]),  # a chain of views
        lambda w: ge.expand_dims(w, 0),
        lambda w: ge.split(w, 3, axis=1)[0],
        lambda w: ge.cast(w, "float32"),
    ],
    ids=["reshape", "transpose", "chain", "expand_dims", "split", "cast"],
)
def test_fetched_views_of_parameters_and_feeds_are_copies(view):
    """A kernel that returns a view (declared in its op's view_map) must not hand
    users a live view of a parameter or of a fed array."""
    g = ge.Graph()
    w = g.parameter("w", np.arange(6, dtype=np.float32).reshape(2, 3))
    x = g.placeholder("x", (2, 3))
    fed = np.ones((2, 3), np.float32)
    out = ge.run(g, [view(w), view(x)], {"x": fed})
    for value in out.values():
        value += 100
    np.testing.assert_array_equal(g.values["w"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(fed, np.ones((2, 3)))


def test_views_of_computed_values_are_not_copied():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3))
    y = ge.reshape(ge.exp(x), (6,))
    plan = executor.compile_plan(g, [y.name], ["x"])
    assert plan.fetch_copies == (False,)


def test_two_fetches_of_one_buffer_do_not_alias_each_other():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3))
    y = ge.exp(x)
    out = ge.run(g, [y, ge.reshape(y, (6,)), ge.identity(y)], {"x": np.zeros((2, 3), np.float32)})
    first, *others = out.values()
    first += 1
    for other in others:
        np.testing.assert_array_equal(other, np.ones_like(other))


def test_split_into_one_section_gives_the_piece_itself():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3))
    (piece,) = ge.split(x, 1, axis=1)
    assert ge.run(g, piece, {"x": np.ones((2, 3), np.float32)}).shape == (2, 3)


def _updated_plan(kernel, **compile_options):
    """y = sum(w * x) fetched, and an update w -= x * lr from the run's x and y."""
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.ones(3, np.float32))
    prod = ge.multiply(w, x, name="prod")
    y = ge.sum(prod, name="y")
    update = executor.ParameterUpdate("w", (x.name, y.name), kernel, "prod")
    plan = executor.compile_plan(g, [y.name], ["x"], updates=[update], **compile_options)
    return g, plan


def test_parameter_updates_run_once_per_run_after_every_read():
    seen = []

    def subtract(w, x, y):
        seen.append(float(y))
        w -= 0.5 * x

    g, plan = _updated_plan(subtract)
    assert plan.updates == ("w",) and plan.steps[-1].update == "w"
    x = np.array([1.0, 2.0, 0.0], np.float32)
    # The first run records, the later ones run the planned program: each applies
    # the update once, after y read the parameter as it was.
    results = [float(plan.run({"x": x})[0]) for _ in range(4)]
    assert seen == results
    w = np.ones(3, np.float32)
    expected = []
    for _ in range(4):
        expected.append(float(np.sum(w * x)))
        w = w - 0.5 * x
    assert results == expected
    np.testing.assert_array_equal(g.values["w"], w)


def test_an_update_keeps_its_inputs_alive_to_the_end():
    """prod dies at exp, whose planned run would write into prod's buffer in place,
    unless the update that reads prod at the end keeps it alive."""
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    w = g.parameter("w", np.ones(3, np.float32))
    prod = ge.multiply(w, x, name="prod")
    y = ge.sum(ge.exp(prod), name="y")
    seen = []

    def record(w, prod):
        seen.append(prod.copy())
        w += 1.0

    update = executor.ParameterUpdate("w", (prod.name,), record, "prod")
    plan = executor.compile_plan(g, [y.name], ["x"], updates=[update])
    x_value = np.array([0.5, 1.0, 2.0], np.float32)
    for _ in range(3):
        plan.run({"x": x_value})
    assert plan._programs  # the later runs were planned
    for k, value in enumerate(seen):
        np.testing.assert_array_equal(value, (1.0 + k) * x_value)


def test_a_failing_update_is_reported_and_not_retried():
    calls = []

    def fail_later(w, x, y):
        calls.append(1)
        if len(calls) > 2:
            raise ValueError("boom")
        w += 1.0

    g, plan = _updated_plan(fail_later)
    plan.run({"x": np.ones(3, np.float32)})
    plan.run({"x": np.ones(3, np.float32)})  # planned now
    with pytest.raises(ge.ExecutionError, match="update of parameter 'w' \\(node 'prod'\\) failed"):
        plan.run({"x": np.ones(3, np.float32)})
    assert len(calls) == 3  # not run again unplanned
    np.testing.assert_array_equal(g.values["w"], [3, 3, 3])


@pytest.mark.parametrize(
    "fetch, fragment",
    [("w", "memory of a parameter"), ("view", "memory of a parameter")],
)
def test_a_fetch_of_an_updated_parameter_is_refused(fetch, fragment):
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.ones((1, 3), np.float32))
    view = ge.reshape(w, (3,), name="view")
    ge.sum(view * x, name="y")
    update = executor.ParameterUpdate("w", (x.name,), lambda w, x: None, "y")
    with pytest.raises(ge.FeedError, match=fragment):
        executor.compile_plan(g, [fetch, "y"], ["x"], updates=[update])


def test_updates_must_name_parameters_once():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    g.parameter("w", np.ones(3, np.float32))
    y = ge.sum(x, name="y")
    bad = executor.ParameterUpdate("x", (), lambda v: None, "y")
    with pytest.raises(ge.FeedError, match="'x', a placeholder node, not a parameter"):
        executor.compile_plan(g, [y.name], ["x"], updates=[bad])
    twice = [executor.ParameterUpdate("w", (), lambda v: None, "y")] * 2
    with pytest.raises(ge.FeedError, match="two updates"):
        executor.compile_plan(g, [y.name], ["x"], updates=twice)


@pytest.mark.parametrize(
    "fetches, feeds, message",
    [
        (3, {}, r"fetches must be a tensor \(its name or its Tensor\) or a list of them, not 3"),
        (["y", 3], {}, r"or a list of them, not \['y', 3\]"),
        ("y", np.zeros(3, np.float32), r"feeds must be a dict from placeholder names to arrays"),
        ("y", [("x", np.zeros(1, np.float32))], r"like \{'x': array\}, not a list"),
    ],
)
def test_fetches_and_feeds_of_the_wrong_kind_get_our_error(fetches, feeds, message):
    g = ge.Graph()
    ge.exp(g.placeholder("x", (None,)), name="y")
    with pytest.raises(ge.FeedError, match=message):
        ge.run(g, fetches, feeds)


def test_fetches_may_be_any_iterable_of_tensors():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    y = ge.exp(x, name="y")
    feeds = {"x": np.zeros(2, np.float32)}
    for fetches in (("y",), {"y"}, (t for t in [y])):
        np.testing.assert_array_equal(ge.run(g, fetches, feeds)["y"], [1.0, 1.0])


def _overflowing_plan():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    # exp overflows and log(0) divides by zero: planned runs ignore both.
    return executor.compile_plan(g, [ge.log(ge.exp(x) - ge.exp(x)).name], ["x"])


def test_planned_runs_ignore_float_errors_inside_and_restore_the_callers_state():
    plan = _overflowing_plan()
    x = {"x": np.array([1000.0, 0.0], np.float32)}
    with np.errstate(all="raise"):
        for _ in range(3):  # the recording run, then planned ones
            (out,) = plan.run(x)
            assert np.geterr() == {k: "raise" for k in ("divide", "over", "under", "invalid")}
    assert np.isnan(out[0]) and out[1] == -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan.run(x)  # the default state warns: a planned run does not
    assert np.geterr()["over"] == "warn"


def test_the_ignoring_state_follows_the_callers_buffer_size():
    old = np.setbufsize(1 << 16)
    try:
        token = executor._FLOAT_STATE.set(executor._ignoring_float_errors())
        try:
            assert np.getbufsize() == 1 << 16
            assert set(np.geterr().values()) == {"ignore"}
        finally:
            executor._FLOAT_STATE.reset(token)
    finally:
        np.setbufsize(old)
    token = executor._FLOAT_STATE.set(executor._ignoring_float_errors())
    try:
        assert np.getbufsize() == old
    finally:
        executor._FLOAT_STATE.reset(token)


def test_without_numpys_error_state_variable_runs_use_errstate(monkeypatch):
    monkeypatch.setattr(executor, "_FLOAT_STATE", executor._ErrstateVariable())
    monkeypatch.setattr(executor, "_derived_state", (object(), None))
    plan = _overflowing_plan()
    with np.errstate(all="raise"):
        for _ in range(3):
            (out,) = plan.run({"x": np.array([1000.0], np.float32)})
        assert np.geterr()["over"] == "raise"
    assert np.isnan(out[0])
