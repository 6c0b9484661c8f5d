"""Metrics of a training run and their log.

The loss is averaged over examples (each batch's loss weighted by its size, so
for a loss with ``reduction="mean"`` the epoch figure is the loss over all the
examples it saw).  The other metrics compare the predictions tensor with the
labels placeholder, accumulated over a whole pass (an epoch, or the validation
data), so that they equal the metric of all the examples at once:

* classification, from the predicted class: predictions with a class axis
  (N, C) give the argmax over the last axis; labels are class indices (N,) or
  one-hot / class probabilities (N, C), whose argmax is the label.  Predictions
  of one value per example, (N,) or (N, 1), are a binary classifier, predicting
  1 above 0.5 when the tensor comes out of a ``sigmoid`` node and above 0
  otherwise (logits); labels are 0 or 1.

  - ``accuracy``: the fraction classified correctly;
  - ``topK_accuracy``: the fraction whose label is among the K largest
    predictions (scikit-learn's ``top_k_accuracy_score``);
  - ``precision``, ``recall``, ``f1``: macro averages over the classes that occur
    in the labels or the predictions, a class never predicted counting 0
    (scikit-learn's ``average="macro"``, ``zero_division=0``).

* regression, element by element: ``mae``, the mean absolute error, and ``r2``,
  the coefficient of determination ``1 - SS_res / SS_tot`` of each output
  column, averaged over columns (scikit-learn's ``r2_score``; for a constant
  target column, 1 when it is predicted exactly and 0 otherwise).

Without ``predictions`` and ``labels`` in the training spec, a loss computed
by ``softmax_cross_entropy`` supplies them: its logits and its labels.

:class:`MetricsLog` appends one JSON object per line (a record per epoch, and
one every ``log_every`` steps with ``"kind": "step"``); ``graphengine plot``
draws them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import TrainingError
from ..graph import Graph, parse_ref
from ..input_files import _kind, open_input
from ..training_spec import top_k


@dataclass(frozen=True)
class Comparison:
    """How predictions are compared with labels: ``predictions`` (a tensor
    reference) against ``labels`` (a placeholder); ``threshold`` is used for a
    binary classifier (one value per example)."""

    predictions: str
    labels: str
    binary: bool
    threshold: float = 0.0

    def classes(self, predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, true class) of each example of a batch."""
        if self.binary:
            predicted = predictions.reshape(len(predictions), -1)[:, 0] > self.threshold
            truth = labels.reshape(len(labels), -1)[:, 0] > 0.5
            return predicted.astype(np.int64), truth.astype(np.int64)
        predicted = np.argmax(predictions, axis=-1)
        truth = labels if labels.ndim == predicted.ndim else np.argmax(labels, axis=-1)
        return predicted, truth.astype(np.int64, copy=False)

    def correct(self, predictions: np.ndarray, labels: np.ndarray) -> int:
        """How many examples of a batch are classified correctly."""
        predicted, truth = self.classes(predictions, labels)
        return int(np.count_nonzero(predicted == truth))


def find_comparison(
    graph: Graph, loss: str, predictions: str = "", labels: str = "", metric: str = "accuracy"
) -> Comparison:
    """What ``metric`` compares; TrainingError says what to set when the predictions
    or the labels cannot be found.

    >>> import graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3))
    >>> y = g.placeholder("y", (None,), "int64")
    >>> loss = ge.softmax_cross_entropy(x * 2.0, y)
    >>> find_comparison(g, loss.name)
    Comparison(predictions='multiply', labels='y', binary=False, threshold=0.0)
    """
    if not predictions or not labels:
        source = _classifier_loss(graph, loss)
        if source is None:
            raise TrainingError(
                f"metric {metric!r}: cannot tell the predictions and labels of loss '{loss}', "
                "which no softmax_cross_entropy node computes; name them in the training "
                "spec (predictions=..., labels=...) or on the command line (--predictions, "
                "--labels), or add the loss with --loss KIND (ge.add_loss)"
            )
        predictions = predictions or source[0]
        labels = labels or source[1]
    pred = graph.tensor(predictions)
    label_node = graph.node(parse_ref(labels)[0])
    if label_node.op != "placeholder":
        raise TrainingError(
            f"metric {metric!r}: labels '{labels}' must be a placeholder fed "
            f"from the data, not a {label_node.op} node"
        )
    shape = pred.shape
    binary = len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1)
    threshold = 0.5 if graph.node(pred.node).op == "sigmoid" else 0.0
    return Comparison(pred.name, label_node.name, binary, threshold)


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
            node.op in ("multiply", "divide") and _one_tensor_input(graph, node)
        ):
            name = next(
                parse_ref(r)[0] for r in node.inputs if graph.node(parse_ref(r)[0]).op != "constant"
            )
            seen += 1
            continue
        return None
    return None


def _one_tensor_input(graph: Graph, node) -> bool:
    return sum(graph.node(parse_ref(r)[0]).op != "constant" for r in node.inputs) == 1


class EpochMetrics:
    """Running sums over the batches of one epoch (or one evaluation pass) for the
    loss and ``metrics`` (names as in the training spec); ``comparison`` is
    needed for every metric but the loss.  ``sums`` restores a checkpoint's.

    Every metric is a function of sums (examples, correct and top-k counts,
    per-class confusion counts, absolute and squared errors, per-column sums of
    the targets), never of averages, so the sums of several slices of a batch
    add up to the sums of the batch: data-parallel training adds the processes'
    :meth:`batch_sums` (:func:`merge_sums`) and gets the single-process metrics.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("loss",),
        comparison: Comparison | None = None,
        sums: dict[str, float] | None = None,
    ) -> None:
        self.metrics = [m for m in metrics if m != "loss"]
        if self.metrics and comparison is None:
            raise TrainingError(f"metric {self.metrics[0]!r} needs predictions and labels")
        self.comparison = comparison
        self.totals: dict[str, float] = {"examples": 0, "loss_sum": 0.0}
        self.totals.update(sums or {})

    @property
    def examples(self) -> int:
        return int(self.totals["examples"])

    def _bump(self, key: str, amount: float) -> None:
        self.totals[key] = self.totals.get(key, 0) + amount

    def add(
        self,
        batch_size: int,
        loss: float,
        predictions: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        sums: dict[str, float] | None = None,
    ) -> None:
        """Count one batch: its size, its loss and, when metrics other than the loss
        are asked for, its predictions and labels, or their :meth:`batch_sums`
        already made (``sums``: data-parallel training adds up the processes')."""
        self._bump("examples", batch_size)
        self._bump("loss_sum", loss * batch_size)
        if sums is None and self.metrics and predictions is not None:
            assert labels is not None
            sums = self.batch_sums(predictions, labels)
        for key, value in (sums or {}).items():
            self._bump(key, value)

    def batch_sums(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The sums the metrics need from one batch (or one slice of it)."""
        assert self.comparison is not None
        out: dict[str, float] = {}
        classify = [m for m in self.metrics if m in ("accuracy", "precision", "recall", "f1")]
        if classify:
            predicted, truth = self.comparison.classes(predictions, labels)
            if "accuracy" in classify:
                out["correct"] = int(np.count_nonzero(predicted == truth))
            if len(classify) > ("accuracy" in classify):
                out.update(_class_counts(predicted, truth))
        for metric in self.metrics:
            k = top_k(metric)
            if k is not None:
                out[f"top{k}"] = self._top_k_correct(predictions, labels, k)
        if "mae" in self.metrics or "r2" in self.metrics:
            out.update(_regression_sums(predictions, labels))
        return out

    def _top_k_correct(self, predictions: np.ndarray, labels: np.ndarray, k: int) -> int:
        assert self.comparison is not None
        if self.comparison.binary:
            return self.comparison.correct(predictions, labels) if k < 2 else len(predictions)
        _, truth = self.comparison.classes(predictions, labels)
        scores = predictions.reshape(len(predictions), -1)
        if k >= scores.shape[1]:
            return len(scores)
        own = np.take_along_axis(scores, truth[:, None], axis=1)
        # Counted as scikit-learn ranks: the label is in the top k when fewer than k
        # classes score strictly higher.
        higher = np.count_nonzero(scores > own, axis=1)
        return int(np.count_nonzero(higher < k))

    def sums(self) -> dict[str, float]:
        """The running sums, as a checkpoint stores them."""
        return dict(self.totals)

    def result(self, prefix: str = "") -> dict[str, float]:
        """{"loss": mean loss, "accuracy": ..., ...} (keys with ``prefix``)."""
        t = self.totals
        n = max(t["examples"], 1)
        out = {f"{prefix}loss": t["loss_sum"] / n}
        for metric in self.metrics:
            out[f"{prefix}{metric}"] = self._value(metric, n)
        return out

    def _value(self, metric: str, n: float) -> float:
        t = self.totals
        k = top_k(metric)
        if k is not None:
            return t.get(f"top{k}", 0) / n
        if metric == "accuracy":
            return t.get("correct", 0) / n
        if metric in ("precision", "recall", "f1"):
            classes = sorted({int(key.split("/")[1]) for key in t if key.startswith("true/")})
            if not classes:
                return 0.0
            scores = []
            for c in classes:
                tp, guessed, actual = (t[f"tp/{c}"], t[f"predicted/{c}"], t[f"true/{c}"])
                denominator = {
                    "precision": guessed,
                    "recall": actual,
                    "f1": (guessed + actual) / 2,
                }[metric]
                scores.append(tp / denominator if denominator else 0.0)
            return float(np.mean(scores))
        if metric == "mae":
            return t.get("abs_error", 0.0) / max(t.get("elements", 0), 1)
        return self._r2(n)

    def _r2(self, n: float) -> float:
        t = self.totals
        columns = sorted({int(key.split("/")[1]) for key in t if key.startswith("r2/")})
        scores = []
        for j in columns:
            total, squares, sse = t[f"r2/{j}/sum"], t[f"r2/{j}/sum_sq"], t[f"r2/{j}/sse"]
            sst = squares - total * total / n
            if sst <= 1e-12 * max(squares, 1.0):
                scores.append(1.0 if sse == 0 else 0.0)  # scikit-learn's constant-target rule
            else:
                scores.append(1.0 - sse / sst)
        return float(np.mean(scores)) if scores else 0.0


def _class_counts(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per-class true positives, predictions and occurrences (the confusion counts
    that macro precision, recall and F1 need), for the classes that occur."""
    size = int(max(predicted.max(initial=0), truth.max(initial=0))) + 1
    hits = np.bincount(truth[predicted == truth], minlength=size)
    guessed = np.bincount(predicted, minlength=size)
    actual = np.bincount(truth, minlength=size)
    out: dict[str, float] = {}
    for c in np.flatnonzero(guessed + actual):
        out[f"tp/{c}"] = int(hits[c])
        out[f"predicted/{c}"] = int(guessed[c])
        out[f"true/{c}"] = int(actual[c])
    return out


def _regression_sums(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Absolute and squared errors and the per-column sums of the targets (R^2's
    total sum of squares follows from them without a mean taken first)."""
    pred = predictions.reshape(len(predictions), -1).astype(np.float64)
    true = labels.reshape(len(labels), -1).astype(np.float64)
    if true.shape != pred.shape:
        raise TrainingError(
            f"metrics mae/r2: labels of shape {labels.shape} do not fit "
            f"predictions of shape {predictions.shape}"
        )
    error = pred - true
    out: dict[str, float] = {"abs_error": float(np.abs(error).sum()), "elements": error.size}
    for j in range(true.shape[1]):
        out[f"r2/{j}/sum"] = float(true[:, j].sum())
        out[f"r2/{j}/sum_sq"] = float(np.square(true[:, j]).sum())
        out[f"r2/{j}/sse"] = float(np.square(error[:, j]).sum())
    return out


def merge_sums(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """The key-by-key sum of several processes' sums (a key one lacks counts 0),
    added in rank order so every process gets the same bits."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0) + value
    return out


#: A log line longer than this is not parsed but kept as it is: a damaged log with
#: no newline in gigabytes must not be read into memory whole.
MAX_LINE_BYTES = 1 << 20


class MetricsLog:
    """Per-epoch metrics as JSON lines, one object per epoch, appended and flushed
    as each epoch ends.

    The log is a regular file: a FIFO, a device or a folder at its path is
    refused with a TrainingError (opening a FIFO would block), as is a path
    that cannot be written, when training starts (:meth:`truncate_after`) rather
    than after the first epoch.  Reading never trusts the file: lines are read
    one at a time, at most :data:`MAX_LINE_BYTES` each, and lines that are not
    UTF-8 JSON objects are skipped (and kept on rewrite).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        fd = self._open_for_append()
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a damaged last line must not swallow this record
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise TrainingError(self._cannot_write(exc)) from None
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every record in the file (none when it does not exist); lines that are not
        JSON objects (a damaged or hand-edited log) are skipped."""
        if not os.path.lexists(self.path):
            return []
        records = []
        for line in self.lines():
            record = _parse(line)
            if isinstance(record, dict):
                records.append(record)
        return records

    def lines(self) -> Iterator[bytes | None]:
        """The lines of the log as bytes (None for a line over MAX_LINE_BYTES)."""
        for _, _, line in self._scan():
            yield line

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (by a run that a resume replaces), so
        the log of a resumed run reads as that of an uninterrupted one.  Lines that
        cannot be read (not UTF-8, not JSON, too long) are kept as they are.

        Called when training starts: it also makes sure the log can be written.
        """
        os.close(self._open_for_append())
        spans = [span for span in self._scan() if span[2] is None or span[2].strip()]
        if spans and not isinstance(_parse(spans[0][2]), dict):
            # A model or data file given as --log by mistake: appending would ruin it.
            raise TrainingError(
                f"metrics log '{self.path}' is not a JSON-lines log (its first line is "
                "not a JSON object), so nothing is appended to it; give --log "
                "(Trainer(log=...)) a new file, or move that file away"
            )
        kept = [span for span in spans if span[2] is None or _record_step(span[2]) <= step]
        if len(kept) == len(spans):
            return
        from ..serialize import atomic_file

        try:
            with atomic_file(self.path, sync=False) as out, open(self.path, "rb") as source:
                for start, stop, line in kept:
                    if line is None:  # copied through, in pieces
                        source.seek(start)
                        _copy(source, out, stop - start)
                    else:
                        out.write(line if line.endswith(b"\n") else line + b"\n")
        except OSError as exc:
            raise TrainingError(self._cannot_write(exc)) from None

    def _scan(self) -> Iterator[tuple[int, int, bytes | None]]:
        """(start, stop, line) of each line; line is None when it is too long."""
        with open_input(self.path, "metrics log", TrainingError) as f:
            while True:
                start = f.tell()
                line = f.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_LINE_BYTES:
                    while line and not line.endswith(b"\n"):
                        line = f.readline(MAX_LINE_BYTES)
                    yield start, f.tell(), None
                else:
                    yield start, f.tell(), line

    def _open_for_append(self) -> int:
        """A descriptor to append to the log, which must be (or become) a regular file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NONBLOCK: opening a FIFO never waits for the other end; fstat then
            # refuses it.  O_RDWR: append reads the last byte.
            # O_NOFOLLOW: appending through a link would write into whatever file it
            # names (outputs are replaced, never written through).
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise TrainingError(self._cannot_write(exc)) from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise TrainingError(
                f"metrics log '{self.path}' is {_kind(mode)}, not a regular file; give "
                "--log (Trainer(log=...)) the path of a file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd

    def _cannot_write(self, exc: OSError) -> str:
        what = "a folder" if isinstance(exc, IsADirectoryError) else None
        if exc.errno == errno.ENXIO:
            what = "a FIFO (named pipe) or a device"
        elif exc.errno == errno.ELOOP:
            what = "a symbolic link (give the path of the file itself)"
        reason = f"it is {what}" if what else (exc.strerror or str(exc))
        return (
            f"cannot write the metrics log '{self.path}': {reason}; give --log "
            "(Trainer(log=...)) a file in a folder you can write, with space left"
        )


def _copy(source: BinaryIO, out: BinaryIO, size: int) -> None:
    while size > 0:
        chunk = source.read(min(size, MAX_LINE_BYTES))
        if not chunk:
            return
        out.write(chunk)
        size -= len(chunk)


def _parse(line: bytes | None) -> Any:
    if line is None:
        return None
    try:
        return json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # not JSON, or "[[[[..." nested too deep
        return None


def _record_step(line: bytes) -> int:
    record = _parse(line)
    try:
        return int(record.get("step", 0))
    except (ValueError, AttributeError, TypeError, OverflowError):  # OverflowError: Infinity
        return 0
