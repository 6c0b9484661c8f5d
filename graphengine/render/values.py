"""Values and gradients to write on nodes, as micrograd's drawings do.

Values come from running the graph on feeds, or from a dict the caller already
holds after a run.  Gradients of forward tensors come from a gradient graph
built for every tensor on the way to the loss, so intermediate nodes get theirs
too, not only parameters and placeholders.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import is_float
from ..errors import RenderError
from ..executor import run
from ..graph import Graph, Node, Tensor, parse_ref

#: Tensors with at most this many elements are written in full.
FULL_SIZE = 6


@dataclass
class Annotations:
    """What to write on nodes: ``values`` by tensor ref, and ``grads`` (d loss / d
    tensor) by forward tensor ref."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)


def annotate(
    graph: Graph,
    forward: list[Node],
    feeds: Mapping[str | Tensor, Any] | None,
    values: Mapping[str | Tensor, Any] | None,
    grad: bool,
    loss: str | None,
) -> Annotations:
    """Collect the annotations of ``graph`` whose forward nodes are ``forward``.

    Raises RenderError when ``grad`` is asked for without a loss or without
    values; FeedError or ExecutionError when running on ``feeds`` fails.
    """
    notes = Annotations()
    if feeds is not None:
        feeds = {graph.tensor(k).name: v for k, v in feeds.items()}
        notes.values.update(run_everything(graph, feeds))
    for key, value in (values or {}).items():
        notes.values[graph.tensor(key).name] = np.asarray(value)
    if not grad:
        return notes
    if loss is None:
        raise RenderError("gradient annotations need a loss: pass loss=NAME (--loss NAME)")
    if feeds is not None:
        notes.grads.update(forward_gradients(graph, forward, loss, feeds))
    elif graph.gradient is not None:
        for ref, grad_ref in graph.gradient.grads.items():
            if grad_ref in notes.values:
                notes.grads[ref] = notes.values[grad_ref]
    if not notes.grads:
        raise RenderError(
            "gradient annotations need numbers: pass feeds (--feed NAME=FILE.npy), "
            "or values that hold the gradient tensors of graph.gradient.grads"
        )
    return notes


def run_everything(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The value of every tensor that ``feeds`` suffice to compute."""
    ready: set[str] = set()
    refs = []
    for node in graph.nodes:
        if node.op == "placeholder":
            known = node.name in feeds
        else:
            known = all(parse_ref(r)[0] in ready for r in node.inputs)
        if known:
            ready.add(node.name)
            refs += node.output_refs()
    return run(graph, refs, feeds) if refs else {}


def forward_gradients(
    graph: Graph, forward: list[Node], loss: str, feeds: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """d loss / d t for every float tensor t (not a constant) that the loss depends on."""
    from ..gradients import GradientWarning, gradients

    needed = _ancestors(graph, parse_ref(loss)[0])
    wrt = [
        ref
        for node in forward
        if node.name in needed and node.op != "constant"
        for ref, t in zip(node.output_refs(), node.types)
        if is_float(t.dtype)
    ]
    with warnings.catch_warnings():
        # A tensor behind a non-differentiable op has a zero gradient: worth a
        # warning when asked for, not when every tensor of a drawing is.
        warnings.simplefilter("ignore", GradientWarning)
        grad_graph = gradients(graph, loss, wrt=wrt)
    info = grad_graph.gradient
    grad_of = {ref: info.grads[ref] for ref in wrt if ref not in info.zero}
    results = run(grad_graph, list(grad_of.values()), feeds)
    return {ref: results[grad] for ref, grad in grad_of.items()}


def _ancestors(graph: Graph, name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(parse_ref(r)[0] for r in graph.node(current).inputs)
    return seen


def format_value(value: np.ndarray) -> list[str]:
    """Lines describing a tensor: in full when small, else shape and statistics.

    >>> format_value(np.array([1.0, -0.5], np.float32))
    ['[1, -0.5]']
    """
    array = np.asarray(value)
    if array.size <= FULL_SIZE:
        text = np.array2string(array, separator=", ", formatter={"all": _number})
        return [" ".join(line.strip() for line in text.splitlines())]
    if array.dtype.kind not in "biuf":
        return [f"{array.dtype.name}{array.shape}"]
    stats = array.astype(np.float64)
    return [
        f"{array.shape} mean {_number(stats.mean())} std {_number(stats.std())}",
        f"min {_number(stats.min())} max {_number(stats.max())}",
    ]


def _number(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x)).lower()
    return f"{x:.4g}"
