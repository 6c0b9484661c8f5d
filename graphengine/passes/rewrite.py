"""The machinery every pass shares: one forward sweep that builds a new graph
(through :class:`graphengine.rebuild.Rebuild`, the loader's mechanism too).

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
from ..graph import Graph, Node, canonical_ref, parse_ref
from ..ops.registry import OpDef
from ..rebuild import SOURCES as SOURCES  # the passes' name for them
from ..rebuild import Rebuild
from ..shapes import TensorType


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
    """Builds the graph a pass returns, through :class:`graphengine.rebuild.Rebuild`
    (the one rebuild mechanism); see the module docstring.

    ``keep`` lists tensor refs that must exist, under their names, in the result.
    """

    def __init__(self, graph: Graph, keep: Sequence[str]) -> None:
        self.src = graph
        self.keep = set(keep)
        self.keep_nodes = {parse_ref(r)[0] for r in keep}
        self.rebuild = Rebuild(graph)
        self.out = self.rebuild.graph
        self.subst: dict[str, str] = {}

    # -- reading the new graph ---------------------------------------------------
    def ref(self, ref: str) -> str:
        """What source tensor ``ref`` is in the new graph."""
        ref = canonical_ref(ref)
        return self.subst.get(ref, ref)

    def inputs(self, node: Node) -> list[str]:
        return [self.ref(r) for r in node.inputs]

    def producer(self, ref: str) -> Node | None:
        """The node of the new graph that produces ``ref`` (a new-graph ref)."""
        return self.rebuild.get(parse_ref(ref)[0])

    def constant(self, ref: str) -> Any:
        """The value of ``ref`` when a constant node produces it, else None."""
        node = self.producer(ref)
        return node.attrs["value"] if node is not None and node.op == "constant" else None

    def type_of(self, ref: str) -> TensorType:
        return self.rebuild.type_of(ref)

    # -- writing -------------------------------------------------------------------
    def copy(self, node: Node) -> None:
        """Keep ``node``, with its inputs mapped."""
        inputs = tuple(self.inputs(node))
        if inputs != node.inputs:
            node = Node(
                node.name, node.op, inputs, node.attrs, node.types, node.scope, node.derived_from
            )
        self.rebuild.add(node)

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
        node = self.rebuild.emit(
            op,
            inputs,
            attrs,
            scope=like.scope,
            derived_from=like.derived_from,
            name=name,
            gradient=self.rebuild.in_source_gradient(like.name),
        )
        if node.name == like.name:
            for old, new in zip(like.output_refs(), node.output_refs()):
                if old != new:
                    self.subst[old] = new
        return node.output_refs()

    # -- finishing -------------------------------------------------------------------
    def finish(self) -> Graph:
        """Drop what nothing kept needs, and carry the graph's outputs, values,
        gradient section, training spec and metadata over."""
        kept = [self.ref(r) for r in self.keep]
        out = self.rebuild.finish(kept, outputs=[self.ref(r) for r in self.src.marked_outputs])
        missing = [r for r in kept if parse_ref(r)[0] not in out]
        if missing:  # pragma: no cover - a pass broke its contract
            raise GraphError(f"internal error: kept tensors {missing} were lost")
        return out
