"""How each kind of node and edge looks, in one table, and the legend drawn from it.

Every drawing takes its colours and shapes from here, so a placeholder looks the
same in every view.  Forward values flow in dark grey, gradients in red: a
reader can follow one colour one way and the other colour back.
"""

from __future__ import annotations

FONT = "Helvetica"
GRADIENT_COLOR = "#c92a2a"

#: Node attributes by kind.  A node's kind comes from its op and its role
#: (see :func:`graphengine.render.selection.node_kind`).
NODE_STYLES: dict[str, dict[str, str]] = {
    "placeholder": {"shape": "ellipse", "fillcolor": "#d0ebff", "color": "#1c7ed6"},
    "parameter": {"shape": "box", "fillcolor": "#d3f9d8", "color": "#2f9e44"},
    "frozen parameter": {
        "shape": "box",
        "style": "filled,dashed",
        "fillcolor": "#ebfbee",
        "color": "#2f9e44",
    },
    "constant": {"shape": "note", "fillcolor": "#f1f3f5", "color": "#868e96", "fontsize": "9"},
    "operation": {
        "shape": "box",
        "style": "filled,rounded",
        "fillcolor": "#ffffff",
        "color": "#495057",
    },
    "output": {
        "shape": "box",
        "style": "filled,rounded,bold",
        "fillcolor": "#fff3bf",
        "color": "#e67700",
        "peripheries": "2",
    },
    "loss": {
        "shape": "doubleoctagon",
        "style": "filled,bold",
        "fillcolor": "#ffd8a8",
        "color": "#d9480f",
    },
    "gradient": {
        "shape": "box",
        "style": "filled,rounded",
        "fillcolor": "#ffe3e3",
        "color": GRADIENT_COLOR,
        "fontcolor": "#862e2e",
    },
    "gradient output": {
        "shape": "box",
        "style": "filled,rounded,bold",
        "fillcolor": "#ffa8a8",
        "color": GRADIENT_COLOR,
        "peripheries": "2",
    },
    # a gradient node that holds no gradient: computed from forward values alone
    "gradient helper": {
        "shape": "box",
        "style": "filled,rounded",
        "fillcolor": "#fff5f5",
        "color": "#eebcbc",
        "fontcolor": "#868e96",
    },
    "gradient group": {
        "shape": "box",
        "style": "filled,rounded",
        "fillcolor": "#ffc9c9",
        "color": GRADIENT_COLOR,
        "fontcolor": "#862e2e",
        "penwidth": "1.6",
    },
    "scope box": {"shape": "box3d", "fillcolor": "#e7f5ff", "color": "#1864ab"},
    "gradient scope box": {"shape": "box3d", "fillcolor": "#fff5f5", "color": GRADIENT_COLOR},
    "chunk": {"shape": "box3d", "fillcolor": "#f1f3f5", "color": "#495057"},
}

#: Forward nodes drawn only because the selection reads them are faded.
CONTEXT_STYLE = {"fillcolor": "#f8f9fa", "color": "#adb5bd", "fontcolor": "#868e96"}

#: Edge attributes by kind.
EDGE_STYLES: dict[str, dict[str, str]] = {
    # a forward tensor: producer -> consumer
    "forward": {"color": "#343a40"},
    # a gradient tensor; drawn against the forward flow (see dot.py)
    "gradient": {"color": GRADIENT_COLOR, "fontcolor": GRADIENT_COLOR, "penwidth": "1.4"},
    # a forward value that a gradient rule reads (tanh' uses tanh's output).  No helper
    # line has constraint=false or weight=0: Graphviz 2.43 fails on either inside
    # nested clusters ("trouble in init_rank"); see dot.py.
    "reads": {"color": "#adb5bd", "fontcolor": "#868e96", "style": "dotted"},
    # a value a gradient rule reads from a gradient node that holds no gradient (a
    # constant, a transposed weight): drawn like "reads", not as a gradient
    "helper": {"color": "#adb5bd", "style": "dotted"},
    # between two context nodes (see CONTEXT_STYLE)
    "context": {"color": "#ced4da", "fontcolor": "#adb5bd"},
    # a gradient node -> the forward node it derives from
    "derived": {"color": "#f08c00", "style": "dashed", "arrowhead": "none"},
}

LEGEND_TEXT = {
    "placeholder": "placeholder\n(fed)",
    "parameter": "parameter\n(trained)",
    "frozen parameter": "parameter\n(not trained)",
    "constant": "constant",
    "operation": "operation",
    "output": "output",
    "loss": "loss",
    "gradient": "gradient op",
    "gradient helper": "op of a gradient rule\nthat holds no gradient",
    "gradient group": "∂ op: the gradient nodes\nof one forward op",
    "gradient output": "∂L/∂w: gradient of the loss L for w",
    "scope box": "collapsed scope",
    "gradient scope box": "collapsed\ngradient scope",
    "chunk": "consecutive nodes",
}

EDGE_LEGEND_TEXT = {
    "forward": "forward value",
    "gradient": "gradient",
    "reads": "value read by a gradient rule",
    "helper": "value (no gradient) shared by rules",
    "context": "between nodes outside the selection",
    "derived": "∂ box of the forward op",
}


def node_attrs(kind: str, context: bool = False) -> dict[str, str]:
    """The attributes of a node of ``kind``; ``context`` fades it."""
    attrs = {"style": "filled", **NODE_STYLES[kind]}
    if context:
        attrs.update(CONTEXT_STYLE)
    return attrs


def legend_kinds() -> tuple[list[str], list[str]]:
    """Node and edge kinds in the order the legend lists them (those drawn)."""
    return list(LEGEND_TEXT), list(EDGE_LEGEND_TEXT)
