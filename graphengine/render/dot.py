"""Writing a selection as DOT text: clusters for scopes, styled nodes, labelled edges.

The text depends only on the graph: nodes come in graph order, clusters and
edges in the order they are first met, and nothing is keyed by object ids, so
one file always gives the same bytes.

Forward edges point from producer to consumer.  An edge between gradient units
is written from consumer to producer with ``dir=back``: the arrow still shows
the data flow, but ``dot`` ranks the gradient of each op in the forward order,
so the backward pass runs beside the forward pass, against it.

Graphviz 2.43 (Debian 12's) fails with "trouble in init_rank" on nested
clusters when an edge has ``constraint=false`` or ``weight=0`` (an RNN's
``rnn/step0`` ... inside ``rnn`` is enough), or when labelled edges cross
between clusters (dot ranks an edge label as a node of its own, and 2.43
cannot place it between clusters); no edge here has the first two, and an
edge between two clusters carries its label as an ``xlabel``, placed after the
layout.  Helper
lines (values read by gradient rules, links to the gradient of a forward op)
are ordinary edges, which rank consistently because they always point from a
forward unit to a gradient unit, and gradient units rank in forward order.
"""

from __future__ import annotations

from ..graph import Graph, Node, make_ref, parse_ref
from ..shapes import TensorType, format_shape
from . import style
from .layout import DIRECTIONS, choose_layout, wrap_edges
from .selection import Selection, node_kind
from .values import FULL_SIZE, Annotations, format_value

__all__ = ["DIRECTIONS", "quote", "write_dot"]


def write_dot(
    graph: Graph,
    sel: Selection,
    *,
    view: str,
    loss: str | None,
    notes: Annotations,
    legend: bool,
    derived: bool = True,
    reads: bool = False,
    direction: str = "auto",
    clusters: bool = True,
) -> str:
    """The DOT text of ``sel``, a selection of ``graph``.

    ``derived`` draws a dashed link from each forward op to the box of its gradient;
    ``reads`` the forward values gradient rules read; ``clusters=False`` leaves
    scope clusters out (the simpler layout tried when ``dot`` fails).
    """
    statements, node_kinds = _node_statements(graph, sel, loss, notes)
    edges, edge_kinds = _edges(graph, sel, reads)
    if derived:
        links = _derived_edges(sel)
        edges += links
        edge_kinds |= {"derived"} if links else set()
    if clusters:
        edges = [_cross_cluster_label(sel, edge) for edge in edges]
    layout = choose_layout(sel, edges, statements, direction)
    edges, anchor = wrap_edges(layout, edges)
    lines = [f"digraph {quote(graph.name)} {{", *_defaults(layout.rankdir)]
    lines += _cluster_lines(sel, statements, clusters)
    lines += anchor
    lines += [f"  {quote(a)} -> {quote(b)} {_attrs(attrs)};" for a, b, attrs in edges]
    if legend:
        lines += _legend_lines(node_kinds, edge_kinds, loss)
    title = graph.name if view == "forward" else f"{graph.name}: {view} view"
    if view != "forward" and loss:
        title += f", L = {loss}"
    # Set last: clusters would otherwise inherit the title as their label.
    lines += [f"  label={quote(title)};", '  labelloc="t";', "}"]
    return "\n".join(lines) + "\n"


def quote(text: str) -> str:
    """A DOT string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    return '"' + "\\n".join(quote(line)[1:-1] for line in lines) + '"'


def _attrs(attrs: dict[str, str]) -> str:
    """An attribute list; ``label`` comes already quoted (it holds ``\\n`` escapes)."""
    items = ", ".join(
        f"{k}={v if k in ('label', 'xlabel') else quote(v)}" for k, v in attrs.items()
    )
    return f"[{items}]"


def _defaults(rankdir: str) -> list[str]:
    font = quote(style.FONT)
    return [
        (
            f'  graph [rankdir="{rankdir}", fontname={font}, fontsize="12", nodesep="0.25", '
            'ranksep="0.35", style="rounded", color="#ced4da", fontcolor="#495057", '
            'labeljust="l"];'
        ),
        f'  node [fontname={font}, fontsize="10", penwidth="1.2"];',
        f'  edge [fontname={font}, fontsize="8", arrowsize="0.7", color="#343a40"];',
    ]


# -- nodes -------------------------------------------------------------------------


def _node_statements(
    graph: Graph, sel: Selection, loss: str | None, notes: Annotations
) -> tuple[dict[str, tuple[dict[str, str], list[str]]], set[str]]:
    """The attributes and label lines of each unit, by unit id, in drawing order, and
    the node kinds drawn."""
    outputs = set(graph.outputs)
    statements = {}
    kinds = set()
    for node in sel.nodes:
        unit = sel.unit[node.name]
        if unit in statements:
            continue
        box = sel.boxes.get(unit)
        if box is not None:
            attrs = style.node_attrs(box.kind)
            attrs["tooltip"] = box.tooltip
            statements[unit] = (attrs, box.label)
            kinds.add(box.kind)
            continue
        kind = node_kind(node, node.name in sel.gradient, outputs, loss)
        if kind == "gradient" and node.name not in sel.flow:
            kind = "gradient helper"
        kinds.add(kind)
        attrs = style.node_attrs(kind, context=node.name in sel.context)
        attrs["tooltip"] = node.name
        if node.name in sel.outputs:
            lines = _gradient_output_label(sel.outputs[node.name])
        else:
            # Nodes from outside the scope drawn: their full name says where they are.
            name = node.name if node.name in sel.outside else _short_name(node, sel.scope_of)
            lines = _node_label(node, name, node.op, node.name in notes.values)
        statements[unit] = (attrs, lines + _value_lines(node, notes))
    return statements, kinds


def _gradient_output_label(wrt: str) -> list[str]:
    """``∂L/∂w`` over the full name of w: a fraction, not a path to divide."""
    name, index = parse_ref(wrt)
    short = name.rpartition("/")[2] + (f":{index}" if index else "")
    return [f"∂L/∂{short}", make_ref(name, index)]


def _short_name(node: Node, scope_of: dict[str, str]) -> str:
    """The name inside the node's scope and inside the scope it is drawn in."""
    short = node.name.removeprefix(node.scope + "/") if node.scope else node.name
    drawn = scope_of[node.name]
    return short.removeprefix(drawn + "/") if drawn else short


def _node_label(node: Node, short: str, what: str, has_value: bool) -> list[str]:
    """The name, then ``what`` (the op) unless the name says it; a small constant's
    value unless a value annotation shows it."""
    lines = [short]
    if node.op == "constant":
        value = node.attrs["value"]
        if value.size <= FULL_SIZE and not has_value:
            lines += format_value(value)
    elif node.op not in ("placeholder", "parameter") and not short.rpartition("/")[2].startswith(
        what
    ):
        lines.append(what)
    return lines


def _value_lines(node: Node, notes: Annotations) -> list[str]:
    lines = []
    refs = node.output_refs()
    for i, ref in enumerate(refs):
        output = "" if len(refs) == 1 else f"{node.opdef.output_name(i)} "
        for tag, table in (("value", notes.values), ("grad", notes.grads)):
            if ref in table:
                text = format_value(table[ref])
                lines += [f"{output}{tag} {text[0]}", *text[1:]]
    return lines


# -- clusters ------------------------------------------------------------------------


def _cluster_lines(
    sel: Selection, statements: dict[str, tuple[dict[str, str], list[str]]], clusters: bool
) -> list[str]:
    """Node statements nested in their clusters (all at the top without ``clusters``)."""
    members: dict[str, list[str]] = {}
    for unit, (attrs, lines) in statements.items():
        cid = sel.cluster_of.get(unit, "") if clusters else ""
        attrs = {**attrs, "label": _label(lines)}
        members.setdefault(cid, []).append(f"{quote(unit)} {_attrs(attrs)}")
    children: dict[str, list[str]] = {}
    if clusters:
        used = set(members)
        for cid, cluster in reversed(list(sel.clusters.items())):
            if cid in used:
                used.add(cluster.parent)
        for cid, cluster in sel.clusters.items():
            if cid in used:
                children.setdefault(cluster.parent, []).append(cid)
    return _cluster(sel, members, children, "", 1)


def _cluster(
    sel: Selection,
    members: dict[str, list[str]],
    children: dict[str, list[str]],
    cid: str,
    depth: int,
) -> list[str]:
    pad = "  " * depth
    lines = [pad + s + ";" for s in members.get(cid, [])]
    for child in children.get(cid, []):
        cluster = sel.clusters[child]
        lines.append(f"{pad}subgraph {quote(child)} {{")
        lines.append(f"{pad}  label={quote(cluster.label)}; tooltip={quote(cluster.tooltip)};")
        if child.startswith("cluster_#"):  # an expanded gradient group
            lines.append(
                f'{pad}  color="{style.GRADIENT_COLOR}"; style="rounded,dashed"; '
                f'fontcolor="{style.GRADIENT_COLOR}";'
            )
        lines += _cluster(sel, members, children, child, depth + 1)
        lines.append(pad + "}")
    return lines


# -- edges ---------------------------------------------------------------------------

Edge = tuple[str, str, dict[str, str]]


def _edges(graph: Graph, sel: Selection, reads: bool) -> tuple[list[Edge], set[str]]:
    """One edge per (producer unit, consumer unit, kind), labelled with the types of
    the tensors it carries (several where a node has several outputs, or a box
    gathers several edges); and the edge kinds drawn."""
    groups: dict[tuple[str, str, str], dict[str, None]] = {}
    for node in sel.nodes:
        dst = sel.unit[node.name]
        for ref in node.inputs:
            name, index = parse_ref(ref)
            src = sel.unit.get(name)
            if src is None or src == dst:
                continue
            if node.name in sel.context:
                kind = "context"
            else:
                kind = _edge_kind(name in sel.gradient, name in sel.flow, node.name in sel.gradient)
            if kind == "reads" and not reads:
                continue
            if kind == "helper" and (src in sel.boxes or dst in sel.boxes):
                continue  # a constant or a transposed weight shared by gradient rules
            groups.setdefault((src, dst, kind), {})[make_ref(name, index)] = None
    edges = []
    for (src, dst, kind), refs in groups.items():
        attrs = dict(style.EDGE_STYLES[kind])
        if kind not in ("reads", "helper"):
            # a forward value's type is on its forward edge; a constant shows its value
            attrs["label"] = quote(_types_label([graph.tensor(r).type for r in refs]))
        if kind in ("gradient", "helper"):
            src, dst = dst, src
            attrs["dir"] = "back"
        edges.append((src, dst, attrs))
    return edges, {kind for _, _, kind in groups}


def _cross_cluster_label(sel: Selection, edge: Edge) -> Edge:
    """An edge between units of different clusters with its label as an xlabel."""
    src, dst, attrs = edge
    if "label" in attrs and sel.cluster_of.get(src, "") != sel.cluster_of.get(dst, ""):
        attrs = {("xlabel" if k == "label" else k): v for k, v in attrs.items()}
    return src, dst, attrs


def _edge_kind(from_gradient: bool, from_flow: bool, to_gradient: bool) -> str:
    """``gradient`` for a gradient flowing between gradient nodes; ``reads`` for a
    forward value a gradient rule takes; ``helper`` for a gradient node's value
    that holds no gradient (a constant, a transposed weight), which the pass
    shares between rules: drawn red, it would look like a gradient flowing
    from one op to another."""
    if not to_gradient:
        return "forward"
    if not from_gradient:
        return "reads"
    return "gradient" if from_flow else "helper"


def _types_label(types: list[TensorType]) -> str:
    """``(N, 3) float32``; ``2 × (N, 3) float32`` for several of one type."""
    first = f"{format_shape(types[0].shape)} {types[0].dtype.name}"
    if len(types) == 1:
        return first
    if all(t == types[0] for t in types):
        return f"{len(types)} × {first}"
    return f"{len(types)} tensors"


def _derived_edges(sel: Selection) -> list[Edge]:
    """A dashed link from each drawn forward unit to the unit holding its gradient
    (a gradient group's box, a gradient output); none into an expanded group,
    whose cluster says what it differentiates."""
    links: dict[tuple[str, str], None] = {}
    forward_units = {sel.unit[n.name] for n in sel.nodes if n.name not in sel.gradient}
    for node in sel.nodes:
        if node.name not in sel.gradient or node.name in sel.context:
            continue
        unit = sel.unit[node.name]
        source = node.derived_from
        if unit == node.name and node.name not in sel.outputs and source in sel.groups.values():
            continue  # a member of an expanded group
        forward = sel.unit.get(source)
        if forward is not None and forward in forward_units and forward != unit:
            links[(forward, unit)] = None
    attrs = style.EDGE_STYLES["derived"]
    return [(a, b, dict(attrs)) for a, b in links]


# -- legend --------------------------------------------------------------------------


def _legend_lines(node_kinds: set[str], edge_kinds: set[str], loss: str | None) -> list[str]:
    """One node whose HTML table holds a swatch per node kind and a line per edge
    kind the drawing holds: one node, so it adds nothing to the layout."""
    node_order, edge_order = style.legend_kinds()
    rows = ['<TR><TD COLSPAN="2" BORDER="0"><B>legend</B></TD></TR>']
    for kind in (k for k in node_order if k in node_kinds):
        attrs = style.node_attrs(kind)
        text = style.LEGEND_TEXT[kind]
        if kind == "gradient output" and loss:
            text = f"∂L/∂w: gradient of L = {loss} for w"
        rows.append(
            f'<TR><TD BGCOLOR="{attrs["fillcolor"]}" COLOR="{attrs["color"]}" '
            f'WIDTH="30"> </TD><TD BORDER="0" ALIGN="LEFT">{_html(text)}</TD></TR>'
        )
    for kind in (k for k in edge_order if k in edge_kinds):
        attrs = style.EDGE_STYLES[kind]
        stroke = {"dotted": "┈┈┈", "dashed": "╌╌╌"}.get(attrs.get("style", ""), "───")
        rows.append(
            f'<TR><TD BORDER="0"><FONT COLOR="{attrs["color"]}">{stroke}▶</FONT></TD>'
            f'<TD BORDER="0" ALIGN="LEFT">{_html(style.EDGE_LEGEND_TEXT[kind])}</TD>'
            "</TR>"
        )
    table = (
        '<<TABLE BORDER="1" COLOR="#adb5bd" CELLBORDER="1" CELLSPACING="2" '
        f'CELLPADDING="2">{"".join(rows)}</TABLE>>'
    )
    return [f'  "#legend" [shape="plaintext", fontsize="9", label={table}];']


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
