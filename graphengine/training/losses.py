"""Adding a loss to a graph that has none: ``ge.add_loss`` and ``graphengine train
--loss KIND --predictions OUTPUT --labels ARRAY``.

Each kind is built from existing ops (so its gradient needs no rule of its
own), under the name scope ``<kind>_loss``, as the mean over every element:

* ``cross_entropy``: softmax cross-entropy from logits (N, C) and integer class
  labels (N,), or class probabilities (N, C);
* ``binary_cross_entropy``: from logits x and 0/1 (or soft) labels y, in the
  stable form ``max(x, 0) - x * y + log(1 + exp(-|x|))`` (PyTorch's
  ``BCEWithLogitsLoss``);
* ``mse``: ``(p - y) ** 2``; ``l1``: ``|p - y|``;
* ``huber``: ``0.5 d**2`` for ``|d| <= delta``, else ``delta * (|d| - 0.5 delta)``
  (PyTorch's ``HuberLoss``), written as ``0.5 m**2 + delta (|d| - m)`` with
  ``m = min(|d|, delta)``.

The labels placeholder is made from an example array (the data file's): its
dtype and its shape after the batch axis, with a symbolic batch dim.  Labels of
shape (N,) against predictions (N, 1) are reshaped in the graph, and labels of
another float dtype are cast, as a user of PyTorch would expect to just work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TrainingError
from ..graph import Graph, Tensor, parse_ref, require_graph
from ..ops import api as ops
from ..training_spec import LOSS_KINDS
from .data import Dataset

#: Metrics a loss kind reports by default.
DEFAULT_METRICS = {
    "cross_entropy": ("loss", "accuracy"),
    "binary_cross_entropy": ("loss", "accuracy"),
    "mse": ("loss", "mae"),
    "l1": ("loss", "mae"),
    "huber": ("loss", "mae"),
}


def add_loss(
    graph: Graph,
    kind: str,
    predictions: Tensor | str,
    labels: Tensor | str,
    *,
    example: Any = None,
    delta: float = 1.0,
    metrics: Any = None,
    **settings: Any,
) -> Tensor:
    """Add a loss of ``kind`` (one of LOSS_KINDS) comparing ``predictions`` (a
    tensor or an output name) with ``labels``, and make it the graph's training
    loss (``graph.training``: the rest of an existing spec is kept, ``settings``
    laid over it as in ``set_training``).  Returns the scalar loss tensor.

    ``labels`` is a placeholder (tensor or name), or the name of a placeholder to
    create, shaped and typed like ``example`` (an array of labels, one row per
    example); without ``example``, integer class indices (N,) for
    ``cross_entropy`` and the predictions' shape and dtype otherwise.
    ``metrics`` defaults to loss and accuracy for classifiers, loss and mae for
    regressions.

    Raises TrainingError for an unknown kind or labels that cannot fit.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 4))
    >>> logits = x @ g.parameter("w", shape=(4, 3))
    >>> loss = ge.add_loss(g, "cross_entropy", logits, "y", example=np.array([0, 2, 1]))
    >>> g.training.loss, g.training.labels, g.training.metrics
    ('cross_entropy_loss/loss', 'y', ('loss', 'accuracy'))
    """
    require_graph(graph, "ge.add_loss")
    if kind not in LOSS_KINDS:
        raise TrainingError(f"unknown loss kind {kind!r}; the kinds are {', '.join(LOSS_KINDS)}")
    pred = _prediction(graph, predictions)
    if pred.dtype.kind != "f":
        raise TrainingError(
            f"loss {kind}: predictions '{pred.name}' are {pred.dtype.name}; they "
            "must be float (logits or values)"
        )
    target = _labels(graph, kind, pred, labels, example)
    existing = _existing_loss(graph, kind, pred, target)
    if existing is not None:
        loss = existing
    else:
        with graph.name_scope(f"{kind}_loss"):
            value = _BUILDERS[kind](pred, _fit_labels(kind, pred, target), delta)
            # A second loss of one kind (other predictions) gets a numbered name.
            free = f"{kind}_loss/loss" not in graph
            loss = ops.identity(value, name="loss" if free else None)
    from .settings import resolve_spec

    chosen = metrics if metrics is not None else DEFAULT_METRICS[kind]
    if graph.training is not None:
        graph.training = resolve_spec(
            graph,
            loss=loss.name,
            predictions=pred.name,
            labels=target.node,
            metrics=list(chosen),
            loss_kind=kind,
            **settings,
        )
    else:
        graph.set_training(
            loss,
            predictions=pred.name,
            labels=target.node,
            metrics=list(chosen),
            loss_kind=kind,
            **settings,
        )
    return loss


def _prediction(graph: Graph, predictions: Tensor | str) -> Tensor:
    if isinstance(predictions, Tensor):
        return predictions
    try:
        return graph.tensor(predictions)
    except Exception:
        outputs = ", ".join(repr(o) for o in graph.outputs) or "none"
        raise TrainingError(
            f"predictions {predictions!r} is not a tensor of graph "
            f"'{graph.name}'; its outputs are {outputs}"
        ) from None


def _labels(graph: Graph, kind: str, pred: Tensor, labels: Tensor | str, example: Any) -> Tensor:
    """The labels placeholder: given, found by name, or made from ``example``."""
    if isinstance(labels, Tensor):
        node = graph.node(labels.node)
    elif labels in graph:
        node = graph.node(labels)
    else:
        dtype, rest = _label_type(kind, pred, example)
        return graph.placeholder(labels, (None, *rest), dtype)
    if node.op != "placeholder":
        raise TrainingError(
            f"labels '{node.name}' is a {node.op} node; the labels must be a "
            "placeholder fed from the data (or a new name, to make one)"
        )
    return Tensor(graph, node.name)


def _label_type(kind: str, pred: Tensor, example: Any) -> tuple[np.dtype, tuple[Any, ...]]:
    if example is not None:
        array = np.asarray(example)
        if array.ndim == 0:
            raise TrainingError("the labels array must hold one row per example, not a scalar")
        dtype = array.dtype
        if dtype.kind == "b" or (dtype.kind in "iu" and kind != "cross_entropy"):
            dtype = pred.dtype  # 0/1 or integer targets of a regression: compared as floats
        elif dtype.kind in "iu":
            dtype = np.dtype("int64")
        elif dtype.kind != "f":
            raise TrainingError(f"the labels array has dtype {array.dtype}; labels must be numbers")
        return dtype, tuple(array.shape[1:])
    if kind == "cross_entropy":
        return np.dtype("int64"), tuple(pred.shape[1:-1])
    return pred.dtype, tuple(pred.shape[1:])


def _fit_labels(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """Labels in the form the loss compares: float labels cast to the predictions'
    dtype, (N,) against (N, 1) reshaped."""
    if kind == "cross_entropy":
        if target.dtype.kind in "iu":
            if target.ndim != pred.ndim - 1:
                raise TrainingError(
                    f"cross_entropy: integer labels '{target.name}' {tuple(target.shape)} must "
                    f"have the shape of the predictions {tuple(pred.shape)} without the class "
                    "axis (one class index per example)"
                )
            return target
        if target.ndim == pred.ndim - 1:
            return ops.cast(target, dtype="int64")  # class indices stored as floats
    if target.dtype != pred.dtype:
        target = ops.cast(target, dtype=pred.dtype.name)
    if target.ndim == pred.ndim - 1 and pred.ndim >= 1 and pred.shape[-1] == 1:
        target = ops.expand_dims(target, axis=-1)
    elif target.ndim == pred.ndim + 1 and target.shape[-1] == 1:
        target = ops.squeeze(target, axis=[-1])
    clash = any(
        isinstance(a, int) and isinstance(b, int) and a != b
        for a, b in zip(target.shape[1:], pred.shape[1:])
    )
    if target.ndim != pred.ndim or clash:
        raise TrainingError(
            f"loss {kind}: labels '{target.name}' of shape {tuple(target.shape)} "
            f"do not fit predictions '{pred.name}' of shape {tuple(pred.shape)}"
        )
    return target


def _cross_entropy(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    return ops.softmax_cross_entropy(pred, target)


def _binary_cross_entropy(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    # max(x, 0) - x y + log(1 + exp(-|x|)): never exponentiates a large number.
    per_element = ops.relu(pred) - pred * target + ops.softplus(ops.negative(ops.abs(pred)))
    return ops.mean(per_element)


def _mse(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    return ops.mean_squared_error(pred, target)


def _l1(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    return ops.mean(ops.abs(pred - target))


def _huber(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    if not delta > 0:
        raise TrainingError(f"huber loss: delta must be positive, got {delta}")
    error = ops.abs(pred - target)
    small = ops.minimum(error, delta)
    return ops.mean(small * small * 0.5 + (error - small) * delta)


_BUILDERS = {
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "mse": _mse,
    "l1": _l1,
    "huber": _huber,
}


def _existing_loss(graph: Graph, kind: str, pred: Tensor, target: Tensor) -> Tensor | None:
    """The loss an earlier add_loss made for the same predictions and labels (a
    trained file trained again with the same --loss), so it is not added twice."""
    spec = graph.training
    name = f"{kind}_loss/loss"
    if (
        spec is not None
        and spec.loss == name
        and name in graph
        and spec.predictions == pred.name
        and spec.labels == target.node
    ):
        return Tensor(graph, name)
    return None


def check_class_labels(graph: Graph, data: Dataset) -> None:
    """Refuse class labels that ``softmax_cross_entropy`` would misread, before
    training or evaluation starts: for each such node of ``graph`` whose class
    indices come from a placeholder of ``data`` (directly or through a cast),
    every label must be a whole number in [0, classes).  A node with
    ``out_of_range="zero"`` (what ``ge.optimize`` makes of a hand-written
    ``sum(log_softmax * one_hot)``) takes labels out of range, as one_hot does.

    Float labels are cast to int64 in the graph (``--loss cross_entropy`` with
    class indices stored as floats), which would turn 0.7 into class 0 and nan
    into a huge negative number without a word; an index out of range would fail
    only when its batch comes, perhaps hours in.  Raises TrainingError naming the
    placeholder, the example and the fix.
    """
    for node in graph.nodes:
        if node.op != "softmax_cross_entropy" or node.attrs.get("out_of_range") == "zero":
            continue  # out_of_range="zero" gives a label out of range no loss: no misreading
        logits, labels = node.inputs[:2]
        if graph.tensor(labels).dtype.kind not in "iu":
            continue  # a probability per class: any value the loss can take
        source = parse_ref(labels)[0]
        while graph.node(source).op == "cast":
            source = parse_ref(graph.node(source).inputs[0])[0]
        if graph.node(source).op != "placeholder" or source not in data.arrays:
            continue
        shape = graph.tensor(logits).shape
        classes = shape[node.attrs.get("axis", -1)] if shape else None
        _check_labels(
            data.arrays[source],
            classes if isinstance(classes, int) else None,
            f"{data.source}: the labels for placeholder '{source}' (class indices "
            f"of softmax_cross_entropy '{node.name}')",
        )


def _check_labels(array: np.ndarray, classes: int | None, where: str) -> None:
    flat = array.reshape(-1)
    if flat.size == 0:
        return
    span = f"0 to {classes - 1} ({classes} classes)" if classes else "0 up"
    if flat.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.floor(flat)))
        if bad.size:
            row = np.unravel_index(bad[0], array.shape)[0]
            raise TrainingError(
                f"{where} hold {flat[bad[0]].item()!r} at example {row}; class labels must be "
                f"whole numbers from {span}. Store class indices as int64, or one "
                "probability row per example"
            )
    low, high = flat.min(), flat.max()
    if low < 0 or (classes and high >= classes):
        value = low if low < 0 else high
        row = np.unravel_index(int(np.flatnonzero(flat == value)[0]), array.shape)[0]
        raise TrainingError(
            f"{where} hold {value.item()!r} at example {row}; class labels must be from "
            f"{span}. Fix the labels, or give the predictions one output per class"
        )
