"""The machinery of the import table: what a rule sees and how rules are declared.

Each supported ONNX op has one :class:`Rule`: a function that receives a
:class:`NodeContext` and returns one value per ONNX output, built with our op
functions (or a numpy array for a value known at import time).  A rule lists the
schema versions it knows (``since_version`` of the op's ONNX schema); a model
whose opset selects another version of the op is refused before anything is
built, so a newer ONNX semantics is never silently read with an older one.

Inputs that newer opsets moved from attributes to inputs (reduction axes, Pad's
pads, Split's sizes, Clip's bounds, Slice's starts/ends/axes/steps) are listed as
``static``: the rule reads their values (from an initializer, a Constant node or
a value folded at import time) instead of a tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import AttributeProto, NodeProto, helper

from ..graph import Graph, Tensor
from ..shapes import TensorType
from .errors import OnnxConversionError

_REQUIRED: Any = object()


@dataclass(frozen=True)
class Rule:
    """How one ONNX op type becomes graphengine ops."""

    op_type: str
    convert: Callable[[NodeContext], Any]
    versions: tuple[int, ...]
    static: tuple[int, ...] = ()
    foldable: bool = True


#: The import table: ONNX op type -> rule.  Filled by the ``import_*`` modules.
RULES: dict[str, Rule] = {}


def rule(
    *op_types: str, versions: Sequence[int], static: Sequence[int] = (), foldable: bool = True
) -> Callable:
    """Declare the function below as the import rule of ``op_types``.

    ``versions`` are the ONNX schema versions (``since_version``) whose semantics
    the rule implements; ``static`` the input slots read as values; ``foldable``
    False for ops that must not be evaluated at import time even when their
    inputs are known (random ones).
    """

    def declare(fn: Callable) -> Callable:
        for op_type in op_types:
            if op_type in RULES:
                raise TypeError(f"ONNX op {op_type} has two import rules")
            RULES[op_type] = Rule(op_type, fn, tuple(sorted(versions)), tuple(static), foldable)
        return fn

    return declare


class NodeContext:
    """What an import rule sees of one ONNX node.

    ``input(i)`` is input ``i`` as a tensor of ``graph``; ``static(i)`` its value
    when known at import time (None otherwise); ``attr(name, default)`` an
    attribute (strings decoded, tensors as arrays).  ``fail(msg)`` makes an error
    that names the node.
    """

    def __init__(
        self,
        graph: Graph,
        node: NodeProto,
        version: int,
        opset: int,
        fetch: Callable[[str, bool], Any],
        read_tensor: Callable,
        shapes: dict[str, tuple] | None = None,
    ) -> None:
        self.graph = graph
        self._shapes = {} if shapes is None else shapes
        self.node = node
        self.op_type = node.op_type
        self.version = version
        self.opset = opset
        self._fetch = fetch
        self._read_tensor = read_tensor
        names = list(node.input)
        while names and not names[-1]:
            names.pop()
        self.input_names = names
        self._attrs = {a.name: a for a in node.attribute}

    @property
    def label(self) -> str:
        """How messages name the node: ``'name' (OpType)``."""
        name = self.node.name or (self.node.output[0] if self.node.output else "")
        return f"node '{name}' ({self.op_type})"

    def fail(self, message: str) -> OnnxConversionError:
        return OnnxConversionError(f"{self.label}: {message}")

    # -- inputs ------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        """Inputs up to the last one given (omitted optional inputs count as absent)."""
        return len(self.input_names)

    def has(self, index: int) -> bool:
        return index < len(self.input_names) and bool(self.input_names[index])

    def input(self, index: int) -> Tensor:
        if not self.has(index):
            raise self.fail(f"input {index} is required")
        return self._fetch(self.input_names[index], False)

    def inputs(self) -> list[Tensor]:
        """Every given input, as tensors (for variadic ops)."""
        return [self.input(i) for i in range(self.num_inputs) if self.has(i)]

    def static(self, index: int, symbolic: bool = False) -> np.ndarray | None:
        """The value of input ``index`` if known at import time, else None.  A shape
        with symbolic dims (an object array, see :mod:`.import_symbolic`) counts only
        with ``symbolic=True``."""
        if not self.has(index):
            return None
        value = self._fetch(self.input_names[index], True)
        if value is not None and value.dtype == object and not symbolic:
            return None
        return value

    def require_static(self, index: int, what: str, symbolic: bool = False) -> np.ndarray:
        """The value of input ``index``, which must be known at import time."""
        value = self.static(index, symbolic)
        if value is None:
            raw = self._fetch(self.input_names[index], True) if self.has(index) else None
            if raw is not None:
                raise self.fail(
                    f"input {index} ('{self.input_names[index]}', the {what}) "
                    f"depends on symbolic dims {raw.tolist()}; graphengine needs "
                    "it known at import time"
                )
            raise self.fail(
                f"input {index} ('{self.input_names[index]}', the {what}) must be "
                "an initializer, a Constant node or computable at import time; "
                "graphengine needs it as an attribute"
            )
        return value

    def shape_of(self, tensor: Tensor) -> tuple:
        """``tensor``'s shape, with the products of symbolic dims ('2*N') the import
        noted where graphengine's own shape has unknown dims (:meth:`note_shape`)."""
        return self._shapes.get(tensor.name, tensor.shape)

    def note_shape(self, tensor: Tensor, dims: Sequence) -> None:
        """Note dims of ``tensor`` that its graphengine shape cannot hold (products
        of symbols, from a Reshape's target), for later Shape and Reshape nodes."""
        if tuple(dims) != tuple(tensor.shape):
            self._shapes[tensor.name] = tuple(dims)

    def type(self, index: int) -> TensorType:
        value = self.static(index)
        if value is not None:
            return TensorType(value.dtype, value.shape)
        return self.input(index).type

    # -- attributes ----------------------------------------------------------------
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = _REQUIRED) -> Any:
        proto = self._attrs.get(name)
        if proto is None:
            if default is _REQUIRED:
                raise self.fail(f"attribute {name!r} is required")
            return default
        if proto.type == AttributeProto.TENSOR:
            return self._read_tensor(proto.t, f"attribute {name!r} of {self.label}")
        if proto.type in (
            AttributeProto.GRAPH,
            AttributeProto.GRAPHS,
            AttributeProto.SPARSE_TENSOR,
            AttributeProto.SPARSE_TENSORS,
            AttributeProto.TYPE_PROTO,
            AttributeProto.TYPE_PROTOS,
            AttributeProto.TENSORS,
        ):
            raise self.fail(
                f"attribute {name!r} of type "
                f"{AttributeProto.AttributeType.Name(proto.type)} is not supported"
            )
        value = helper.get_attribute_value(proto)
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list):
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
        return value

    def axes_attr_or_input(self, index: int, *, since: int) -> list[int] | None:
        """Axes given as attribute ``axes`` (before schema version ``since``) or as
        static input ``index`` (from ``since`` on); None when absent."""
        if self.version >= since:
            if not self.has(index):
                return None
            return [int(a) for a in self.require_static(index, "axes").reshape(-1)]
        axes = self.attr("axes", None)
        return None if axes is None else [int(a) for a in axes]


def normalize_axes(ctx: NodeContext, axes: Sequence[int], rank: int) -> list[int]:
    """Axes in ``range(rank)``; an out-of-range or repeated axis fails naming the node."""
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ctx.fail(f"axis {a} is out of range for an input of rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ctx.fail(f"axes {list(axes)} repeat an axis")
    return out
