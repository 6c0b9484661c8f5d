"""Writing a selection as DOT text: clusters for scopes, styled nodes, labelled edges.

The text depends only on the graph: nodes come in graph order, clusters and
edges in the order they are first met, and nothing is keyed by object ids, so
one file always gives the same bytes.

Forward edges point from producer to consumer.  An edge between gradient nodes
is written from consumer to producer with ``dir=back``: the arrow still shows
the data flow, but ``dot`` ranks the gradient of the loss after the gradients
of the parameters, so the backward pass runs right to left, against the
forward pass.
"""

from __future__ import annotations

from ..graph import Graph, Node, make_ref, parse_ref
from ..shapes import TensorType, format_shape
from . import style
from .selection import Box, Selection, node_kind
from .values import FULL_SIZE, Annotations, format_value


def write_dot(graph: Graph, sel: Selection, *, view: str, loss: str | None,
              notes: Annotations, legend: bool) -> str:
    """The DOT text of ``sel``, a selection of ``graph``."""
    statements = _node_statements(graph, sel, loss, notes)
    lines = [f"digraph {quote(graph.name)} {{", *_defaults()]
    lines += _cluster_lines(sel, statements)
    lines += _edge_lines(graph, sel)
    lines += _derived_lines(graph, sel)
    if legend:
        lines += _legend_lines(view != "forward", bool(sel.boxes))
    title = graph.name if view == "forward" else f"{graph.name}: {view} view"
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
    items = ", ".join(f"{k}={v if k == 'label' else quote(v)}" for k, v in attrs.items())
    return f"[{items}]"


def _defaults() -> list[str]:
    font = quote(style.FONT)
    return [
        (f'  graph [rankdir="LR", fontname={font}, fontsize="12", nodesep="0.25", '
         'ranksep="0.4", style="rounded", color="#ced4da", fontcolor="#495057", '
         'labeljust="l"];'),
        f'  node [fontname={font}, fontsize="10", penwidth="1.2"];',
        f'  edge [fontname={font}, fontsize="8", arrowsize="0.7", color="#343a40"];',
    ]


# -- nodes -------------------------------------------------------------------------

def _node_statements(graph: Graph, sel: Selection, loss: str | None,
                     notes: Annotations) -> dict[str, str]:
    """One statement per drawn unit (node or box), by unit id, in graph order."""
    outputs = set(graph.outputs)
    info = graph.gradient
    wrt_of = {g: w for w, g in info.grads.items()} if info else {}
    statements = {}
    for node in sel.nodes:
        unit = sel.unit[node.name]
        if unit != node.name:
            continue
        is_grad = node.name in sel.gradient
        kind = node_kind(node, is_grad, outputs, loss)
        attrs = style.node_attrs(kind, context=node.name in sel.context)
        # A gradient output says what it holds instead of its op (identity).
        what = f"∂{info.loss}/∂{wrt_of[node.name]}" if node.name in wrt_of else node.op
        # Nodes from outside the scope drawn: their full name says where they are.
        name = node.name if node.name in sel.outside else _short_name(node, sel.scope_of)
        attrs["label"] = _label(_node_label(node, name, what, notes))
        attrs["tooltip"] = node.name
        statements[unit] = f"{quote(unit)} {_attrs(attrs)}"
    for box in sel.boxes.values():
        statements[box.id] = f"{quote(box.id)} {_attrs(_box_attrs(box))}"
    return statements


def _short_name(node: Node, scope_of: dict[str, str]) -> str:
    """The name inside the node's scope and inside the scope it is drawn in (a
    gradient output ``gradients/layer1/w``, in scope ``gradients``, is drawn in
    ``layer1`` as ``w``)."""
    short = node.name.removeprefix(node.scope + "/") if node.scope else node.name
    drawn = scope_of[node.name]
    return short.removeprefix(drawn + "/") if drawn else short


def _node_label(node: Node, short: str, what: str, notes: Annotations) -> list[str]:
    """The name, then ``what`` (the op) unless the name says it, then values."""
    lines = [short]
    if node.op == "constant":
        value = node.attrs["value"]
        if value.size <= FULL_SIZE and node.name not in notes.values:
            lines += format_value(value)
    elif node.op not in ("placeholder", "parameter") and \
            not short.rpartition("/")[2].startswith(what):
        lines.append(what)
    refs = node.output_refs()
    for i, ref in enumerate(refs):
        output = "" if len(refs) == 1 else f"{node.opdef.output_name(i)} "
        for tag, table in (("value", notes.values), ("grad", notes.grads)):
            if ref in table:
                text = format_value(table[ref])
                lines += [f"{output}{tag} {text[0]}", *text[1:]]
    return lines


def _box_attrs(box: Box) -> dict[str, str]:
    kind = "gradient scope box" if box.gradient else "scope box"
    count = len(box.nodes)
    what = f"{count} {'gradient ' if box.gradient else ''}node{'s' if count > 1 else ''}"
    title = f"∂ {box.scope}" if box.gradient else box.scope
    attrs = style.node_attrs(kind)
    attrs["label"] = _label([title, what])
    attrs["tooltip"] = box.scope
    return attrs


# -- clusters ------------------------------------------------------------------------

def _cluster_lines(sel: Selection, statements: dict[str, str]) -> list[str]:
    """Node statements nested in one cluster per scope."""
    members: dict[str, list[str]] = {}
    children: dict[str, dict[str, None]] = {"": {}}
    for unit, statement in statements.items():
        box = sel.boxes.get(unit)
        scope = box.scope.rpartition("/")[0] if box else sel.scope_of[unit]
        members.setdefault(scope, []).append(statement)
        while scope:
            parent = scope.rpartition("/")[0]
            known = scope in children.setdefault(parent, {})
            children[parent][scope] = None
            if known:
                break
            scope = parent
    return _cluster(members, children, "", 1)


def _cluster(members: dict[str, list[str]], children: dict[str, dict[str, None]],
             scope: str, depth: int) -> list[str]:
    pad = "  " * depth
    lines = [pad + s + ";" for s in members.get(scope, [])]
    for child in children.get(scope, {}):
        lines.append(f"{pad}subgraph {quote('cluster_' + child)} {{")
        lines.append(f"{pad}  label={quote(child.rpartition('/')[2])}; tooltip={quote(child)};")
        lines += _cluster(members, children, child, depth + 1)
        lines.append(pad + "}")
    return lines


# -- edges ---------------------------------------------------------------------------

def _edge_lines(graph: Graph, sel: Selection) -> list[str]:
    """One edge per (producer unit, consumer unit, kind), labelled with the types of
    the tensors it carries (several where a node has several outputs, or a
    collapsed box gathers several edges)."""
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
                kind = _edge_kind(graph.node(name), name in sel.gradient,
                                  node.name in sel.gradient)
            groups.setdefault((src, dst, kind), {})[make_ref(name, index)] = None
    lines = []
    for (src, dst, kind), refs in groups.items():
        attrs = dict(style.EDGE_STYLES[kind])
        if kind in ("reads", "constant"):
            pass  # a forward value's type is on its forward edge; a constant shows its value
        else:
            attrs["label"] = quote(_types_label([graph.tensor(r).type for r in refs]))
        if kind in ("gradient", "constant"):
            src, dst = dst, src
            attrs["dir"] = "back"
        lines.append(f"  {quote(src)} -> {quote(dst)} {_attrs(attrs)};")
    return lines


def _edge_kind(producer: Node, from_gradient: bool, to_gradient: bool) -> str:
    """``gradient`` for a gradient flowing between gradient nodes; ``reads`` for a
    forward value a gradient rule takes; ``constant`` for a constant it takes
    (which the pass shares between scopes: drawn red, it would look like a
    gradient flowing from one scope to another)."""
    if not to_gradient:
        return "forward"
    if not from_gradient:
        return "reads"
    return "constant" if producer.op == "constant" else "gradient"


def _types_label(types: list[TensorType]) -> str:
    """``(N, 3) float32``; ``2 × (N, 3) float32`` for several of one type."""
    first = f"{format_shape(types[0].shape)} {types[0].dtype.name}"
    if len(types) == 1:
        return first
    if all(t == types[0] for t in types):
        return f"{len(types)} × {first}"
    return f"{len(types)} tensors"


def _derived_lines(graph: Graph, sel: Selection) -> list[str]:
    """Dashed links from each forward node to the gradient nodes derived from it."""
    links: dict[tuple[str, str], None] = {}
    for node in sel.nodes:
        if node.name in sel.gradient and node.name not in sel.context:
            forward = sel.unit.get(node.derived_from)
            if forward is not None and forward != sel.unit[node.name]:
                links[(forward, sel.unit[node.name])] = None
    attrs = _attrs(style.EDGE_STYLES["derived"])
    return [f"  {quote(a)} -> {quote(b)} {attrs};" for a, b in links]


# -- legend --------------------------------------------------------------------------

def _legend_lines(gradients: bool, collapsed: bool) -> list[str]:
    """A cluster with one sample per node and edge kind; invisible edges chain the
    samples into two rows (node kinds, edge kinds)."""
    node_kinds, edge_kinds = style.legend_kinds(gradients, collapsed)
    lines = ['  subgraph "cluster_legend" {', '    label="legend"; color="#adb5bd";']
    row = []
    for kind in node_kinds:
        attrs = style.node_attrs(kind)
        attrs["label"] = _label(style.LEGEND_TEXT[kind].split("\n"))
        row.append(quote(f"#legend {kind}"))
        lines.append(f"    {row[-1]} {_attrs(attrs)};")
    lines.append(f"    {' -> '.join(row)} [style=\"invis\"];")
    row = []
    for kind in edge_kinds:
        start, end = quote(f"#legend {kind} edge"), quote(f"#legend {kind} edge text")
        edge = {k: v for k, v in style.EDGE_STYLES[kind].items() if k != "constraint"}
        lines.append(f'    {start} [shape="point", width="0.05"];')
        lines.append(f'    {end} [shape="plaintext", '
                     f'label={quote(style.EDGE_LEGEND_TEXT[kind])}];')
        lines.append(f"    {start} -> {end} {_attrs(edge)};")
        row += [start, end]
    for end, start in zip(row[1::2], row[2::2]):
        lines.append(f'    {end} -> {start} [style="invis"];')
    lines.append("  }")
    return lines
