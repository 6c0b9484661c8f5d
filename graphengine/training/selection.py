"""Choosing parameters by name, scope or glob, and finding state parameters.

A pattern selects a parameter when it is the parameter's name, a scope above
it (``dense2`` selects ``dense2/w`` and, for names imported from PyTorch,
``dense2.weight``), or a shell glob matching the name (``dense2/*``, ``*/bias``,
``*.running_*``; ``*`` also matches ``/``), as Keras users pick layers by name
and PyTorch users by ``named_parameters()`` prefix.  The dots of a PyTorch
name separate scopes too, as ``g.summary()`` shows them: ``'enc/*'`` selects
``enc.0.weight`` and ``'*/bias'`` selects ``head.bias``.

>>> import numpy as np, graphengine as ge
>>> g = ge.Graph()
>>> with g.name_scope("dense1"):
...     w1, b1 = g.parameter("w", shape=(2, 2)), g.parameter("b", shape=(2,))
>>> with g.name_scope("dense2"):
...     w2, b2 = g.parameter("w", shape=(2, 2)), g.parameter("b", shape=(2,))
>>> select_parameters(g, ["dense2"])
['dense2/w', 'dense2/b']
>>> select_parameters(g, ["*/b"])
['dense1/b', 'dense2/b']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from ..errors import GraphError
from ..graph import Graph, Node, parse_ref

_GLOB = set("*?[")


def matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` (a name, a scope or a glob) selects parameter ``name``."""
    if name == pattern:
        return True
    # PyTorch's dotted names (enc.0.weight) read with "/" between scopes as well.
    forms = (name, name.replace(".", "/")) if "." in name else (name,)
    if not _GLOB & set(pattern):
        stem = pattern.rstrip("/.")
        return any(f.startswith(stem + "/") for f in forms) or name.startswith(stem + ".")
    return any(fnmatch.fnmatchcase(f, pattern) for f in forms)


def select_parameters(
    graph: Graph,
    patterns: Iterable[str],
    what: str = "trainable",
    among: Sequence[str] | None = None,
) -> list[str]:
    """The parameters of ``graph`` (or of ``among``) that ``patterns`` select, in
    graph order.  Raises GraphError for a pattern that selects nothing, listing
    the parameters and scopes it could have named."""
    names = list(among) if among is not None else [n.name for n in graph.parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if matches(n, pattern)}
        if not hits:
            raise GraphError(
                f"training spec: {what} pattern {pattern!r} matches no parameter "
                f"of graph '{graph.name}'; {describe_names(names)}"
            )
        chosen |= hits
    return [n for n in names if n in chosen]


def describe_names(names: Sequence[str], limit: int = 30) -> str:
    """ "the parameters are ...; the scopes are ..." for an error message."""
    if not names:
        return "it has no parameters"
    scopes: list[str] = []
    for name in names:
        for i, char in enumerate(name):
            if char in "/." and name[:i] not in scopes:
                scopes.append(name[:i])
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    text = f"the parameters are {shown}{more}"
    if scopes:
        text += f"; scopes: {', '.join(repr(s) for s in scopes[:limit])}"
    return text + " (globs such as 'dense2/*' or '*/bias' work too)"


def state_parameters(graph: Graph) -> list[str]:
    """Float parameters written only by an update, never learned: every reader
    takes them at an input that its op declares as updated state (batch-norm
    running statistics) or as not differentiable.  A parameter read through a
    ``cast`` or ``identity`` counts by what reads that."""
    readers: dict[str, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        for i, ref in enumerate(node.inputs):
            readers.setdefault(parse_ref(ref)[0], []).append((node, i))

    def only_state(name: str, depth: int = 0) -> bool:
        uses = readers.get(name, [])
        if not uses or depth > 4:
            return False
        for node, i in uses:
            if node.op in ("cast", "identity"):
                if not only_state(node.name, depth + 1):
                    return False
            elif i not in node.opdef.state_inputs() and node.opdef.input_spec(i).differentiable:
                return False
        return True

    return [
        n.name for n in graph.parameters() if n.types[0].dtype.kind == "f" and only_state(n.name)
    ]
