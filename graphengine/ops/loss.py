"""Losses: softmax cross-entropy and mean squared error.

``reduction`` is ``"mean"`` (the default: average over samples), ``"sum"`` or
``"none"`` (one loss per sample), as in PyTorch and ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import FLOAT_TYPES, INDEX_TYPES
from ..errors import GradientError
from ..shapes import Dim, TensorType, format_shape, normalize_axis
from .nn import log_softmax_array
from .registry import Array, Attr, F, Input, InputInfo, OpDef, OutKernel, register

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor

_REDUCTION = Attr("reduction", "str", "mean", choices=("mean", "sum", "none"))
#: What an integer label outside [0, classes) means.  Absent (the default): an
#: error at run time.  ``"zero"``: one_hot's rule, a row of zeros for the label, so
#: the sample's loss and gradient are 0 (what sum(log_softmax(z) * one_hot(y))
#: gives, the form the algebra pass rewrites into this op; absent from files
#: when not set, so older readers read files without it).
_OUT_OF_RANGE = Attr("out_of_range", "str", None, choices=("zero",))


def _reduce(per_sample: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(np.mean(per_sample, dtype=per_sample.dtype))
    if reduction == "sum":
        return np.asarray(np.sum(per_sample, dtype=per_sample.dtype))
    return per_sample


def _same_dims(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> bool:
    """Could shapes a and b be equal at run time (symbolic dims match anything)?"""
    return len(a) == len(b) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in zip(a, b)
    )


def _in_range(labels: np.ndarray, classes: int) -> np.ndarray:
    return (labels >= 0) & (labels < classes)


def _check_labels(labels: np.ndarray, classes: int) -> None:
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < classes):
        return  # two reductions: cheaper than building a mask on every step
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"label {labels[where]} at index {where} is out of range for "
            f"{classes} classes: labels must be in [0, {classes - 1}]"
        )


#: Up to this many classes, (N, C) logits are worked on class-major, as (C, N):
#: numpy reduces a short contiguous axis (the classes of one row) many times
#: slower than it reduces across long rows, so one transposed copy pays for itself.
CLASS_MAJOR_MAX = 64


#: Up to this many elements, softmax cross-entropy's gradient subtracts whole
#: one-hot rows (a comparison of the labels with each class) rather than one per
#: labelled element (a label check, a gather and a scatter): fewer numpy calls,
#: which is what costs at small sizes (timeit, best of 7, load 3.8 on two cores:
#: (32, 10) 10.0 against 23.6 us, (128, 10) 18.9 against 24.1; (64, 64) was 23.7
#: against 34.3 in one run and 33.1 against 31.0 in another, (1024, 10) 50.9
#: against 47.6, where the (N, C) passes cost more).
ONE_HOT_MAX = 1 << 11


class RowsScratch:
    """Work arrays for softmax cross-entropy of (N, C) logits over axis 1 with
    integer labels: allocated once per shape by an out-kernel (or per call by the
    plain kernel), so a planned step allocates nothing."""

    def __init__(
        self,
        shape: Sequence[int],
        dtype: np.dtype[Any],
        label_dtype: np.dtype[Any],
        one_hot: bool = False,
    ) -> None:
        n, classes = shape
        self.classes = classes
        self.class_major = classes <= CLASS_MAJOR_MAX
        major = (classes, n) if self.class_major else (n, classes)
        self.shifted = np.empty(major if self.class_major else (0, 0), dtype)
        self.exp = np.empty(major, dtype)
        self.top = np.empty(n, dtype)  # each row's max, then log(sum(exp))
        self.total = np.empty(n, dtype)
        #: The flat index of row r's first element, r * C; plus the labels, each
        #: row's labelled element.
        self.row_starts = np.arange(n, dtype=np.intp) * classes
        self.index = np.empty(n, np.intp)
        self.picked = np.empty(n, dtype)
        #: With ``one_hot``, for small logits: the gradient's one-hot rows, built by
        #: comparing each label with class_ids (see _rows_cross_entropy_grad).
        self.class_ids = np.arange(classes, dtype=label_dtype)
        self.hot = np.empty((n, classes), bool) if one_hot and n * classes <= ONE_HOT_MAX else None
        #: The labels read as unsigned, so one max finds negatives and labels >= C.
        self.unsigned = np.dtype(label_dtype.str.replace("i", "u"))

    def labels_in_range(self, labels: Array) -> bool:
        return labels.size == 0 or np.maximum.reduce(labels.view(self.unsigned)) < self.classes

    def pick(self, values: Array, labels: Array) -> Array:
        """values[r, labels[r]] for each row r (labels in range), into ``picked``."""
        np.add(self.row_starts, labels, out=self.index)
        return np.take(values.reshape(-1), self.index, out=self.picked, mode="clip")


def rows_log_softmax(logits: Array, out: Array, work: RowsScratch) -> Array:
    """log_softmax of (N, C) logits over axis 1 into ``out``, with ``work``'s arrays."""
    top, total = work.top, work.total
    if work.class_major:
        shifted = work.shifted  # (C, N): the reductions run across rows
        np.copyto(shifted, logits.T)
        np.maximum.reduce(shifted, axis=0, out=top)
        np.subtract(shifted, top, out=shifted)
        np.add.reduce(np.exp(shifted, out=work.exp), axis=0, out=total)
        np.subtract(shifted, np.log(total, out=total), out=out.T)
    else:
        np.maximum.reduce(logits, axis=1, out=top)
        np.subtract(logits, top[:, None], out=out)
        np.add.reduce(np.exp(out, out=work.exp), axis=1, out=total)
        np.subtract(out, np.log(total, out=total)[:, None], out=out)
    return out


@register
class SoftmaxCrossEntropy(OpDef):
    """Cross-entropy between softmax(logits) along ``axis`` and the labels.

    ``labels`` are either class indices (int32/int64, the shape of logits without
    ``axis``; an index outside [0, classes) fails at run time) or a probability
    target per class (the dtype and shape of logits).  With log_prob =
    log_softmax(logits), the loss per sample is -log_prob[label], or
    -sum(target * log_prob, axis); then ``reduction``.  Outputs the loss and
    log_prob (as ONNX SoftmaxCrossEntropyLoss), so the gradient reuses log_prob;
    ``ge.softmax_cross_entropy`` returns the loss, and ``(loss, log_prob)`` with
    ``return_log_prob=True``.

    vjp, with p = exp(log_prob) and g the gradient per sample (dy, or dy / samples
    for the mean): d logits = (p - onehot(label)) * g, or (p * sum(target) - target)
    * g; d target = -log_prob * g (probability targets are differentiable, as in
    PyTorch).  No label smoothing.

    ``out_of_range="zero"`` (integer labels only) gives an out-of-range label
    (-1, or classes and above; negative labels do not count from the end) a loss
    of 0 and a logits gradient of 0, one_hot's rule: what the hand-written
    ``-sum(log_softmax(z) * one_hot(y), axis)`` gives, which ``ge.optimize``
    rewrites into this op with the attribute set.  Unlike PyTorch's
    ``ignore_index`` every label out of range is ignored, and the mean still
    divides by the number of all samples.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> logits = g.placeholder("logits", (None, 3))
    >>> labels = g.placeholder("labels", (None,), "int64")
    >>> loss = ge.softmax_cross_entropy(logits, labels)
    >>> float(ge.run(g, loss, {"logits": np.zeros((2, 3), np.float32), "labels": [0, 2]}))
    1.0986123085021973
    """

    name = "softmax_cross_entropy"
    inputs = (Input("logits", FLOAT_TYPES), Input("labels", INDEX_TYPES | FLOAT_TYPES))
    outputs = ("loss", "log_prob")
    extra_outputs_flag = "return_log_prob"
    attrs = (Attr("axis", "int", -1), _REDUCTION, _OUT_OF_RANGE)  # reduction stays third

    def infer(
        self,
        logits: TensorType,
        labels: TensorType,
        *,
        axis: int,
        out_of_range: str | None,
        reduction: str,
    ) -> Sequence[TensorType]:
        axis = normalize_axis(axis, logits.rank)
        samples = logits.shape[:axis] + logits.shape[axis + 1 :]
        if out_of_range is not None and labels.dtype.name not in INDEX_TYPES:
            raise ValueError(
                f"out_of_range={out_of_range!r} applies to integer labels; "
                f"labels are {labels.dtype.name}"
            )
        if labels.dtype.name in INDEX_TYPES:
            if not _same_dims(labels.shape, samples):
                raise ValueError(
                    f"integer labels must have the shape of logits without the "
                    f"class axis {axis}, {format_shape(samples)}; got "
                    f"{format_shape(labels.shape)}"
                )
        elif labels.dtype != logits.dtype or not _same_dims(labels.shape, logits.shape):
            raise ValueError(
                f"probability targets must have the dtype and shape of logits "
                f"({logits}); got {labels}"
            )
        loss_shape = samples if reduction == "none" else ()
        return TensorType(logits.dtype, loss_shape), logits

    def kernel(
        self,
        logits: Array,
        labels: Array,
        *,
        axis: int,
        out_of_range: str | None,
        reduction: str,
    ) -> Sequence[Array]:
        if _rows_case(logits.shape, labels.dtype, axis):
            work = RowsScratch(logits.shape, logits.dtype, labels.dtype)
            return _rows_cross_entropy(logits, labels, reduction, out_of_range, (None, None), work)
        log_prob = log_softmax_array(logits, axis)
        if labels.dtype.kind in "iu":
            classes = logits.shape[axis]
            if out_of_range is None:
                _check_labels(labels, classes)
                per_sample = -np.squeeze(
                    np.take_along_axis(log_prob, np.expand_dims(labels, axis), axis), axis
                )
            else:  # one_hot's rule: a label out of range picks nothing, loss 0
                inside = _in_range(labels, classes)
                index = np.expand_dims(np.where(inside, labels, 0), axis)
                picked = np.squeeze(np.take_along_axis(log_prob, index, axis), axis)
                per_sample = np.where(inside, -picked, logits.dtype.type(0))
        else:
            per_sample = -np.sum(labels * log_prob, axis=axis, dtype=logits.dtype)
        return _reduce(per_sample, reduction), log_prob

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        """(N, C) logits over axis 1 with integer labels: the same arithmetic as
        the kernel, into the given loss and log_prob buffers and fixed scratch."""
        (shape, dtype), (_, label_dtype) = inputs
        if not _rows_case(shape, label_dtype, attrs["axis"]):
            return None
        work = RowsScratch(shape, dtype, label_dtype)
        reduction, out_of_range = attrs["reduction"], attrs["out_of_range"]

        def cross_entropy_into(
            logits: Array, labels: Array, out: tuple[Array | None, Array | None]
        ) -> tuple[Array, Array]:
            return _rows_cross_entropy(logits, labels, reduction, out_of_range, out, work)

        return cross_entropy_into

    def gradient_unsupported(
        self, attrs: dict[str, Any], in_types: Sequence[TensorType] = ()
    ) -> str | None:
        """Integer labels need the class count to build one-hot targets."""
        if len(in_types) != 2 or in_types[1].dtype.name not in INDEX_TYPES:
            return None
        logits = in_types[0]
        axis = normalize_axis(attrs["axis"], logits.rank)
        if isinstance(logits.shape[axis], int):
            return None
        return (
            f"with integer labels the number of classes (axis {axis} of logits "
            f"{format_shape(logits.shape)}) must be known to build the gradient; give "
            "the placeholder a fixed class axis"
        )

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dloss, dlog_prob = dys
        logits, labels = node.inputs
        log_prob = node.outputs[1]
        axis = normalize_axis(node.attrs["axis"], logits.ndim)
        integer = labels.dtype.name in INDEX_TYPES

        def over_classes(v: Tensor) -> Tensor:
            return F.broadcast_like(v, logits, axes=[axis])

        # Either output may be the only one the loss reaches (its gradient is None).
        d_logits = d_labels = None
        if dloss is not None:
            # Shaped like the samples: the labels, or each sample's sum of targets.
            samples = labels if integer else F.sum(labels, axis=axis)
            per_sample = _per_sample_gradient(dloss, samples, node.attrs["reduction"])
        if node.wants(0):
            terms = []
            if dloss is not None and integer:
                _check_classes(logits, axis)
                # (exp(log_prob) - one_hot(labels)) * g in one kernel
                terms.append(
                    F.softmax_cross_entropy_grad(
                        log_prob,
                        labels,
                        per_sample,
                        axis=axis,
                        out_of_range=node.attrs["out_of_range"],
                    )
                )
            elif dloss is not None:
                p = F.exp(log_prob)
                terms.append(
                    p * over_classes(samples * per_sample) - labels * over_classes(per_sample)
                )
            if dlog_prob is not None:  # log_prob used downstream: log_softmax's rule
                p = F.exp(log_prob)
                terms.append(dlog_prob - p * F.sum(dlog_prob, axis=axis, keepdims=True))
            d_logits = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        if node.wants(1) and dloss is not None:
            d_labels = F.negative(log_prob * over_classes(per_sample))
        return [d_logits, d_labels]


def _rows_case(shape: Sequence[int], label_dtype: np.dtype[Any], axis: int) -> bool:
    """(N, C) logits, classes on axis 1, integer labels: the case with fixed scratch."""
    return len(shape) == 2 and axis in (1, -1) and label_dtype.name in INDEX_TYPES


def _rows_cross_entropy(
    logits: Array,
    labels: Array,
    reduction: str,
    out_of_range: str | None,
    out: tuple[Array | None, Array | None],
    work: RowsScratch,
) -> tuple[Array, Array]:
    """softmax_cross_entropy's kernel for :func:`_rows_case`, into ``out`` (loss,
    log_prob; None: allocate).  ``out_of_range`` as the op's attribute."""
    n = logits.shape[0]
    loss, log_prob = out
    if log_prob is None:
        log_prob = np.empty(logits.shape, logits.dtype)
    if loss is None:
        loss = np.empty((n,) if reduction == "none" else (), logits.dtype)
    rows_log_softmax(logits, log_prob, work)
    outside = None
    if not work.labels_in_range(labels):
        if out_of_range is None:
            _check_labels(labels, work.classes)  # raises, naming the label
        outside = ~_in_range(labels, work.classes)
    picked = work.pick(log_prob, labels)  # mode "clip": any index is safe
    if outside is not None:  # one_hot's rule: nothing picked, loss 0
        picked[outside] = -0.0  # the loss -picked is then +0.0
    if reduction == "none":
        return np.negative(picked, out=loss), log_prob
    np.add.reduce(picked, out=loss)
    # -sum / n is numpy's mean of -picked, bit for bit.
    return np.divide(loss, loss.dtype.type(-n if reduction == "mean" else -1), out=loss), log_prob


def _check_classes(logits: Tensor, axis: int) -> None:
    if not isinstance(logits.shape[axis], int):
        raise GradientError(
            f"softmax_cross_entropy with integer labels: the number of classes "
            f"(axis {axis} of logits {format_shape(logits.shape)}) must be known "
            "to build the gradient; give the placeholder a fixed class axis"
        )


def _per_sample_gradient(dloss: Tensor, samples: Tensor, reduction: str) -> Tensor:
    """The loss gradient for each sample, shaped like ``samples``."""
    if reduction == "none":
        return dloss
    return F.broadcast_like(dloss, samples, mean=reduction == "mean")


@register
class MeanSquaredError(OpDef):
    """(pred - target) ** 2, then ``reduction`` over every element.  pred and target
    must have one shape: no broadcasting, which would silently turn (N, 1) against
    (N,) into (N, N).  vjp: d pred = 2 (pred - target) * g = -d target, with g the
    gradient per element (dy / size for the mean).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> pred = g.placeholder("pred", (None,))
    >>> loss = ge.mean_squared_error(pred, np.array([1.0, 1.0], np.float32))
    >>> float(ge.run(g, loss, {"pred": np.array([0.0, 3.0], np.float32)}))
    2.5
    """

    name = "mean_squared_error"
    inputs = (Input("pred", FLOAT_TYPES), Input("target", FLOAT_TYPES))
    attrs = (_REDUCTION,)

    def infer(self, pred: TensorType, target: TensorType, *, reduction: str) -> TensorType:
        if pred.dtype != target.dtype:
            raise ValueError(
                f"pred is {pred.dtype.name} but target is {target.dtype.name}; "
                "cast one with ge.cast"
            )
        if not _same_dims(pred.shape, target.shape):
            raise ValueError(
                f"pred {format_shape(pred.shape)} and target "
                f"{format_shape(target.shape)} must have the same shape"
            )
        shape = tuple(p if isinstance(p, int) else t for p, t in zip(pred.shape, target.shape))
        return pred.with_shape(shape if reduction == "none" else ())

    def kernel(self, pred: Array, target: Array, *, reduction: str) -> Array:
        diff = pred - target
        return _reduce(np.square(diff, out=diff), reduction)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        pred, target = node.inputs
        reduction = node.attrs["reduction"]
        per_element = (
            dy if reduction == "none" else F.broadcast_like(dy, pred, mean=reduction == "mean")
        )
        d_pred = (pred - target) * per_element * 2.0
        return [d_pred if node.wants(0) else None, F.negative(d_pred) if node.wants(1) else None]


__all__ = ["MeanSquaredError", "SoftmaxCrossEntropy"]
