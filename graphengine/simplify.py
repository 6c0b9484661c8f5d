"""Rewrites applied while the gradient pass emits nodes, and the node templates
that let it skip rechecking what it built before.

Gradient rules are written plainly (``dy * (1 - y * y)``); these rewrites keep
the graph they produce free of obvious waste: ``x*1``, ``x/1``, ``x+0`` and
``x-0`` return ``x`` itself, and a node identical to one already emitted (same
op, inputs and attributes) is shared instead of built again.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .graph import parse_ref
from .ops.registry import get_op
from .ops.sources import is_source

if TYPE_CHECKING:
    from .graph import Graph
    from .ops.registry import OpDef
    from .shapes import TensorType


#: What identifies a node for sharing: op, input refs, attribute items.
CseKey = tuple[str, tuple[str, ...], tuple[tuple[str, Any], ...]]


def cse_key(op: str, refs: list[str], attrs: dict[str, Any]) -> CseKey | None:
    """A hashable identity for common-subexpression sharing, or None: nodes of
    ops declared ``random``, graph sources (whose identity is their name) and
    tensor-valued nodes are never shared."""
    return _key(get_op(op), refs, attrs)


def _key(opdef: OpDef, refs: list[str], attrs: dict[str, Any]) -> CseKey | None:
    op = opdef.name
    if opdef.random or is_source(op):
        return None
    if not attrs:  # most gradient nodes: nothing to canonicalise or hash-check
        return (op, tuple(refs), ())
    # The items as they are (one C call), unless a value is a dtype (a cast's),
    # which the key holds by name: only then the per-item rewrite.
    items = tuple(attrs.items())
    for _, v in items:
        if isinstance(v, np.dtype):
            items = tuple((k, v.name if isinstance(v, np.dtype) else v) for k, v in items)
            break
    try:
        hash(items)
    except TypeError:
        return None
    return (op, tuple(refs), items)


def _is_const(graph: Graph, ref: str, scalar: float) -> bool:
    """Whether ``ref`` is a constant whose every element equals ``scalar``."""
    node = graph.get(ref if ":" not in ref else parse_ref(ref)[0])
    if node is None or node.op != "constant":
        return False
    value = node.attrs["value"]
    # The array's own all(): np.all's Python wrapper costs more than the test.
    return value.size > 0 and bool((value == scalar).all())


#: The ops :func:`simplify` has shortcuts for.
_REWRITTEN = frozenset({"multiply", "divide", "add", "subtract", "add_n"})


def simplify(graph: Graph, op: str, refs: list[str], types: Sequence[TensorType]) -> str | None:
    """Algebraic shortcuts applied while emitting gradient nodes: ``1*x``, ``x*1``,
    ``x/1``, ``0+x``, ``x+0``, ``x-0`` return ``x`` when that keeps shape and dtype."""
    if op not in _REWRITTEN:  # most nodes: decided without a look at the inputs
        return None
    out = types[0]
    if op == "add_n":
        return refs[0] if len(refs) == 1 and graph.type_of(refs[0]) == out else None
    # Every other rewrite needs a constant operand; most nodes have none.  (A
    # constant has one output, so its reference from Graph.apply has no ':k'.)
    get = graph.get
    for ref in refs:
        node = get(ref)
        if node is not None and node.op == "constant":
            break
    else:
        return None

    def same(ref: str) -> bool:
        return graph.type_of(ref) == out

    if op == "multiply":
        a, b = refs
        if _is_const(graph, a, 1) and same(b):
            return b
        if _is_const(graph, b, 1) and same(a):
            return a
    elif op == "divide":
        if _is_const(graph, refs[1], 1) and same(refs[0]):
            return refs[0]
    elif op in ("add", "subtract"):
        a, b = refs
        if _is_const(graph, b, 0) and same(a):
            return a
        if op == "add" and _is_const(graph, a, 0) and same(b):
            return b
    return None


#: Attribute values a template may be looked up by: for these types, equal
#: values of the same type always canonicalise alike.  (A float is looked up
#: by its repr, as 0.0 == -0.0; anything else, a list or an array, takes the
#: general path.)
_PLAIN_ATTR_TYPES = frozenset({bool, int, str, type(None)})


def template_key(op: str, attrs: dict[str, Any] | None) -> Hashable | None:
    """What identifies the template of a node of ``op`` given ``attrs`` as a
    rule passed them (before canonicalisation), or None when they are not
    plain values (see :data:`_PLAIN_ATTR_TYPES`)."""
    if not attrs:
        return op
    parts: list[Any] = [op]
    for name, value in attrs.items():
        kind = type(value)
        if kind in _PLAIN_ATTR_TYPES:
            parts.append((name, kind, value))
        elif kind is float:
            parts.append((name, kind, repr(value)))
        elif kind is tuple and all(type(v) is int for v in value):
            parts.append((name, kind, value))
        else:
            return None
    return tuple(parts)


class EmitTemplate:
    """What a gradient node's op and attributes decide, worked out once.

    Gradient rules build the same few (op, attributes) pairs thousands of times
    (``multiply``, ``sum_like``, ``broadcast_like(axes=None)``), from inputs
    that are tensors of the graph.  :meth:`Graph.apply` checks and canonicalises
    the first node of each pair in full; later ones reuse the result from here
    and skip the schema look-ups, the attribute checks and the sharing key's
    construction.  Output types are still inferred per input types (cached in
    ``inferred``), so a shape error still comes from the op's inference rule.
    """

    __slots__ = ("opdef", "op", "attrs", "items", "arity", "rewritten", "inferred")

    def __init__(self, opdef: OpDef, attrs: dict[str, Any], items: tuple[Any, ...]) -> None:
        self.opdef = opdef
        self.op = opdef.name
        #: The canonical attributes (each node gets its own copy).
        self.attrs = attrs
        #: The attribute part of the sharing key (:func:`cse_key`).
        self.items = items
        #: How many inputs the op takes, or None for a variadic op.
        self.arity: int | None = None if opdef.variadic else len(opdef.inputs)
        #: Whether :func:`simplify` may rewrite a node of the op.
        self.rewritten = self.op in _REWRITTEN
        #: Output types by input dtypes and shapes (inference is a pure function
        #: of them, and a gradient graph repeats the same few many times).
        self.inferred: dict[tuple[Any, ...], tuple[TensorType, ...]] = {}


@dataclass
class EmissionContext:
    """What :meth:`Graph.emitting_gradients` applies while a pass emits nodes: the
    scope they are named in, the forward node they derive from, the names kept
    free, the sharing table and the node templates (:class:`EmitTemplate`).
    The rewrites live here, not in graph.py, so the builder does not depend on
    them."""

    scope: str
    derived_from: str = ""
    #: Sharing table: cse_key (or a constant's value key) -> node name.
    cse: dict[Hashable, str] = field(default_factory=dict)
    #: Names kept free for the gradient outputs (``gradients/<wrt>``), so that
    #: generated names such as ``gradients/layer1/multiply`` never take them.
    reserved: set[str] = field(default_factory=set)
    #: (Python float, dtype of the op's tensors) -> the constant made of it.
    literals: dict[tuple[float, Any], str] = field(default_factory=dict)
    #: (op, attribute items of the sharing key) -> the template of such nodes.
    templates: dict[Hashable, EmitTemplate] = field(default_factory=dict)
    #: :func:`template_key` of a rule's arguments -> their template, once built.
    template_of: dict[Hashable, EmitTemplate] = field(default_factory=dict)

    #: ``shortcut(graph, op, refs, types)``: an existing tensor that a node of
    #: ``op`` on ``refs`` would equal, or None (:func:`simplify`).
    shortcut = staticmethod(simplify)
    #: ``key(opdef, refs, attrs)``: the sharing key of such a node, or None when
    #: it must not be shared (:func:`cse_key`).
    key = staticmethod(_key)
    #: ``template_key(op, attrs)``: what :attr:`template_of` is looked up by.
    template_key = staticmethod(template_key)

    def template(self, opdef: OpDef, attrs: dict[str, Any], items: tuple[Any, ...]) -> EmitTemplate:
        """The template of nodes of ``opdef`` with canonical ``attrs`` (whose
        sharing-key part is ``items``), made on first use."""
        found = self.templates.get((opdef.name, items))
        if found is None:
            found = self.templates[(opdef.name, items)] = EmitTemplate(opdef, attrs, items)
        return found
