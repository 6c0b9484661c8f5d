"""What a drawing shows: which nodes, in which scope, as themselves or inside a box.

Gradient nodes live under ``gradients/<forward scope>``; a drawing places each
in the scope of the forward node it derives from (``gradients/layer1/mul``
beside ``layer1/mul``), so clusters, ``scope`` and ``collapse_depth`` treat
both the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import RenderError
from ..graph import Graph, Node, parse_ref
from ..ops.sources import is_source

VIEWS = ("forward", "gradient", "both")

_GRADIENT_SCOPE = re.compile(r"^gradients(_\d+)?$")


@dataclass
class Box:
    """Every node of one scope (below the collapse depth), drawn as one node."""

    id: str
    scope: str
    gradient: bool
    nodes: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """The nodes to draw and how: ``unit`` maps each node to its own name or the
    id of the box it is drawn in; ``context`` nodes are outside the selection
    and drawn faded, because selected nodes read them; ``outside`` are those of
    them outside the scope asked for."""

    nodes: list[Node]
    context: set[str]
    outside: set[str]
    gradient: set[str]
    scope_of: dict[str, str]
    unit: dict[str, str]
    boxes: dict[str, Box]


def gradient_nodes(graph: Graph) -> set[str]:
    """Names of the nodes a gradient pass added: those that derive from a forward node."""
    names = {n.name for n in graph.nodes if n.derived_from}
    if graph.gradient is not None:
        names.update(graph.gradient.nodes)
    return names


def drawn_scopes(graph: Graph, grad: set[str]) -> dict[str, str]:
    """The scope each node is drawn in: its own for a forward node; for a gradient
    node, that of the node it derives from (``gradients/layer1/w``, in scope
    ``gradients``, sits beside ``layer1/w``), or its own less the gradients prefix."""
    scopes: dict[str, str] = {}
    for node in graph.nodes:
        if node.name not in grad:
            scopes[node.name] = node.scope
        elif node.derived_from in scopes:  # forward nodes come first in graph order
            scopes[node.name] = scopes[node.derived_from]
        else:
            scopes[node.name] = _forward_scope(node.scope)
    return scopes


def _forward_scope(scope: str) -> str:
    parts = scope.split("/") if scope else []
    while parts and _GRADIENT_SCOPE.match(parts[0]):
        parts = parts[1:]
    return "/".join(parts)


def select(graph: Graph, view: str, scope: str | None = None,
           collapse_depth: int | None = None) -> Selection:
    """Choose the nodes of ``view``, keep those inside ``scope`` and collapse scopes
    deeper than ``collapse_depth`` into boxes.

    Raises RenderError for an empty scope or a negative depth.
    """
    grad = gradient_nodes(graph)
    scope_of = drawn_scopes(graph, grad)
    chosen = _nodes_of_view(graph, view, grad)
    if scope:
        chosen = _nodes_in_scope(graph, chosen, scope, scope_of)
    # Context: nodes outside the selection that it reads, or that gradient nodes
    # derive from (the dashed links need both ends).
    context: dict[str, None] = {}
    for name in chosen:
        node = graph.node(name)
        wanted = [parse_ref(r)[0] for r in node.inputs]
        if node.derived_from in graph:
            wanted.append(node.derived_from)
        for other in wanted:
            if other not in chosen:
                context[other] = None
    drawn = set(chosen) | set(context)
    nodes = [n for n in graph.nodes if n.name in drawn]
    unit, boxes = _collapse(nodes, scope_of, grad, collapse_depth)
    outside = set(context) if scope else set()
    return Selection(nodes, set(context), outside, grad, scope_of, unit, boxes)


def _nodes_of_view(graph: Graph, view: str, grad: set[str]) -> dict[str, None]:
    if view == "forward":
        return {n.name: None for n in graph.nodes if n.name not in grad}
    if view == "gradient":
        return {n.name: None for n in graph.nodes if n.name in grad}
    return {n.name: None for n in graph.nodes}


def _nodes_in_scope(graph: Graph, chosen: dict[str, None], scope: str,
                    scope_of: dict[str, str]) -> dict[str, None]:
    wanted = _forward_scope(scope)
    if not wanted:  # "gradients" itself: gradient nodes mirror the whole graph
        return chosen

    def inside(name: str) -> bool:
        s = scope_of[name]
        return s == wanted or s.startswith(wanted + "/")

    kept = {name: None for name in chosen if inside(name)}
    if not kept:
        scopes = sorted({s.split("/")[0] for s in scope_of.values() if s})
        raise RenderError(f"no node to draw in scope {scope!r}; top-level scopes are "
                          f"{', '.join(scopes) or 'none'}")
    return kept


def _collapse(nodes: list[Node], scope_of: dict[str, str], grad: set[str],
              depth: int | None) -> tuple[dict[str, str], dict[str, Box]]:
    """Map each node to itself, or (when its scope is deeper than ``depth``) to the
    box of its scope cut to ``depth + 1`` segments; forward and gradient nodes of
    one scope get separate boxes, so the backward flow stays visible."""
    if depth is not None and depth < 0:
        raise RenderError(f"collapse depth must be 0 or more, got {depth}")
    unit: dict[str, str] = {}
    boxes: dict[str, Box] = {}
    for node in nodes:
        parts = scope_of[node.name].split("/") if scope_of[node.name] else []
        if depth is None or len(parts) <= depth:
            unit[node.name] = node.name
            continue
        box_scope = "/".join(parts[:depth + 1])
        is_grad = node.name in grad
        # '#' and spaces never occur in node names, so box ids cannot collide.
        box_id = f"#{'gradient ' if is_grad else ''}box {box_scope}"
        box = boxes.setdefault(box_id, Box(box_id, box_scope, is_grad))
        box.nodes.append(node.name)
        unit[node.name] = box_id
    return unit, boxes


def node_kind(node: Node, is_gradient: bool, outputs: set[str], loss: str | None) -> str:
    """The style key of a node (see ``style.NODE_STYLES``)."""
    refs = node.output_refs()
    is_output = any(r in outputs for r in refs)
    if is_gradient:
        return "gradient output" if is_output else "gradient"
    if loss is not None and loss in refs:
        return "loss"
    if node.op == "parameter" and not node.attrs["trainable"]:
        return "frozen parameter"  # batch-norm running statistics, frozen weights
    if is_source(node.op):
        return node.op
    return "output" if is_output else "operation"
