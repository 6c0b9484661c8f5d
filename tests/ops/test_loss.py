"""Losses against plain numpy, their gradients by finite differences, and the
inputs they must refuse."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.executor import compile_plan

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(4)
REDUCTIONS = ("mean", "sum", "none")


def u(*shape, low=-2.0, high=2.0):
    return R.uniform(low, high, size=shape)


def probabilities(*shape, axis=-1):
    p = R.uniform(0.1, 1.0, size=shape)
    return p / p.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis):
    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def reduce_ref(per_sample, reduction):
    if reduction == "mean":
        return np.asarray(per_sample.mean(), per_sample.dtype)
    if reduction == "sum":
        return np.asarray(per_sample.sum(), per_sample.dtype)
    return per_sample


def cross_entropy_outside_zero_ref(logits, labels, axis, reduction):
    """out_of_range="zero": one_hot's rule, a label outside [0, C) picks nothing."""
    log_prob = log_softmax_ref(logits, axis)
    classes = logits.shape[axis]
    hot = np.moveaxis(np.eye(classes + 1, dtype=logits.dtype)[:, :classes][labels], -1, axis)
    return reduce_ref(-np.sum(hot * log_prob, axis=axis), reduction), log_prob


def labels_with_outside(classes, *samples):
    """Labels in [0, classes) with -1 and classes (out of range) among them."""
    labels = R.integers(0, classes, size=samples)
    labels.reshape(-1)[:2] = [-1, classes]
    return labels


def cross_entropy_ref(logits, labels, axis, reduction):
    log_prob = log_softmax_ref(logits, axis)
    if labels.dtype.kind == "f":
        per_sample = -np.sum(labels * log_prob, axis=axis)
    else:
        one_hot = np.moveaxis(np.eye(logits.shape[axis], dtype=logits.dtype)[labels], -1, axis)
        per_sample = -np.sum(one_hot * log_prob, axis=axis)
    return reduce_ref(per_sample, reduction), log_prob


SPECS = []
for reduction in REDUCTIONS:
    for axis, logits, labels, kind in [
        (-1, u(4, 5), R.integers(0, 5, size=4), "int64"),
        # (N, C) kernels: classes worked on class-major up to 64 of them, a square
        # batch (N == C), and row-major beyond 64 classes.
        (1, u(4, 4), R.integers(0, 4, size=4).astype(np.int32), "square-int32"),
        (-1, u(3, 70), R.integers(0, 70, size=3), "70-classes"),
        (1, u(2, 3, 4), R.integers(0, 3, size=(2, 4)).astype(np.int32), "int32"),
        (-1, u(3, 4), probabilities(3, 4), "targets"),
        (0, u(3, 2, 2), probabilities(3, 2, 2, axis=0), "targets"),
    ]:
        SPECS.append(
            OpSpec(
                "softmax_cross_entropy",
                lambda x, t, a=axis, r=reduction: ge.softmax_cross_entropy(
                    x, t, axis=a, reduction=r, return_log_prob=True
                ),
                lambda x, t, a=axis, r=reduction: cross_entropy_ref(x, t, a, r),
                [logits, labels],
                id=f"{kind}-axis={axis}-{reduction}",
                order2=(axis == -1 and reduction != "sum"),
            )
        )
SPECS += [
    OpSpec(
        "softmax_cross_entropy",
        lambda x, t: ge.softmax_cross_entropy(x, t, return_log_prob=True),
        lambda x, t: cross_entropy_ref(x - x.max(axis=-1, keepdims=True), t, -1, "mean"),
        [u(3, 4, low=-500, high=500), np.array([0, 3, 1])],
        id="large-logits",
        grad=(),
    ),
    OpSpec(
        "softmax_cross_entropy",
        lambda x, t: ge.softmax_cross_entropy(x, t),
        lambda x, t: cross_entropy_ref(x, t, -1, "mean")[0],
        [u(4, 3), np.array([2, 0, 1, 1])],
        id="loss-only",
        batch=True,
    ),
    OpSpec(
        "softmax_cross_entropy",
        lambda x, t: ge.softmax_cross_entropy(x, t),
        lambda x, t: cross_entropy_ref(x, t, -1, "mean")[0],
        [u(5, 3), probabilities(5, 3) * 2.0],
        id="unnormalized-targets",
        grad=(0, 1),
    ),
]
for reduction in REDUCTIONS:
    # out_of_range="zero": the (N, C) kernels (class-major, row-major) and the general one.
    for axis, logits, labels, kind in [
        (-1, u(4, 5), labels_with_outside(5, 4), "int64"),
        (1, u(3, 70), labels_with_outside(70, 3).astype(np.int32), "70-classes-int32"),
        (1, u(2, 3, 4), labels_with_outside(3, 2, 4), "3d"),
    ]:
        SPECS.append(
            OpSpec(
                "softmax_cross_entropy",
                lambda x, t, a=axis, r=reduction: ge.softmax_cross_entropy(
                    x, t, axis=a, reduction=r, out_of_range="zero", return_log_prob=True
                ),
                lambda x, t, a=axis, r=reduction: cross_entropy_outside_zero_ref(x, t, a, r),
                [logits, labels],
                id=f"outside-zero-{kind}-axis={axis}-{reduction}",
                order2=(axis == -1 and reduction != "sum"),
            )
        )
for reduction in REDUCTIONS:
    SPECS.append(
        OpSpec(
            "mean_squared_error",
            lambda p, t, r=reduction: ge.mean_squared_error(p, t, r),
            lambda p, t, r=reduction: reduce_ref((p - t) ** 2, r),
            [u(3, 4), u(3, 4)],
            id=reduction,
            batch=True,
            order2=True,
        )
    )

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda g, x: ge.softmax_cross_entropy(x, g.placeholder("t", (None, 5), "int64")),
            "integer labels must have the shape of logits without the class axis 1, (N,)",
        ),
        (
            lambda g, x: ge.softmax_cross_entropy(x, g.placeholder("t", (4,), "int64"), axis=0),
            "without the class axis 0, (5,)",
        ),
        (
            lambda g, x: ge.softmax_cross_entropy(x, g.placeholder("t", (None, 5), "float64")),
            "probability targets must have the dtype and shape of logits",
        ),
        (
            lambda g, x: ge.softmax_cross_entropy(x, g.placeholder("t", (None, 4), "float32")),
            "probability targets must have the dtype and shape of logits",
        ),
        (
            lambda g, x: ge.softmax_cross_entropy(
                x, g.placeholder("t", (None, 5), "float32"), out_of_range="zero"
            ),
            "out_of_range='zero' applies to integer labels; labels are float32",
        ),
        (
            lambda g, x: ge.mean_squared_error(x, g.placeholder("t", (None, 1), "float32")),
            "pred (N, 5) and target (N, 1) must have the same shape",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    g = ge.Graph()
    x = g.placeholder("x", (None, 5), "float32")
    with pytest.raises(ge.ShapeError, match="node '") as info:
        build(g, x)
    assert fragment in str(info.value)


def test_bad_reduction_is_a_graph_error():
    g = ge.Graph()
    x = g.placeholder("x", (None, 5))
    with pytest.raises(ge.GraphError, match="'mean', 'sum', 'none'"):
        ge.mean_squared_error(x, x, reduction="avg")


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (np.array([0, 5, 1]), "label 5 at index (1,) is out of range for 5 classes"),
        (np.array([0, 1, -1]), "label -1 at index (2,) is out of range"),
    ],
)
def test_label_out_of_range_fails_at_run_time(labels, fragment):
    g = ge.Graph()
    x = g.placeholder("x", (None, 5))
    t = g.placeholder("t", (None,), "int64")
    loss = ge.softmax_cross_entropy(x, t, name="xent")
    with pytest.raises(ge.ExecutionError, match="node 'xent'") as info:
        ge.run(g, loss, {"x": np.zeros((3, 5), np.float32), "t": labels})
    assert fragment in str(info.value)


@pytest.mark.parametrize("classes", [5, 70])
def test_planned_runs_refuse_a_bad_label_after_good_ones(classes):
    g = ge.Graph()
    x = g.placeholder("x", (None, classes))
    t = g.placeholder("t", (None,), "int64")
    loss = ge.softmax_cross_entropy(x, t, name="xent")
    logits = R.standard_normal((3, classes)).astype(np.float32)
    plan = compile_plan(g, [loss.name], ["x", "t"])
    good = np.array([0, classes - 1, 1])
    first = plan.run({"x": logits, "t": good})[0]  # the recording run
    again = plan.run({"x": logits, "t": good})[0]  # into planned buffers
    assert again == first
    for bad in (np.array([0, -1, 1]), np.array([classes, 0, 1])):
        with pytest.raises(ge.ExecutionError, match="node 'xent'.*is out of range"):
            plan.run({"x": logits, "t": bad})


@pytest.mark.parametrize("classes", [5, 70])
def test_planned_runs_with_out_of_range_zero_give_labels_outside_no_loss(classes):
    """out_of_range="zero": a label out of range, between in-range batches, gives its
    sample a loss of +0.0 and no gradient, into planned buffers as unplanned."""
    g = ge.Graph()
    x = g.placeholder("x", (None, classes), "float64")
    t = g.placeholder("t", (None,), "int64")
    loss = ge.softmax_cross_entropy(x, t, reduction="none", out_of_range="zero")
    tg = ge.gradients(g, ge.sum(loss), ["x"])
    fetches = [loss.name, tg.gradient.grads["x"]]
    plan = compile_plan(tg, fetches, ["x", "t"])
    logits = R.standard_normal((4, classes))
    log_p = log_softmax_ref(logits, -1)
    p = np.exp(log_p)
    for labels in ([0, 1, 2, 3], [-1, classes, 2, -7], [0, 1, 2, 3], [3, -1, 2**40, 0]):
        labels = np.array(labels)
        inside = (labels >= 0) & (labels < classes)
        hot = np.eye(classes)[np.where(inside, labels, 0)] * inside[:, None]
        want_loss = -np.sum(log_p * hot, axis=1) + 0.0  # + 0.0: +0.0 where nothing is picked
        got_loss, got_grad = plan.run({"x": logits, "t": labels})
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
        np.testing.assert_array_equal(np.signbit(got_loss[~inside]), False)
        np.testing.assert_allclose(got_grad, (p - hot) * inside[:, None], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(got_grad[~inside], 0.0)


def test_integer_label_gradient_needs_a_known_class_count():
    g = ge.Graph()
    x = g.placeholder("x", (None, "C"))
    loss = ge.softmax_cross_entropy(x, g.placeholder("t", (None,), "int64"))
    with pytest.raises(ge.GradientError, match="the number of classes"):
        ge.gradients(g, loss, ["x"])


def test_cross_entropy_of_a_batch_has_the_batch_shape():
    g = ge.Graph()
    x = g.placeholder("x", (None, 7, 3))
    loss, log_prob = ge.softmax_cross_entropy(
        x, g.placeholder("t", (None, 3), "int32"), axis=1, reduction="none", return_log_prob=True
    )
    assert loss.shape == ("N", 3) and log_prob.shape == ("N", 7, 3)
