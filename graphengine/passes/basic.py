"""Dead-code elimination, common-subexpression elimination and constant folding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..graph import Graph, Node
from ..ops.registry import size_of
from .rewrite import SOURCES, Rewriter, is_random, updates_state

#: Largest tensor (in elements) that constant folding materialises, and the
#: largest constant whose bytes CSE compares: 65,536 elements (256 KiB of float32).
MAX_FOLD_ELEMENTS = 1 << 16


def eliminate_dead_code(graph: Graph, keep: Sequence[str], **_: Any) -> Graph:
    """Drop every node that no kept tensor needs (placeholders and parameters stay:
    they are the graph's interface and its state).

    >>> import graphengine as ge
    >>> from graphengine.passes import eliminate_dead_code
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2,))
    >>> unused = ge.exp(x)
    >>> g.mark_output(ge.negative(x))
    >>> [n.op for n in eliminate_dead_code(g, g.outputs).nodes]
    ['placeholder', 'negative']
    """
    rw = Rewriter(graph, keep)
    for node in graph.nodes:
        rw.copy(node)
    return rw.finish()


def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.dtype):
        return value.str
    return value


def _cse_key(node: Node, inputs: list[str], max_elements: int) -> tuple | None:
    opdef = node.opdef
    if node.op in SOURCES or is_random(opdef) or updates_state(opdef):
        return None
    if node.op == "constant" and node.attrs["value"].size > max_elements:
        return None
    return (node.op, tuple(inputs), tuple((k, _hashable(v)) for k, v in node.attrs.items()))


def eliminate_common_subexpressions(
    graph: Graph, keep: Sequence[str], *, max_fold_elements: int = MAX_FOLD_ELEMENTS, **_: Any
) -> Graph:
    """Share nodes with the same op, inputs and attributes (constants with equal
    values up to ``max_fold_elements`` elements).  Ops that draw random numbers
    (declared ``random``) and ops whose outputs update state (``state_updates``)
    are never merged.  The later node becomes the earlier one.

    >>> import graphengine as ge
    >>> from graphengine.passes import eliminate_common_subexpressions as cse
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2,))
    >>> g.mark_output(ge.exp(x) + ge.exp(x))
    >>> [n.op for n in cse(g, g.outputs).nodes]
    ['placeholder', 'exp', 'add']
    """
    rw = Rewriter(graph, keep)
    seen: dict[tuple, Node] = {}
    for node in graph.nodes:
        inputs = rw.inputs(node)
        try:
            key = _cse_key(node, inputs, max_fold_elements)
            hash(key)
        except TypeError:
            key = None
        earlier = seen.get(key) if key is not None else None
        if earlier is not None and earlier.types == node.types:
            rw.replace(node, [rw.ref(r) for r in earlier.output_refs()])
            continue
        rw.copy(node)
        if key is not None:
            seen[key] = node
    return rw.finish()


def fold_constants(
    graph: Graph, keep: Sequence[str], *, max_fold_elements: int = MAX_FOLD_ELEMENTS, **_: Any
) -> Graph:
    """Compute nodes whose inputs are all constants once, and store the result as
    a constant.  Bounded: a node is folded only when every output has a static
    shape of at most ``max_fold_elements`` elements (65,536 by default), so
    folding never materialises a large tensor (``broadcast_to`` of a scalar to a
    big shape stays a node).  Ops that draw random numbers or read the run's
    context (training mode) are never folded, and a kernel that fails is left
    for the run to report.

    >>> import numpy as np, graphengine as ge
    >>> from graphengine.passes import fold_constants
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2,))
    >>> g.mark_output(x * ge.exp(g.constant(np.float32(0.5))))
    >>> [n.op for n in fold_constants(g, g.outputs).nodes]
    ['placeholder', 'constant', 'multiply']
    """
    rw = Rewriter(graph, keep)
    for node in graph.nodes:
        inputs = rw.inputs(node)
        values = [rw.constant(r) for r in inputs]
        if (
            node.op == "constant"
            or node.op in SOURCES
            or not inputs
            or any(v is None for v in values)
            or not _foldable(node, max_fold_elements)
        ):
            rw.copy(node)
            continue
        folded = _evaluate(node, values)
        if folded is None:
            rw.copy(node)
            continue
        if len(folded) == 1:
            rw.emit("constant", [], {"value": folded[0]}, like=node, name=node.name)
        else:
            refs = [rw.emit("constant", [], {"value": v}, like=node)[0] for v in folded]
            rw.replace(node, refs)
    return rw.finish()


def _foldable(node: Node, max_elements: int) -> bool:
    opdef = node.opdef
    if is_random(opdef) or opdef.uses_context or updates_state(opdef):
        return False
    return all(t.is_static and size_of(t.shape) <= max_elements for t in node.types)


def _evaluate(node: Node, values: list[np.ndarray]) -> list[np.ndarray] | None:
    try:
        out = node.opdef.kernel(*values, **node.attrs)
    except Exception:  # the run reports it, naming the node, as it would have
        return None
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    result = []
    for value, t in zip(outs, node.types):
        value = np.asarray(value)
        if value.dtype != t.dtype or value.shape != t.shape:
            return None
        # A copy, so a constant never shares memory with another constant's value.
        result.append(np.array(value, copy=True))
    return result
