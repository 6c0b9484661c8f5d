"""Algebraic simplification: rewrites that hold for every input value.

* ``transpose(transpose(x, p), q)`` is one transpose by the composed permutation,
  or ``x`` itself when that is the identity; a transpose by the identity is ``x``;
* ``reshape(reshape(x, a), b)`` is ``reshape(x, b)``; a reshape (or
  ``broadcast_to``) to the type ``x`` already has is ``x``;
* an elementwise binary op (declared as such: ``Binary``) whose operand is the
  broadcast (``broadcast_to``, or ``broadcast_like`` without ``mean``) of a scalar
  takes the scalar itself, when the result keeps its type: the op broadcasts;
* ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` are ``x``;
* multiplying by a one-hot and summing over its axis picks one element: with
  ``log_softmax``, ``sum(log_softmax(z, a) * one_hot(y, axis=a), axis=a)`` is
  ``-softmax_cross_entropy(z, y, axis=a, reduction="none", out_of_range="zero")``,
  one fused kernel whose gradient is ``p - one_hot(y)`` instead of a chain of five
  ops; ``out_of_range="zero"`` keeps one_hot's rule for a label outside [0, depth)
  (-1 included: one_hot does not count from the end), a loss and gradient of 0
  where the cross-entropy op would raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..dtypes import INDEX_TYPES
from ..graph import Graph, Node, infer_types
from ..ops.elementwise import Binary
from ..shapes import normalize_axis
from .rewrite import Rewriter, use_counts


def simplify_algebra(graph: Graph, keep: Sequence[str], **_: Any) -> Graph:
    """Apply the rewrites of this module in one sweep; see the module docstring.

    >>> import graphengine as ge
    >>> from graphengine.passes import simplify_algebra
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2, 3))
    >>> g.mark_output(ge.exp(ge.transpose(ge.transpose(x))))
    >>> [n.op for n in simplify_algebra(g, g.outputs).nodes]
    ['placeholder', 'exp']
    """
    rw = Rewriter(graph, keep)
    uses = use_counts(graph)
    for node in graph.nodes:
        inputs = rw.inputs(node)
        rule = _RULES.get(node.op)
        if rule is None and isinstance(node.opdef, Binary):
            rule = _binary
        if rule is None or not rule(rw, node, inputs, uses):
            rw.copy(node)
    return rw.finish()


def _same_type(rw: Rewriter, ref: str, node: Node) -> bool:
    return rw.type_of(ref) == node.types[0]


def _perm(axes, rank: int) -> tuple[int, ...]:
    return tuple(range(rank))[::-1] if axes is None else tuple(a % rank for a in axes)


def _transpose(rw: Rewriter, node: Node, inputs: list[str], uses) -> bool:
    (x,) = inputs
    rank = len(rw.type_of(x).shape)
    q = _perm(node.attrs["axes"], rank)
    inner = rw.producer(x)
    if inner is not None and inner.op == "transpose":
        p = _perm(inner.attrs["axes"], rank)
        q = tuple(p[i] for i in q)
        x = inner.inputs[0]
    if q == tuple(range(rank)) and _same_type(rw, x, node):
        rw.replace(node, [x])
        return True
    if x != inputs[0]:
        rw.emit("transpose", [x], {"axes": q}, like=node, name=node.name)
        return True
    return False


def _reshape(rw: Rewriter, node: Node, inputs: list[str], uses) -> bool:
    (x,) = inputs
    inner = rw.producer(x)
    if inner is not None and inner.op == "reshape":
        x = inner.inputs[0]
    if _same_type(rw, x, node):
        rw.replace(node, [x])
        return True
    if x != inputs[0]:
        attrs = {"newshape": node.attrs["newshape"]}
        if infer_types(node.opdef, node.name, [rw.type_of(x)], attrs, [x]) == (rw.type_of(x),):
            # Collapsed, the reshape gives x's own type where the outer one did not:
            # reshape(reshape(x, (-1,)), (-1, K)) of an (N, K) x is (None, K), as
            # the flat axis lost N, and reshape(x, (-1, K)) is (N, K) again.  It is
            # x, found now rather than by a second run of the pass.
            if node.name in rw.keep_nodes:
                rw.emit("identity", [x], {}, like=node, name=node.name)
            else:
                rw.subst[node.output_refs()[0]] = x
            return True
        rw.emit("reshape", [x], attrs, like=node, name=node.name)
        return True
    return False


def _broadcast_to(rw: Rewriter, node: Node, inputs: list[str], uses) -> bool:
    if _same_type(rw, inputs[0], node):
        rw.replace(node, [inputs[0]])
        return True
    return False


def _scalar_behind_broadcast(rw: Rewriter, ref: str) -> str | None:
    inner = rw.producer(ref)
    if inner is None:
        return None
    if inner.op == "broadcast_to" or (inner.op == "broadcast_like" and not inner.attrs["mean"]):
        source = inner.inputs[0]
        if rw.type_of(source).shape == ():
            return source
    return None


def _is_constant(rw: Rewriter, ref: str, scalar: float) -> bool:
    value = rw.constant(ref)
    return value is not None and value.size > 0 and bool(np.all(value == scalar))


def _binary(rw: Rewriter, node: Node, inputs: list[str], uses) -> bool:
    a, b = inputs
    op = node.op
    identity = {
        "multiply": ((1, a, b), (1, b, a)),
        "divide": ((1, b, a),),
        "add": ((0, a, b), (0, b, a)),
        "subtract": ((0, b, a),),
    }.get(op, ())
    for scalar, const, other in identity:
        if _is_constant(rw, const, scalar) and _same_type(rw, other, node):
            rw.replace(node, [other])
            return True
    new = [_scalar_behind_broadcast(rw, r) or r for r in inputs]
    if new != inputs:
        try:
            types = infer_types(
                node.opdef, node.name, [rw.type_of(r) for r in new], node.attrs, new
            )
        except Exception:
            return False
        if types == node.types:
            rw.emit(op, new, node.attrs, like=node, name=node.name)
            return True
    return False


def _sum(rw: Rewriter, node: Node, inputs: list[str], uses) -> bool:
    """sum(log_softmax(z, a) * one_hot(y, axis=a), axis=a) -> -cross_entropy(z, y)
    with out_of_range="zero" (see the module docstring)."""
    if node.attrs["keepdims"] or node.attrs["axis"] is None or len(node.attrs["axis"]) != 1:
        return False
    product = rw.producer(inputs[0])
    if product is None or product.op != "multiply" or uses.get(product.name, 0) != 1:
        return False
    rank = len(product.types[0].shape)
    axis = normalize_axis(node.attrs["axis"][0], rank)
    for lsm_ref, hot_ref in (product.inputs, product.inputs[::-1]):
        lsm, hot = rw.producer(lsm_ref), rw.producer(hot_ref)
        if lsm is None or hot is None or lsm.op != "log_softmax" or hot.op != "one_hot":
            continue
        if normalize_axis(lsm.attrs["axis"], rank) != axis or hot.attrs["axis"] % rank != axis:
            continue
        if rw.type_of(lsm_ref) != product.types[0] or rw.type_of(hot_ref) != product.types[0]:
            continue
        logits, labels = lsm.inputs[0], hot.inputs[0]
        if (
            rw.type_of(labels).dtype.name not in INDEX_TYPES
            or hot.attrs["depth"] != product.types[0].shape[axis]
        ):
            continue
        loss = rw.emit(
            "softmax_cross_entropy",
            [logits, labels],
            # one_hot gives a label out of range a row of zeros, so a loss and a
            # gradient of 0: the attribute keeps that instead of raising.
            {"axis": axis, "reduction": "none", "out_of_range": "zero"},
            like=node,
        )[0]
        rw.emit("negative", [loss], {}, like=node, name=node.name)
        return True
    return False


_RULES = {"transpose": _transpose, "reshape": _reshape, "broadcast_to": _broadcast_to, "sum": _sum}
