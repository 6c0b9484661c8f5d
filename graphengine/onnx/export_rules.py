"""The machinery of the export table: the emitter rules write ONNX nodes with,
and how rules are declared.

Each of our ops has one rule, ``rule(ex, node)``, that appends ONNX nodes with
:meth:`Emitter.emit` so that the node's outputs appear under their tensor
references (``node`` or ``node:k``).  An op without an ONNX counterpart is
written as a composition of ONNX ops; an op whose rule cannot handle a node
raises :meth:`Emitter.fail`, naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from onnx import NodeProto, helper, numpy_helper

from ..graph import Graph, Node, canonical_ref, fresh_name, make_ref, parse_ref
from .errors import OnnxConversionError
from .tensor_types import to_onnx_dtype

#: The export table: our op name -> rule.  Filled by :mod:`graphengine.onnx.export_ops`.
RULES: dict[str, Callable[[Emitter, Node], None]] = {}

#: ONNX's "to the end" for Slice ends.
INT64_MAX = 2**63 - 1


def rule(*ops: str) -> Callable:
    """Declare the function below as the export rule of ``ops``."""

    def declare(fn: Callable) -> Callable:
        for op in ops:
            if op in RULES:
                raise TypeError(f"op {op!r} has two export rules")
            RULES[op] = fn
        return fn

    return declare


class Emitter:
    """Collects the ONNX nodes of one export.

    ONNX value names are our tensor references, so ``ex.input(node, i)`` is the
    name of input ``i`` and ``ex.output(node, k)`` the name a rule must give to
    output ``k``.  Helper values get names under the node's (``node/Cast_1``).
    """

    def __init__(self, graph: Graph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.nodes: list[NodeProto] = []
        self._used: set[str] = set()

    # -- names ----------------------------------------------------------------------
    def input(self, node: Node, index: int) -> str:
        return canonical_ref(node.inputs[index])

    def inputs(self, node: Node) -> list[str]:
        return [self.input(node, i) for i in range(len(node.inputs))]

    def output(self, node: Node, index: int = 0) -> str:
        return make_ref(node.name, index)

    def fresh(self, node: Node, base: str) -> str:
        name = fresh_name(f"{node.name}/{base}", self._used)
        self._used.add(name)
        return name

    # -- nodes --------------------------------------------------------------------------
    def emit(
        self,
        node: Node,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int = 1,
        **attrs: Any,
    ) -> list[str]:
        """Append an ONNX node computing for ``node``; ``outputs`` are names, or a
        count of helper values to create.  Returns the output names."""
        if isinstance(outputs, int):
            outputs = [self.fresh(node, op_type) for _ in range(outputs)]
        mine = [o for o in outputs if parse_ref(o)[0] == node.name] if outputs else []
        name = node.name if mine and node.name not in self._used else self.fresh(node, op_type)
        self._used.add(name)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs)
        )
        return list(outputs)

    def emit1(
        self,
        node: Node,
        op_type: str,
        inputs: Sequence[str],
        output: str | None = None,
        **attrs: Any,
    ) -> str:
        """Emit a one-output node; returns its output name."""
        return self.emit(node, op_type, inputs, [output] if output else 1, **attrs)[0]

    def const(
        self,
        node: Node,
        value: Any,
        dtype: Any = None,
        base: str = "const",
        output: str | None = None,
    ) -> str:
        """A Constant node holding ``value`` (as ``dtype``)."""
        array = np.asarray(value, dtype=dtype)
        to_onnx_dtype(array.dtype)  # only our dtypes
        name = output or self.fresh(node, base)
        node_name = node.name if output and node.name not in self._used else name
        self._used.update((name, node_name))
        self.nodes.append(
            helper.make_node(
                "Constant", [], [name], name=node_name, value=numpy_helper.from_array(array, name)
            )
        )
        return name

    def ints(self, node: Node, values: Sequence[int], base: str = "ints") -> str:
        """A Constant int64 vector (axes, shapes, pads ...)."""
        return self.const(node, np.asarray(list(values), dtype=np.int64), base=base)

    def axes(
        self,
        node: Node,
        op_type: str,
        since: int,
        axes: Sequence[int] | None,
        data: str,
        output: str | None = None,
        **attrs: Any,
    ) -> str:
        """Emit a node that takes ``axes`` as an attribute before opset ``since``
        and as an input from it on (reductions, Squeeze, Unsqueeze)."""
        if axes is None:
            return self.emit1(node, op_type, [data], output, **attrs)
        if self.opset >= since:
            return self.emit1(node, op_type, [data, self.ints(node, axes, "axes")], output, **attrs)
        return self.emit1(node, op_type, [data], output, axes=list(axes), **attrs)

    def fail(self, node: Node, message: str) -> OnnxConversionError:
        return OnnxConversionError(f"node '{node.name}' ({node.op}): {message}")
