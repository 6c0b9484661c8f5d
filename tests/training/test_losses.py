"""ge.add_loss: each kind against PyTorch's loss (value and gradient), the labels
placeholder made from the data's array, and the errors that say what to fix."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.training.losses import add_loss

torch = pytest.importorskip("torch")

N, C = 7, 5


def _graph(pred_shape, kind, labels, **options):
    g = ge.Graph()
    p = g.placeholder("p", (None, *pred_shape[1:]), "float64")
    loss = add_loss(g, kind, p, "y", example=labels, **options)
    return g, p, loss


def _ours(g, loss, pred, labels):
    grads = ge.gradients(g, loss, ["p"])
    info = grads.gradient
    out = ge.run(grads, [info.loss, info.grads["p"]], {"p": pred, "y": labels})
    return float(out[info.loss]), out[info.grads["p"]]


def _torch(fn, pred, labels):
    t = torch.tensor(pred, requires_grad=True)
    value = fn(t, torch.tensor(labels))
    value.backward()
    return float(value), t.grad.numpy()


CASES = {
    "cross_entropy (class indices)": (
        "cross_entropy",
        (N, C),
        lambda r: r.integers(0, C, N),
        lambda p, y: torch.nn.functional.cross_entropy(p, y),
        {},
    ),
    "cross_entropy (probabilities)": (
        "cross_entropy",
        (N, C),
        lambda r: r.dirichlet(np.ones(C), N),
        lambda p, y: torch.nn.functional.cross_entropy(p, y),
        {},
    ),
    "binary_cross_entropy (N,)": (
        "binary_cross_entropy",
        (N,),
        lambda r: r.integers(0, 2, N).astype(np.float64),
        lambda p, y: torch.nn.functional.binary_cross_entropy_with_logits(p, y),
        {},
    ),
    "binary_cross_entropy (N, 1) with (N,) labels": (
        "binary_cross_entropy",
        (N, 1),
        lambda r: r.integers(0, 2, N).astype(np.float64),
        lambda p, y: torch.nn.functional.binary_cross_entropy_with_logits(p[:, 0], y),
        {},
    ),
    "mse": (
        "mse",
        (N, 3),
        lambda r: r.normal(size=(N, 3)),
        lambda p, y: torch.nn.functional.mse_loss(p, y),
        {},
    ),
    "l1": (
        "l1",
        (N, 3),
        lambda r: r.normal(size=(N, 3)),
        lambda p, y: torch.nn.functional.l1_loss(p, y),
        {},
    ),
    "huber": (
        "huber",
        (N, 3),
        lambda r: 3 * r.normal(size=(N, 3)),
        lambda p, y: torch.nn.functional.huber_loss(p, y, delta=0.7),
        {"delta": 0.7},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_matches_pytorch_value_and_gradient(case):
    kind, shape, make_labels, reference, options = CASES[case]
    rng = np.random.default_rng(3)
    pred = 4 * rng.normal(size=shape)  # large logits: the stable forms matter
    labels = make_labels(rng)
    g, _, loss = _graph(shape, kind, labels, **options)
    value, grad = _ours(g, loss, pred, labels)
    want_value, want_grad = _torch(reference, pred, labels)
    assert value == pytest.approx(want_value, rel=1e-10)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


def test_labels_placeholder_is_made_from_the_array():
    g = ge.Graph()
    logits = g.placeholder("logits", (None, 3))
    add_loss(g, "cross_entropy", logits, "labels", example=np.array([0, 2, 1], np.int32))
    node = g.node("labels")
    assert node.op == "placeholder" and g.tensor("labels").dtype == np.int64
    assert g.tensor("labels").shape == ("N",)
    assert g.training.predictions == "logits" and g.training.labels == "labels"
    assert g.training.loss_kind == "cross_entropy" and "accuracy" in g.training.metrics
    g2 = ge.Graph()
    out = g2.placeholder("out", (None, 1))
    add_loss(g2, "mse", out, "target", example=np.zeros(4, np.float64))
    assert g2.tensor("target").dtype == np.float64  # cast to float32 in the graph
    assert g2.training.metrics == ("loss", "mae")


def test_adding_the_same_loss_again_reuses_it():
    g = ge.Graph()
    logits = g.placeholder("logits", (None, 3))
    add_loss(g, "cross_entropy", logits, "y", example=np.array([0, 1]))
    count = len(g.nodes)
    add_loss(g, "cross_entropy", logits, "y", example=np.array([0, 1]))
    assert len(g.nodes) == count


def test_errors_say_what_to_fix():
    g = ge.Graph()
    logits = g.placeholder("logits", (None, 3))
    with pytest.raises(ge.TrainingError, match="unknown loss kind 'hinge'; the kinds are"):
        add_loss(g, "hinge", logits, "y")
    with pytest.raises(ge.TrainingError, match="its outputs are"):
        add_loss(g, "mse", "nope", "y")
    with pytest.raises(ge.TrainingError, match=r"do not fit predictions 'logits'"):
        add_loss(g, "mse", logits, "y", example=np.zeros((4, 2), np.float32))


def test_a_non_scalar_loss_is_refused_when_the_spec_is_set():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", shape=(3,))
    per_example = ge.sum(x * w, axis=1)
    with pytest.raises(
        ge.TrainingError,
        match=r"not a scalar; reduce it to one number, e\.g\. "
        r"ge\.mean\(loss\).*--loss KIND",
    ):
        g.set_training(per_example)
    ints = ge.argmax(x, axis=1)
    with pytest.raises(ge.TrainingError, match="the loss must be a float scalar"):
        g.set_training(ints)
