"""Every metric against scikit-learn's on random data, accumulated over batches
as training and evaluation do."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.training.metrics import Comparison, EpochMetrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _accumulate(names, comparison, predictions, labels, batch=7):
    totals = EpochMetrics(names, comparison)
    for start in range(0, len(predictions), batch):
        stop = start + batch
        totals.add(len(predictions[start:stop]), 0.0, predictions[start:stop], labels[start:stop])
    return totals.result()


@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, c = 83, 6
    logits = rng.normal(size=(n, c))
    labels = rng.integers(0, c - 1, n)  # class 5 never a label, sometimes predicted
    comparison = Comparison("p", "y", binary=False)
    ours = _accumulate(
        ["accuracy", "top2_accuracy", "top3_accuracy", "precision", "recall", "f1"],
        comparison,
        logits,
        labels,
    )
    predicted = logits.argmax(axis=1)
    m = sklearn_metrics
    assert ours["accuracy"] == pytest.approx(m.accuracy_score(labels, predicted))
    for k in (2, 3):
        assert ours[f"top{k}_accuracy"] == pytest.approx(
            m.top_k_accuracy_score(labels, logits, k=k, labels=np.arange(c))
        )
    for name, fn in (
        ("precision", m.precision_score),
        ("recall", m.recall_score),
        ("f1", m.f1_score),
    ):
        want = fn(labels, predicted, average="macro", zero_division=0)
        assert ours[name] == pytest.approx(want, rel=1e-12), name


def test_one_hot_labels_and_binary_classifiers():
    rng = np.random.default_rng(7)
    n = 50
    logits = rng.normal(size=(n, 1))
    labels = rng.integers(0, 2, n).astype(np.float32)
    ours = _accumulate(
        ["accuracy", "precision", "recall", "f1"], Comparison("p", "y", binary=True), logits, labels
    )
    predicted = (logits[:, 0] > 0).astype(int)
    m = sklearn_metrics
    assert ours["accuracy"] == pytest.approx(m.accuracy_score(labels, predicted))
    assert ours["f1"] == pytest.approx(m.f1_score(labels, predicted, average="macro"))
    probabilities = rng.dirichlet(np.ones(4), n)
    scores = rng.normal(size=(n, 4))
    ours = _accumulate(
        ["accuracy", "recall"], Comparison("p", "y", binary=False), scores, probabilities
    )
    assert ours["recall"] == pytest.approx(
        m.recall_score(probabilities.argmax(1), scores.argmax(1), average="macro", zero_division=0)
    )


@pytest.mark.parametrize("columns", [1, 3])
def test_regression_metrics_match_scikit_learn(columns):
    rng = np.random.default_rng(columns)
    n = 64
    target = rng.normal(size=(n, columns)) * [1.0, 10.0, 0.1][:columns]
    predicted = target + rng.normal(scale=0.5, size=(n, columns))
    labels = target[:, 0] if columns == 1 else target  # (N,) labels for (N, 1) predictions
    ours = _accumulate(["mae", "r2"], Comparison("p", "y", binary=True), predicted, labels)
    assert ours["mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(target, predicted))
    assert ours["r2"] == pytest.approx(sklearn_metrics.r2_score(target, predicted), rel=1e-9)


def test_metrics_survive_a_checkpoint_round_trip():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    names = ["accuracy", "f1", "top2_accuracy"]
    comparison = Comparison("p", "y", binary=False)
    first = EpochMetrics(names, comparison)
    first.add(20, 1.0, logits[:20], labels[:20])
    resumed = EpochMetrics(names, comparison, first.sums())
    resumed.add(20, 2.0, logits[20:], labels[20:])
    assert resumed.result() == pytest.approx(
        _accumulate(names, comparison, logits, labels, batch=20) | {"loss": 1.5}
    )


def test_metric_names_are_checked():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    y = g.placeholder("y", (None,), "int64")
    loss = ge.softmax_cross_entropy(x * 2.0, y)
    g.set_training(loss, metrics=["loss", "top5_accuracy", "f1"])
    assert g.training.predictions == "multiply" and g.training.labels == "y"
    with pytest.raises(ge.TrainingError, match="'topK_accuracy'"):
        g.set_training(loss, metrics=["top0_accuracy"])
