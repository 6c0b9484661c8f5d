"""What a drawing shows: which nodes, grouped how, inside which clusters.

Gradient nodes live under ``gradients/<forward scope>``; a drawing places each
in the scope of the forward node it derives from (``gradients/layer1/mul``
beside ``layer1/mul``), so clusters, ``scope`` and ``collapse_depth`` treat
both the same way.  The gradient nodes that differentiate one forward op (the
few nodes a conv2d's rule emits, say) form its *gradient group*: drawn as one
box ``∂ conv2d``, or expanded into a labelled cluster of its nodes.

Each drawn thing is a *unit*: a node drawn as itself, or a box standing for
several nodes (a collapsed scope, a gradient group, a run of consecutive nodes
when even one box per scope would be too many for ``dot``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from ..errors import RenderError
from ..graph import Graph, Node, parse_ref
from ..ops.sources import is_source

VIEWS = ("forward", "gradient", "both")

#: A drawing holds at most this many units (nodes and boxes) unless asked
#: otherwise: above it, scopes are collapsed automatically, the deepest first,
#: and when one box per top-level scope is still too many, runs of consecutive
#: nodes become boxes.  dot lays out 300 units in about a second.
NODE_BUDGET = 300

#: Edges between units allowed per unit of the budget.  Units alone do not bound
#: dot's time: a 60-step RNN collapsed to one box per step holds 204 units but 795
#: edges (each parameter feeds every step), which Graphviz 2.43 does not lay out
#: in a minute; a shallower collapse depth is taken instead.
EDGES_PER_UNIT = 2

#: A gradient view draws every gradient node when there are at most this many;
#: above it, the gradient of each forward op is one box (see ``expand``).
EXPAND_BUDGET = 40

_GRADIENT_SCOPE = re.compile(r"^gradients(_\d+)?$")


@dataclass
class Box:
    """Several nodes drawn as one: ``kind`` is a style key (see ``style.NODE_STYLES``),
    ``label`` its lines; ``forward`` names the forward node a gradient group
    differentiates."""

    id: str
    kind: str
    label: list[str]
    tooltip: str
    nodes: list[str] = field(default_factory=list)
    forward: str = ""


@dataclass
class Cluster:
    """A labelled cluster: a name scope, or an expanded gradient group."""

    id: str
    label: str
    tooltip: str
    parent: str  # "" for the top level


@dataclass
class Selection:
    """The nodes to draw and how.

    ``unit`` maps each drawn node to its own name or the id of its box;
    ``cluster_of`` maps each unit to its innermost cluster ("" at the top).
    ``context`` nodes are outside the selection and drawn faded, because
    selected nodes read them; ``outside`` are those of them outside the scope
    asked for.  ``groups`` maps each gradient node to the forward node it
    differentiates; ``flow`` holds the gradient nodes the seed gradient flows
    through (the others compute from forward values alone: a transposed weight
    that several steps of an RNN share); ``notes`` says what was done
    automatically.
    """

    nodes: list[Node]
    context: set[str]
    outside: set[str]
    gradient: set[str]
    outputs: dict[str, str]  # gradient output node -> the wrt tensor
    scope_of: dict[str, str]
    unit: dict[str, str]
    boxes: dict[str, Box]
    clusters: dict[str, Cluster]
    cluster_of: dict[str, str]
    groups: dict[str, str]
    flow: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def units(self) -> list[str]:
        """Unit ids in drawing order (graph order of their first node)."""
        return list(dict.fromkeys(self.unit[n.name] for n in self.nodes))


def gradient_nodes(graph: Graph) -> set[str]:
    """Names of the nodes a gradient pass added: those that derive from a forward node."""
    names = {n.name for n in graph.nodes if n.derived_from}
    if graph.gradient is not None:
        names.update(graph.gradient.nodes)
    return names


def gradient_flow(graph: Graph, grad: set[str]) -> set[str]:
    """The gradient nodes that depend on the seed gradient: the seed (the first node
    the gradient pass added) and every gradient node reading one of them."""
    flow: set[str] = set()
    for node in graph.nodes:
        if node.name in grad and (not flow or any(parse_ref(r)[0] in flow for r in node.inputs)):
            flow.add(node.name)
    return flow


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


def select(
    graph: Graph,
    view: str,
    scope: str | None = None,
    collapse_depth: int | None = None,
    *,
    expand: bool | Collection[str] | None = None,
    reads: bool = False,
    max_nodes: int | None = NODE_BUDGET,
) -> Selection:
    """Choose the nodes of ``view``, keep those inside ``scope``, and group them.

    Args:
        collapse_depth: scopes nested this deep or deeper are each one box
            (1: every top-level scope; 2: their sub-scopes; 0 means 1).
        expand: which gradient groups show their nodes: True (all), False (none),
            names of forward nodes, or None (all when the view has at most
            ``EXPAND_BUDGET`` gradient nodes).
        reads: also draw the forward values gradient rules read, faded.
        max_nodes: the node budget (None: no limit); see ``NODE_BUDGET``.

    Raises RenderError for an empty scope or a negative depth or budget.
    """
    if collapse_depth is not None and collapse_depth < 0:
        raise RenderError(f"collapse depth must be 0 or more, got {collapse_depth}")
    if max_nodes is not None and max_nodes < 1:
        raise RenderError(f"the node budget must be 1 or more, got {max_nodes}")
    grad = gradient_nodes(graph)
    scope_of = drawn_scopes(graph, grad)
    chosen = _nodes_of_view(graph, view, grad)
    if scope:
        chosen = _nodes_in_scope(chosen, scope, scope_of)
    context = _context(graph, chosen, grad, reads)
    drawn = set(chosen) | set(context)
    nodes = [n for n in graph.nodes if n.name in drawn]
    outputs = _gradient_outputs(graph, drawn)
    groups = {
        n.name: n.derived_from
        for n in nodes
        if n.name in grad and n.name not in outputs and n.derived_from in graph
    }
    expanded = _expanded(expand, groups, chosen)
    sel = Selection(
        nodes,
        set(context),
        set(context) if scope else set(),
        grad,
        outputs,
        scope_of,
        {},
        {},
        {},
        {},
        groups,
        gradient_flow(graph, grad),
    )
    depth = max(collapse_depth, 1) if collapse_depth is not None else None
    if depth is None and max_nodes is not None and not expanded:
        # Count before grouping: a huge graph is grouped once, at the depth that fits.
        if _unit_counts(sel)[0] > max_nodes:
            _fit_budget(graph, sel, expanded, max_nodes)
            return sel
    _group(graph, sel, depth, expanded)
    if depth is None and max_nodes is not None and expanded and len(sel.units()) > max_nodes:
        _fit_budget(graph, sel, expanded, max_nodes)
    return sel


def _nodes_of_view(graph: Graph, view: str, grad: set[str]) -> dict[str, None]:
    if view == "forward":
        return {n.name: None for n in graph.nodes if n.name not in grad}
    if view == "gradient":
        return {n.name: None for n in graph.nodes if n.name in grad}
    return {n.name: None for n in graph.nodes}


def _nodes_in_scope(
    chosen: dict[str, None], scope: str, scope_of: dict[str, str]
) -> dict[str, None]:
    wanted = _forward_scope(scope)
    if not wanted:  # "gradients" itself: gradient nodes mirror the whole graph
        return chosen

    def inside(name: str) -> bool:
        s = scope_of[name]
        return s == wanted or s.startswith(wanted + "/")

    kept = {name: None for name in chosen if inside(name)}
    if not kept:
        scopes = sorted({s.split("/")[0] for s in scope_of.values() if s})
        raise RenderError(
            f"no node to draw in scope {scope!r}; top-level scopes are "
            f"{', '.join(scopes) or 'none'}"
        )
    return kept


def _context(graph: Graph, chosen: dict[str, None], grad: set[str], reads: bool) -> dict[str, None]:
    """Nodes outside the selection that it reads (forward values read by gradient
    rules, and the forward nodes gradient nodes derive from, only with ``reads``)."""
    context: dict[str, None] = {}
    for name in chosen:
        node = graph.node(name)
        wanted = [parse_ref(r)[0] for r in node.inputs]
        if name in grad:
            if reads:
                if node.derived_from in graph:
                    wanted.append(node.derived_from)
            else:
                wanted = [w for w in wanted if w in grad]
        for other in wanted:
            if other not in chosen:
                context[other] = None
    return context


def _gradient_outputs(graph: Graph, drawn: set[str]) -> dict[str, str]:
    """Gradient output node -> the tensor it is the gradient for."""
    if graph.gradient is None:
        return {}
    added = set(graph.gradient.nodes)
    found: dict[str, str] = {}
    for wrt, grad_ref in graph.gradient.grads.items():
        name = parse_ref(grad_ref)[0]
        if name in drawn and name in added:
            found.setdefault(name, wrt)
    return found


def _expanded(
    expand: bool | Collection[str] | None, groups: dict[str, str], chosen: dict[str, None]
) -> set[str]:
    """The forward nodes whose gradient groups are drawn node by node."""
    forward = set(groups.values())
    if expand is None:
        expand = sum(1 for g in groups if g in chosen) <= EXPAND_BUDGET
    if expand is True:
        return forward
    if expand is False:
        return set()
    wanted = {name.removeprefix("gradients/") for name in expand}
    unknown = sorted(wanted - forward)
    if unknown:
        some = ", ".join(sorted(forward)[:5])
        raise RenderError(
            f"cannot expand the gradient of {', '.join(map(repr, unknown))}: no "
            f"gradient node derives from it; forward nodes with gradients "
            f"include {some or 'none'}"
        )
    return wanted


def _group(graph: Graph, sel: Selection, depth: int | None, expanded: set[str]) -> None:
    """Fill ``sel.unit``, ``boxes`` and ``clusters``: scopes nested ``depth`` deep or
    deeper become boxes (forward and gradient nodes of one scope apart, so the
    backward flow stays visible), gradient groups not expanded become boxes."""
    sel.unit.clear()
    sel.boxes.clear()
    sel.clusters.clear()
    sel.cluster_of.clear()
    for node in sel.nodes:
        scope = sel.scope_of[node.name]
        parts = scope.split("/") if scope else []
        is_grad = node.name in sel.gradient
        if depth is not None and len(parts) >= depth:
            box_scope = "/".join(parts[:depth])
            # '#' and spaces never occur in node names, so box ids cannot collide.
            box_id = f"#{'gradient ' if is_grad else ''}box {box_scope}"
            if box_id not in sel.boxes:
                sel.boxes[box_id] = Box(
                    box_id,
                    "gradient scope box" if is_grad else "scope box",
                    [f"∂ {box_scope}" if is_grad else box_scope],
                    box_scope,
                )
                sel.cluster_of[box_id] = _scope_cluster(sel, "/".join(parts[: depth - 1]))
            sel.boxes[box_id].nodes.append(node.name)
            sel.unit[node.name] = box_id
            continue
        forward = sel.groups.get(node.name)
        if forward is None:
            sel.unit[node.name] = node.name
            sel.cluster_of[node.name] = _scope_cluster(sel, scope)
        elif forward in expanded:
            sel.unit[node.name] = node.name
            sel.cluster_of[node.name] = _group_cluster(graph, sel, forward, scope)
        else:
            box_id = f"#gradient of {forward}"
            if box_id not in sel.boxes:
                sel.boxes[box_id] = Box(
                    box_id, "gradient group", [], f"gradient of {forward}", forward=forward
                )
                sel.cluster_of[box_id] = _scope_cluster(sel, scope)
            sel.boxes[box_id].nodes.append(node.name)
            sel.unit[node.name] = box_id
    for box in sel.boxes.values():
        if box.kind == "gradient group":
            box.label = _group_label(graph, box, sel.scope_of)
        elif box.kind != "chunk":
            count = len(box.nodes)
            grad = "gradient " if box.kind == "gradient scope box" else ""
            box.label.append(f"{count} {grad}node{'s' if count > 1 else ''}")


def _scope_cluster(sel: Selection, scope: str) -> str:
    """The cluster id of ``scope`` (made, with its parents, when first needed)."""
    if not scope:
        return ""
    cid = "cluster_" + scope
    if cid not in sel.clusters:
        parent, _, last = scope.rpartition("/")
        sel.clusters[cid] = Cluster(cid, last, scope, "")
        sel.clusters[cid].parent = _scope_cluster(sel, parent)
    return cid


def _group_cluster(graph: Graph, sel: Selection, forward: str, scope: str) -> str:
    cid = f"cluster_#gradient of {forward}"
    if cid not in sel.clusters:
        parent = _scope_cluster(sel, scope)
        sel.clusters[cid] = Cluster(
            cid, f"∂ {_short(graph.node(forward), scope)}", f"gradient of {forward}", parent
        )
    return cid


def _short(node: Node, drawn_scope: str) -> str:
    """A node's name inside the scope it is drawn in."""
    return node.name.removeprefix(drawn_scope + "/") if drawn_scope else node.name


def _group_label(graph: Graph, box: Box, scope_of: dict[str, str]) -> list[str]:
    """``∂ conv2d``, the forward op when the name does not say it, and what the group
    holds: its op when it is one node, else the count."""
    forward = graph.node(box.forward)
    short = _short(forward, scope_of[forward.name])
    lines = [f"∂ {short}"]
    if not is_source(forward.op) and not short.rpartition("/")[2].startswith(forward.op):
        lines.append(forward.op)
    ops = [graph.node(n).op for n in box.nodes]
    lines.append(ops[0] if len(ops) == 1 else f"{len(ops)} ops")
    return lines


def _fit_budget(graph: Graph, sel: Selection, expanded: set[str], budget: int) -> None:
    """Collapse scopes, the deepest first, until the drawing holds at most ``budget``
    units; failing that, draw runs of consecutive units as boxes."""
    before = len(sel.nodes)
    counts = _unit_counts(sel)  # counted for every depth at once, then grouped once
    if expanded and counts[0] <= budget:
        _group(graph, sel, None, set())
        sel.notes.append(
            f"the drawing has {before:,} nodes, more than the budget of {budget:,}: drew "
            f"the gradient "
            f"of each forward op as one box ({len(sel.units()):,} units); expand some "
            f"with expand (--expand NAME)"
        )
        return
    deepest = max(counts)
    for depth in range(deepest, 0, -1):
        if counts[depth] <= budget:
            _group(graph, sel, depth, set())
            if depth > 1 and _edge_count(sel) > EDGES_PER_UNIT * budget:
                continue
            sel.notes.append(
                f"the drawing has {before:,} nodes, more than the budget of {budget:,}: drew "
                f"every scope nested {depth} or more deep as one box ({len(sel.units()):,} "
                f"units); choose with collapse_depth (--collapse-depth), scope (--scope) "
                f"or max_nodes (--max-nodes)"
            )
            return
    _group(graph, sel, 1 if deepest else None, set())
    _chunk(sel, budget)
    why = "even with every top-level scope as one box" if deepest else "and it has no scopes"
    sel.notes.append(
        f"the drawing has {before:,} nodes, more than the budget of {budget:,}, {why}: drew "
        f"runs of consecutive nodes as {len(sel.units()):,} boxes; draw a part with scope "
        f"(--scope), or raise max_nodes (--max-nodes)"
    )


def _edge_count(sel: Selection) -> int:
    """How many distinct unit-to-unit edges the grouped selection draws."""
    pairs: set[tuple[str, str]] = set()
    for node in sel.nodes:
        target = sel.unit[node.name]
        for ref in node.inputs:
            source = parse_ref(ref)[0]
            if source not in sel.unit and source not in sel.context:
                continue  # not drawn (a forward value a gradient rule reads)
            source = sel.unit.get(source, source)
            if source != target:
                pairs.add((source, target))
    return len(pairs)


def _unit_counts(sel: Selection) -> dict[int, int]:
    """How many units :func:`_group` makes with no gradient group expanded, by the
    collapse depth (0: none), for every depth up to the deepest scope, in one pass:
    at depth d a node in a scope nested d or more deep is in the box of its scope
    at depth d, any other node is itself or in its gradient group's box."""
    boxes: dict[int, set[tuple[bool, str]]] = {}
    own: dict[int, set[str]] = {}  # units of nodes whose scope is nested k deep
    for node in sel.nodes:
        scope = sel.scope_of[node.name]
        parts = scope.split("/") if scope else []
        is_grad = node.name in sel.gradient
        prefix = ""
        for d, part in enumerate(parts, start=1):
            prefix = f"{prefix}/{part}" if prefix else part
            boxes.setdefault(d, set()).add((is_grad, prefix))
        forward = sel.groups.get(node.name)
        own.setdefault(len(parts), set()).add(node.name if forward is None else "#" + forward)
    deepest = max(boxes, default=0)
    counts = {0: sum(len(units) for units in own.values())}
    for depth in range(1, deepest + 1):
        shallower = sum(len(units) for k, units in own.items() if k < depth)
        counts[depth] = len(boxes[depth]) + shallower
    return counts


def _chunk(sel: Selection, budget: int) -> None:
    """Replace the units by boxes of consecutive units in graph order, at most half
    the budget of them (so edges between them stay few as well)."""
    units = sel.units()
    size = math.ceil(len(units) / max(1, budget // 2))
    members: dict[str, list[str]] = {}
    for node in sel.nodes:
        members.setdefault(sel.unit[node.name], []).append(node.name)
    chunk_of: dict[str, str] = {}
    boxes: dict[str, Box] = {}
    for start in range(0, len(units), size):
        run = units[start : start + size]
        box_id = f"#nodes {start + 1}-{start + len(run)}"
        names = [n for u in run for n in members[u]]
        boxes[box_id] = Box(
            box_id,
            "chunk",
            [f"{len(names):,} nodes", f"from {names[0]}", f"to {names[-1]}"],
            box_id[1:],
            names,
        )
        for u in run:
            chunk_of[u] = box_id
    sel.unit = {name: chunk_of[unit] for name, unit in sel.unit.items()}
    sel.boxes = boxes
    sel.clusters = {}
    sel.cluster_of = {box_id: "" for box_id in boxes}


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
