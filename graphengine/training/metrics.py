"""Metrics of a training run and their per-epoch log.

The loss is averaged over examples (each batch's loss weighted by its size, so
for a loss with ``reduction="mean"`` the epoch figure is the loss over all the
examples it saw).  Accuracy compares the predictions tensor with the labels
placeholder:

* predictions with a class axis, shape (N, C): the predicted class is the
  argmax over the last axis; labels are class indices (N,) or one-hot / class
  probabilities (N, C), whose argmax is the label;
* predictions of one value per example, (N,) or (N, 1): a binary classifier,
  predicting 1 above 0.5 when the tensor comes out of a ``sigmoid`` node and
  above 0 otherwise (logits); labels are 0 or 1.

Without ``predictions`` and ``labels`` in the training spec, a loss computed
by ``softmax_cross_entropy`` supplies them: its logits and its labels.

:class:`MetricsLog` appends one JSON object per line per epoch, so a plot is a
few lines of code::

    rows = [json.loads(line) for line in open("metrics.jsonl")]
    plt.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..graph import Graph, parse_ref


@dataclass(frozen=True)
class Accuracy:
    """How to count correct predictions: ``predictions`` (a tensor reference)
    against ``labels`` (a placeholder); ``threshold`` is used for a binary
    classifier (one value per example)."""

    predictions: str
    labels: str
    binary: bool
    threshold: float = 0.0

    def correct(self, predictions: np.ndarray, labels: np.ndarray) -> int:
        """How many examples of a batch are classified correctly."""
        if self.binary:
            predicted = predictions.reshape(len(predictions), -1)[:, 0] > self.threshold
            truth = labels.reshape(len(labels), -1)[:, 0] > 0.5
        else:
            predicted = np.argmax(predictions, axis=-1)
            truth = labels if labels.ndim == predicted.ndim else np.argmax(labels, axis=-1)
        return int(np.count_nonzero(predicted == truth))


def find_accuracy(graph: Graph, loss: str, predictions: str = "",
                  labels: str = "") -> Accuracy:
    """The accuracy metric of a classifier; TrainingError says what to set when the
    predictions or the labels cannot be found.

    >>> import graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3))
    >>> y = g.placeholder("y", (None,), "int64")
    >>> loss, _ = ge.softmax_cross_entropy(x * 2.0, y)
    >>> find_accuracy(g, loss.name)
    Accuracy(predictions='multiply', labels='y', binary=False, threshold=0.0)
    """
    if not predictions or not labels:
        source = _classifier_loss(graph, loss)
        if source is None:
            raise TrainingError(
                f"metric 'accuracy': cannot tell the predictions and labels of loss '{loss}', "
                "which no softmax_cross_entropy node computes; name them in the training "
                "spec (predictions=..., labels=...) or on the command line (--predictions, "
                "--labels)")
        predictions = predictions or source[0]
        labels = labels or source[1]
    pred = graph.tensor(predictions)
    label_node = graph.node(parse_ref(labels)[0])
    if label_node.op != "placeholder":
        raise TrainingError(f"metric 'accuracy': labels '{labels}' must be a placeholder fed "
                            f"from the data, not a {label_node.op} node")
    shape = pred.shape
    binary = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    threshold = 0.5 if graph.node(pred.node).op == "sigmoid" else 0.0
    return Accuracy(pred.name, label_node.name, binary, threshold)


def _classifier_loss(graph: Graph, loss: str) -> tuple[str, str] | None:
    """(logits, labels) of the softmax_cross_entropy node the loss comes from, when the
    loss is that node's output or a reduction/scaling of it (as a weighted sum of
    losses is not)."""
    name = parse_ref(loss)[0]
    seen = 0
    while seen < 8:  # a short chain of mean / sum / identity / scaling
        node = graph.node(name)
        if node.op == "softmax_cross_entropy":
            logits, labels = node.inputs
            if graph.node(parse_ref(labels)[0]).op != "placeholder":
                return None
            return graph.tensor(logits).name, parse_ref(labels)[0]
        if node.op in ("mean", "sum", "identity") or (
                node.op in ("multiply", "divide") and _one_tensor_input(graph, node)):
            name = next(parse_ref(r)[0] for r in node.inputs
                        if graph.node(parse_ref(r)[0]).op != "constant")
            seen += 1
            continue
        return None
    return None


def _one_tensor_input(graph: Graph, node) -> bool:
    return sum(graph.node(parse_ref(r)[0]).op != "constant" for r in node.inputs) == 1


class EpochMetrics:
    """Running sums over the batches of one epoch (or one evaluation pass)."""

    def __init__(self, sums: dict[str, float] | None = None) -> None:
        sums = sums or {}
        self.examples = int(sums.get("examples", 0))
        self.loss_sum = float(sums.get("loss_sum", 0.0))
        self.correct = int(sums.get("correct", 0))

    def add(self, batch_size: int, loss: float, correct: int | None = None) -> None:
        self.examples += batch_size
        self.loss_sum += loss * batch_size
        if correct is not None:
            self.correct += correct

    def sums(self) -> dict[str, float]:
        """The running sums, as a checkpoint stores them."""
        return {"examples": self.examples, "loss_sum": self.loss_sum, "correct": self.correct}

    def result(self, accuracy: bool, prefix: str = "") -> dict[str, float]:
        """{"loss": mean loss, "accuracy": fraction correct} (keys with ``prefix``)."""
        n = max(self.examples, 1)
        out = {f"{prefix}loss": self.loss_sum / n}
        if accuracy:
            out[f"{prefix}accuracy"] = self.correct / n
        return out


class MetricsLog:
    """Per-epoch metrics as JSON lines, one object per epoch, appended and flushed
    as each epoch ends."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """Every record in the file (none when it does not exist)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (by a run that a resume replaces), so
        the log of a resumed run reads as that of an uninterrupted one."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) == len(lines):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0
