"""Import rules for SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss.

Without class weights or ``ignore_index``, ``SoftmaxCrossEntropyLoss`` is our
``softmax_cross_entropy`` with classes on axis 1 (its two outputs, the loss and
the log-probabilities, are ONNX's).  With them, and for
``NegativeLogLikelihoodLoss``, the loss is composed: pick each sample's
log-probability with a one-hot mask, weigh it, and reduce as ONNX says (the
weighted mean divides by the sum of the weights of the samples kept).
"""

from __future__ import annotations

from ..ops import api as ops
from .import_rules import NodeContext, rule


def _nll(ctx: NodeContext, log_prob, target, weight_index: int):
    """ONNX's NegativeLogLikelihoodLoss of log-probabilities (N, C, d1 ...)."""
    classes = log_prob.shape[1]
    if not isinstance(classes, int):
        raise ctx.fail(f"the number of classes (axis 1 of {log_prob.shape}) must be static")
    ignore = ctx.attr("ignore_index", None)
    reduction = ctx.attr("reduction", "mean")
    kept = None if ignore is None else ops.not_equal(target, ignore)
    safe = target if kept is None else ops.where(kept, target, 0)
    # where, not multiply: a -inf log-probability of another class must not give nan.
    hot = ops.one_hot(safe, classes, dtype="bool", axis=1)
    picked = ops.sum(ops.where(hot, log_prob, 0.0), axis=1)
    weights = None
    if ctx.has(weight_index):
        weights = ops.take(ctx.input(weight_index), safe, axis=0)
    if kept is not None:
        mask = ops.cast(kept, dtype=log_prob.dtype)
        weights = mask if weights is None else weights * mask
    loss = ops.negative(picked if weights is None else picked * weights)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return ops.sum(loss)
    if reduction != "mean":
        raise ctx.fail(f"reduction {reduction!r} is not one of none, sum, mean")
    if weights is None:
        return ops.mean(loss)
    return ops.sum(loss) / ops.sum(weights)


@rule("NegativeLogLikelihoodLoss", versions=(13, 22))
def _negative_log_likelihood(ctx: NodeContext):
    return _nll(ctx, ctx.input(0), ctx.input(1), 2)


@rule("SoftmaxCrossEntropyLoss", versions=(13,))
def _softmax_cross_entropy(ctx: NodeContext):
    scores, labels = ctx.input(0), ctx.input(1)
    reduction = ctx.attr("reduction", "mean")
    if scores.ndim < 2:
        raise ctx.fail(f"scores must be (N, C, ...), got shape {scores.shape}")
    if not ctx.has(2) and not ctx.has_attr("ignore_index"):
        return ops.softmax_cross_entropy(
            scores, labels, axis=1, reduction=reduction, return_log_prob=True
        )
    log_prob = ops.log_softmax(scores, axis=1)
    return _nll(ctx, log_prob, labels, 2), log_prob
