"""The machinery every pass shares: one forward sweep that builds a new graph.

A pass walks the source graph's nodes in order.  For each node it either copies
it (its inputs mapped to what they became), replaces its outputs by tensors that
already exist in the new graph, or emits new nodes in its place.  Because the
sweep is in topological order, the producers of a node's inputs are already in
the new graph when the pass looks at the node, so patterns are matched there.

What a graph promises stays true across every rewrite:

* **kept tensors keep their names**: declared outputs, the gradient section's
  loss, gradients and seed, the training spec's loss and predictions, and every
  placeholder and parameter.  A kept node replaced by another tensor becomes an
  ``identity`` of it under its own name; the root node of a fused pattern takes
  the name of the node it replaces;
* nodes that no kept tensor needs are dropped when the sweep ends (except
  placeholders and parameters, which are the graph's interface and state);
* a node emitted in place of a gradient node belongs to the gradient section,
  and derives from the same forward node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import GraphError
from ..graph import (
    GradientInfo,
    Graph,
    Node,
    canonical_ref,
    fresh_name,
    infer_types,
    parse_ref,
)
from ..ops.registry import OpDef, get_op

#: Ops that are the graph's interface or state: never removed, merged or renamed.
SOURCES = ("placeholder", "parameter")


def kept_refs(graph: Graph, extra: Iterable[str] = ()) -> list[str]:
    """The tensors an optimized graph must still provide, under the same names."""
    refs = list(graph.outputs)
    info = graph.gradient
    if info is not None:
        refs += [info.loss, *info.grads.values(), *info.grads.keys()]
        refs += [info.seed] if info.seed else []
    spec = graph.training
    if spec is not None:
        refs += [r for r in (spec.loss, spec.predictions, spec.labels) if r]
    refs += list(extra)
    return [canonical_ref(r) for r in dict.fromkeys(refs)]


def is_random(opdef: OpDef) -> bool:
    """The op draws random numbers: two equal nodes still differ."""
    return opdef.random


def updates_state(opdef: OpDef) -> bool:
    """The trainer updates state from this op's outputs (batch-norm statistics)."""
    return bool(opdef.state_updates)


def use_counts(graph: Graph) -> dict[str, int]:
    """How many input slots read each tensor ref."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        for ref in node.inputs:
            ref = canonical_ref(ref)
            counts[ref] = counts.get(ref, 0) + 1
    return counts


class Rewriter:
    """Builds the graph a pass returns; see the module docstring.

    ``keep`` lists tensor refs that must exist, under their names, in the result.
    """

    def __init__(self, graph: Graph, keep: Sequence[str]) -> None:
        self.src = graph
        self.keep = set(keep)
        self.keep_nodes = {parse_ref(r)[0] for r in keep}
        self.out = Graph(graph.name)
        self.subst: dict[str, str] = {}
        self._taken = set(graph._nodes)
        grad = graph.gradient
        self._src_gradient = set(grad.nodes) if grad is not None else set()
        self._gradient: set[str] = set()

    # -- reading the new graph ---------------------------------------------------
    def ref(self, ref: str) -> str:
        """What source tensor ``ref`` is in the new graph."""
        ref = canonical_ref(ref)
        return self.subst.get(ref, ref)

    def inputs(self, node: Node) -> list[str]:
        return [self.ref(r) for r in node.inputs]

    def producer(self, ref: str) -> Node | None:
        """The node of the new graph that produces ``ref`` (a new-graph ref)."""
        return self.out._nodes.get(parse_ref(ref)[0])

    def constant(self, ref: str) -> Any:
        """The value of ``ref`` when a constant node produces it, else None."""
        node = self.producer(ref)
        return node.attrs["value"] if node is not None and node.op == "constant" else None

    def type_of(self, ref: str):
        return self.out.type_of(ref)

    # -- writing -------------------------------------------------------------------
    def copy(self, node: Node) -> None:
        """Keep ``node``, with its inputs mapped."""
        inputs = tuple(self.inputs(node))
        if inputs != node.inputs:
            node = Node(
                node.name, node.op, inputs, node.attrs, node.types, node.scope, node.derived_from
            )
        self._insert(node, node.name in self._src_gradient)

    def replace(self, node: Node, refs: Sequence[str]) -> None:
        """Let ``node``'s outputs be the existing tensors ``refs`` (same types)."""
        for old, new, t in zip(node.output_refs(), refs, node.types):
            if self.type_of(new) != t:
                raise GraphError(
                    f"internal error: replacing '{old}' {t} by '{new}' {self.type_of(new)}"
                )
        if node.name in self.keep_nodes:
            if len(refs) != 1:
                self.copy(node)  # a kept multi-output node stays as it is
                return
            self.emit("identity", [refs[0]], {}, like=node, name=node.name)
            return
        for old, new in zip(node.output_refs(), refs):
            self.subst[old] = new

    def emit(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any],
        like: Node,
        name: str | None = None,
    ) -> list[str]:
        """Add a node of ``op`` built for source node ``like`` (its scope, its
        section, its ``derived_from``); ``name`` takes ``like``'s place.  Returns
        the new node's output refs."""
        opdef = get_op(op)
        attrs = opdef.canonical_attrs(attrs)
        if name is None:
            name = self._fresh(like.scope, op)
        types = infer_types(opdef, name, [self.type_of(r) for r in inputs], attrs, list(inputs))
        node = Node(name, op, tuple(inputs), attrs, types, like.scope, like.derived_from)
        self._insert(node, like.name in self._src_gradient)
        if name == like.name:
            for old, new in zip(like.output_refs(), node.output_refs()):
                if old != new:
                    self.subst[old] = new
        return node.output_refs()

    def _fresh(self, scope: str, base: str) -> str:
        name = fresh_name(f"{scope}/{base}" if scope else base, self._taken)
        self._taken.add(name)
        return name

    def _insert(self, node: Node, gradient: bool) -> None:
        self._taken.add(node.name)
        self.out._nodes[node.name] = node
        if gradient:
            self._gradient.add(node.name)

    # -- finishing -------------------------------------------------------------------
    def finish(self) -> Graph:
        """Drop what nothing kept needs, and carry the graph's outputs, values,
        gradient section, training spec and metadata over."""
        src, out = self.src, self.out
        needed = _needed(out, [self.ref(r) for r in self.keep])
        out._nodes = {k: n for k, n in out._nodes.items() if k in needed or n.op in SOURCES}
        missing = [r for r in self.keep if parse_ref(self.ref(r))[0] not in out._nodes]
        if missing:  # pragma: no cover - a pass broke its contract
            raise GraphError(f"internal error: kept tensors {missing} were lost")
        out.values = {k: v for k, v in src.values.items() if k in out._nodes}
        out._outputs = [self.ref(r) for r in src._outputs]
        out.metadata = dict(src.metadata)
        out.training = src.training
        out._unknown_fields = src._unknown_fields
        if src.gradient is not None:
            info = src.gradient
            out.gradient = GradientInfo(
                info.loss,
                dict(info.grads),
                tuple(k for k in out._nodes if k in self._gradient),
                info.seed,
                info.zero,
            )
        out._changed()
        return out


def _needed(graph: Graph, roots: Iterable[str]) -> set[str]:
    needed: set[str] = set()
    stack = [parse_ref(r)[0] for r in roots]
    nodes = graph._nodes
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(parse_ref(r)[0] for r in nodes[name].inputs)
    return needed
