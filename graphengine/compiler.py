"""Compiler passes over a graph: to NetworkX, ordering, validation, pruning.

Each pass is a function that takes a graph (or node records) and returns a new
result without hidden state.  Ordering is a topological sort that breaks ties
by insertion index, so one file gives one order in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import GraphError, ShapeError
from .graph import Graph, Node, check_name, parse_ref
from .ops.registry import REGISTRY, get_op
from .rebuild import Rebuild, ancestors

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx
    import numpy as np

    from .shapes import TensorType


@dataclass
class NodeRecord:
    """A node as read from a file, before validation: nothing is trusted yet."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    derived_from: str = ""


def to_networkx(graph: Graph | Sequence[Node | NodeRecord]) -> nx.DiGraph:
    """A DiGraph with one vertex per node (attributes ``op`` and ``index``) and one
    edge per producer -> consumer pair (attribute ``refs``: the input slots)."""
    import networkx as nx  # imported on first use, so `import graphengine` stays light

    nodes = graph.nodes if isinstance(graph, Graph) else list(graph)
    g = nx.DiGraph()
    for index, node in enumerate(nodes):
        g.add_node(node.name, op=node.op, index=index)
    for node in nodes:
        for slot, ref in enumerate(node.inputs):
            producer = parse_ref(ref)[0]
            if producer not in g:
                raise GraphError(
                    f"node '{node.name}' ({node.op}): input {slot} refers to "
                    f"{ref!r}, which no node produces"
                )
            if g.has_edge(producer, node.name):
                g.edges[producer, node.name]["slots"].append(slot)
            else:
                g.add_edge(producer, node.name, slots=[slot])
    return g


def order_nodes(g: nx.DiGraph) -> list[str]:
    """Topological order, ties broken by insertion index; GraphError on a cycle,
    naming the nodes on it."""
    import networkx as nx

    try:
        return list(nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["index"]))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        names = " -> ".join(f"'{u}'" for u, _ in cycle) + f" -> '{cycle[0][0]}'"
        raise GraphError(
            f"the graph has a cycle: {names}. A node cannot depend on its own "
            "output; break the cycle by feeding one of these values"
        ) from None


def build_graph(name: str, records: Sequence[NodeRecord], values: dict[str, Any]) -> Graph:
    """Validate node records read from a file and build a Graph from them.

    Checks, in this order, each failing with an error that names the node:
    names (well-formed, unique), ops (known), attributes (kinds), inputs (each
    refers to an existing output), the absence of cycles, parameter values, and
    then shape and dtype inference over the whole graph in topological order.
    """
    rebuild = Rebuild(name=name)
    graph = rebuild.graph
    seen: dict[str, NodeRecord] = {}
    for rec in records:
        check_name(rec.name, "node name")
        if rec.name in seen:
            raise GraphError(
                f"duplicate node name {rec.name!r} (ops '{seen[rec.name].op}' and "
                f"'{rec.op}'); every node needs its own name"
            )
        seen[rec.name] = rec
        if rec.op not in REGISTRY:
            get_op(rec.op)  # raises GraphError naming the op
    g = to_networkx(records)
    order = order_nodes(g)
    for node_name in order:
        rec = seen[node_name]
        opdef = get_op(rec.op)
        in_types = []
        for slot, ref in enumerate(rec.inputs):
            producer, index = parse_ref(ref)
            out_types = graph.node(producer).types
            if index >= len(out_types):
                raise GraphError(
                    f"node '{rec.name}' ({rec.op}): input {slot} refers to {ref!r}, "
                    f"but '{producer}' has only {len(out_types)} output(s)"
                )
            in_types.append(out_types[index])
        if opdef.variadic and not rec.inputs:
            raise GraphError(f"node '{rec.name}' ({rec.op}) needs at least one input")
        if not opdef.variadic and len(rec.inputs) != len(opdef.inputs):
            raise GraphError(
                f"node '{rec.name}' ({rec.op}) has {len(rec.inputs)} inputs, "
                f"the op takes {len(opdef.inputs)}"
            )
        node = rebuild.emit(
            rec.op,
            rec.inputs,
            rec.attrs,
            scope=rec.scope,
            derived_from=rec.derived_from,
            name=rec.name,
            in_types=in_types,
        )
        if rec.op == "parameter":
            _check_parameter_value(rec.name, node.types[0], values.get(rec.name))
            graph.values[rec.name] = values[rec.name]
    return rebuild.finish()


def _check_parameter_value(name: str, declared: TensorType, value: np.ndarray | None) -> None:
    if value is None:
        raise GraphError(f"parameter '{name}' has no value")
    if value.dtype != declared.dtype or tuple(value.shape) != declared.shape:
        raise ShapeError(
            f"parameter '{name}': value of {value.dtype}{value.shape} does not "
            f"match its declared type {declared}"
        )


def prune_to(graph: Graph, fetches: Iterable[str]) -> list[Node]:
    """The nodes needed to compute ``fetches`` (tensor references), in graph order."""
    needed = ancestors(graph, fetches)
    return [n for n in graph.nodes if n.name in needed]


def validate(graph: Graph) -> None:
    """Re-check a graph built in memory: order, references and inference.

    Graphs built with ``Graph.apply`` or loaded from files are valid by
    construction; this pass is for graphs assembled by other tools.
    """
    records = [
        NodeRecord(n.name, n.op, list(n.inputs), dict(n.attrs), n.scope, n.derived_from)
        for n in graph.nodes
    ]
    build_graph(graph.name, records, graph.values)
