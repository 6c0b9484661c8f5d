"""The one mechanism for building a new graph out of an old one (or out of a file).

Nodes never change once added, so every transformation builds a new graph:
the loader (:func:`graphengine.compiler.build_graph`, from checked file records),
the optimization passes (:class:`graphengine.passes.rewrite.Rewriter`) and the
data-parallel transformation (:func:`graphengine.training.distributed.with_sync_batch_norm`).
Each of them walks nodes in topological order and, for each, either adds it as
it is (:meth:`Rebuild.add`) or emits a node whose types are inferred again
(:meth:`Rebuild.emit`); :meth:`Rebuild.finish` then drops what nothing kept
needs and carries the source's model record over (parameter values of the
nodes that remain, training spec, metadata, unknown fields, and the gradient
section restricted to the nodes that belong to it).

>>> import graphengine as ge
>>> g = ge.Graph("g")
>>> y = ge.exp(g.placeholder("x", (2,)))
>>> rb = Rebuild(g)
>>> for node in g.nodes:
...     if node.op == "exp":
...         _ = rb.emit("tanh", node.inputs, {}, scope=node.scope, name=node.name)
...     else:
...         rb.add(node)
>>> [n.op for n in rb.finish().nodes]
['placeholder', 'tanh']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import GraphError
from .graph import Graph, Node, fresh_name, infer_types, parse_ref
from .model import GradientInfo
from .ops.registry import get_op
from .shapes import TensorType

#: Ops that are a graph's interface or state: never dropped by :meth:`Rebuild.finish`.
SOURCES = ("placeholder", "parameter")


def ancestors(graph: Graph, roots: Iterable[str]) -> set[str]:
    """The names of the nodes producing ``roots`` (tensor references) and of
    every node they depend on."""
    needed: set[str] = set()
    stack = [parse_ref(r)[0] for r in roots]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(parse_ref(r)[0] for r in graph.node(name).inputs)
    return needed


class Rebuild:
    """A new graph assembled node by node, in topological order.

    ``source`` is the graph being transformed (None when building from file
    records: then give ``name``); its record is carried over by :meth:`finish`.
    Generated names (:meth:`emit` without ``name``) avoid every name of the
    source and of the new graph.
    """

    def __init__(self, source: Graph | None = None, name: str | None = None) -> None:
        if source is None and name is None:
            raise TypeError("Rebuild needs a source graph or a name")
        self.source = source
        self.graph = Graph(name if name is not None else source.name)  # type: ignore[union-attr]
        self._taken: set[str] = set(source.names()) if source is not None else set()
        grad = source.gradient if source is not None else None
        self._src_gradient: set[str] = set(grad.nodes) if grad is not None else set()
        self._gradient: set[str] = set()

    # -- reading the new graph -------------------------------------------------
    def get(self, name: str) -> Node | None:
        """The node of the new graph called ``name``, or None."""
        return self.graph.get(name)

    def type_of(self, ref: str) -> TensorType:
        """The type of tensor ``ref`` of the new graph."""
        return self.graph.type_of(ref)

    def in_source_gradient(self, name: str) -> bool:
        """Whether source node ``name`` belongs to the source's gradient section."""
        return name in self._src_gradient

    # -- writing -----------------------------------------------------------------
    def add(self, node: Node, gradient: bool | None = None) -> None:
        """Add ``node`` as it is (its inputs are already in the new graph).
        ``gradient``: whether it belongs to the gradient section (by default,
        whether the source node of that name did)."""
        self._taken.add(node.name)
        self.graph.add_node(node)
        if self._src_gradient and (
            gradient if gradient is not None else node.name in self._src_gradient
        ):
            self._gradient.add(node.name)

    def emit(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any],
        *,
        scope: str = "",
        derived_from: str = "",
        name: str | None = None,
        gradient: bool | None = None,
        in_types: Sequence[TensorType] | None = None,
    ) -> Node:
        """Add a node of ``op`` on ``inputs`` (refs of the new graph), its
        attributes made canonical and its types inferred (ShapeError or GraphError
        naming the node when they do not fit).  ``name`` defaults to a fresh
        ``scope/op``; ``gradient`` is as for :meth:`add`.  ``in_types`` saves
        looking the input types up when the caller has them."""
        if name is None:
            name = self.fresh(scope, op)
        opdef = get_op(op)
        try:
            attrs = opdef.canonical_attrs(attrs)
        except GraphError as exc:
            raise GraphError(f"node '{name}': {exc}") from None
        if in_types is None:
            in_types = [self.graph.type_of(r) for r in inputs]
        types = infer_types(opdef, name, in_types, attrs, list(inputs))
        node = Node(name, op, tuple(inputs), attrs, types, scope, derived_from)
        self.add(node, gradient)
        return node

    def fresh(self, scope: str, base: str) -> str:
        """A name ``scope/base`` (or ``scope/base_k``) no node of either graph has."""
        name = fresh_name(f"{scope}/{base}" if scope else base, self._taken)
        self._taken.add(name)
        return name

    # -- finishing ---------------------------------------------------------------
    def finish(
        self, keep: Iterable[str] | None = None, outputs: Iterable[str] | None = None
    ) -> Graph:
        """The new graph.  With ``keep`` (refs of the new graph), nodes that none of
        them needs are dropped (placeholders and parameters stay).  The marked
        outputs are ``outputs`` (default: the source's).  The source's record is
        carried over: values of the parameters that remain, training spec,
        metadata, unknown fields, and its gradient section holding the nodes that
        belong to it."""
        out = self.graph
        if keep is not None:
            needed = ancestors(out, keep)
            out.retain({n.name for n in out.nodes if n.name in needed or n.op in SOURCES})
        source = self.source
        if source is not None:
            names = out.names()
            out.record = source.record.carried_to(names)
            info = source.gradient
            if info is not None:
                out.gradient = GradientInfo(
                    info.loss,
                    dict(info.grads),
                    tuple(k for k in names if k in self._gradient),
                    info.seed,
                    info.zero,
                )
            if outputs is None:
                outputs = source.marked_outputs
        if outputs is not None:
            out.set_outputs(outputs)
        return out
