"""Bounds on what an ONNX file can make the importer do.

A model of a few hundred bytes can ask for a lot: model-local functions that
call each other ten times per level inline into millions of nodes; a function
that calls itself never ends (onnx's inliner raises its own ValidationError);
``ConstantOfShape``, ``Range``, ``Expand`` or ``Tile`` folded at import time can
ask for terabytes.  Here:

* :func:`check_functions` counts, before anything is inlined, how many nodes
  the inlined graph would have (each function's count computed once, so the
  count itself is cheap), refuses more than ``max_inlined_nodes``
  (:mod:`graphengine.limits`) and refuses recursion, naming the function and
  the node that calls it;
* :func:`inline_functions` runs onnx's inliner and turns its errors into ours;
* :func:`fold_bytes` / :func:`check_fold` let folding rules refuse or defer a
  result over ``max_fold_bytes``: a larger result stays a node of the graph
  (where the run-time budget, ``max_tensor_bytes``, applies), or is refused
  when no op can compute it later.

Every refusal is an :class:`OnnxConversionError` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from onnx import ModelProto, NodeProto

from ..limits import get_limits
from .errors import OnnxConversionError


def _label(node: NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return f"node '{name}' ({node.op_type})"


def check_functions(model: ModelProto) -> None:
    """Refuse recursive model-local functions, and functions that would inline into
    more than ``max_inlined_nodes`` nodes."""
    functions = {(f.domain, f.name): f for f in model.functions}
    bound = get_limits().max_inlined_nodes
    sizes: dict[tuple[str, str], int] = {}
    active: list[tuple[str, str]] = []

    def size_of(nodes: Iterable[NodeProto], where: str) -> int:
        total = 0
        for node in nodes:
            key = (node.domain, node.op_type)
            if key not in functions:
                total += 1
            else:
                total += function_size(key, node)
            if total > bound:
                raise OnnxConversionError(
                    f"{where}: inlining its model-local functions would make more than "
                    f"{bound:,} nodes (at {_label(node)}); raise ge.set_limits("
                    "max_inlined_nodes=...) if the model is trusted"
                )
        return total

    def function_size(key: tuple[str, str], caller: NodeProto) -> int:
        if key in sizes:
            return sizes[key]
        if key in active:
            cycle = " -> ".join(name for _, name in active[active.index(key) :] + [key])
            raise OnnxConversionError(
                f"{_label(caller)} calls model-local function '{key[1]}' recursively "
                f"({cycle}); ONNX functions cannot recurse, so the model cannot be inlined"
            )
        active.append(key)
        sizes[key] = size_of(functions[key].node, f"function '{key[1]}'")
        active.pop()
        return sizes[key]

    size_of(model.graph.node, "the model")


def inline_functions(model: ModelProto) -> ModelProto:
    """``model`` with its model-local functions inlined (checked first)."""
    check_functions(model)
    import onnx.inliner

    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception as exc:  # onnx raises ValidationError, RuntimeError and others
        raise OnnxConversionError(
            f"cannot inline the model's local functions: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None


def fold_bytes(shape: Iterable[int], dtype: np.dtype) -> int:
    """Bytes of an array of ``shape`` (exact, whatever the dims)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def over_fold_limit(nbytes: int) -> bool:
    return nbytes > get_limits().max_fold_bytes


def check_result(label: str, shape: Iterable[int], dtype: np.dtype) -> None:
    """Refuse a result that no budget admits (``max_tensor_bytes``), by ``label``."""
    shape = [int(d) for d in shape]
    if any(d < 0 for d in shape):
        raise OnnxConversionError(f"{label}: negative dims {shape[:8]}")
    nbytes = fold_bytes(shape, dtype)
    budget = get_limits().max_tensor_bytes
    if nbytes > budget:
        raise OnnxConversionError(
            f"{label}: the result would take {nbytes:,} bytes, over the limit of {budget:,} "
            "bytes per tensor; raise ge.set_limits(max_tensor_bytes=...) if you mean it"
        )
