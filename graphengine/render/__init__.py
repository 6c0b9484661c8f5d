"""Graphviz drawings of the forward graph, the gradient graph, or both.

:func:`to_dot` writes DOT text (deterministic: one graph gives one text);
:func:`render` writes it to a file, running Graphviz's ``dot`` for images;
:func:`render_svg` is what a notebook shows for a graph.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import GradientError, RenderError
from ..graph import Graph, Tensor
from .dot import write_dot
from .selection import VIEWS, gradient_nodes, select
from .values import annotate

#: Output formats by file suffix; all but ``dot`` (and its alias ``gv``) need Graphviz.
FORMATS = ("svg", "png", "pdf", "dot", "gv")

#: A notebook draws bigger graphs with every top-level scope collapsed.
NOTEBOOK_COLLAPSE_ABOVE = 300

_INSTALL_HINT = ("install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), "
                 "`brew install graphviz` (macOS) or `conda install -c conda-forge graphviz`; "
                 "or write a .dot file, which needs no Graphviz")


def to_dot(graph: Graph, *, view: str = "forward", loss: str | Tensor | None = None,
           feeds: Mapping[str | Tensor, Any] | None = None,
           values: Mapping[str | Tensor, Any] | None = None, grad: bool = False,
           legend: bool = False, collapse_depth: int | None = None,
           scope: str | None = None) -> str:
    """The DOT text of a drawing of ``graph``.

    Args:
        graph: a forward graph, or a gradient graph made by :func:`graphengine.gradients`.
        view: ``"forward"``, ``"gradient"`` (the gradient nodes and the forward
            nodes they read) or ``"both"``.  For a graph without gradient nodes,
            the gradient views differentiate ``loss`` first.
        loss: the loss tensor; default the gradient graph's loss, or the loss of
            the graph's training spec.
        feeds: placeholder values; the graph is run and each node shows its value.
        values: tensor values already computed (from :func:`graphengine.run`).
        grad: also show d loss / d tensor beside each forward tensor (needs
            ``feeds``, or ``values`` holding the gradient tensors of a gradient graph).
        legend: add a legend of node and edge styles.
        collapse_depth: draw every scope deeper than this as one box (0: each
            top-level scope is a box).
        scope: draw only this scope (and the nodes it reads, faded).

    Raises:
        RenderError: an unknown view or scope, or a gradient view without a loss.
        FeedError, ExecutionError: running on ``feeds`` failed.

    >>> import graphengine as ge
    >>> g = ge.Graph("tiny")
    >>> y = ge.exp(g.placeholder("x", (3,)))
    >>> print(ge.to_dot(g).count(" -> "))
    1
    """
    if view not in VIEWS:
        raise RenderError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    loss_ref = _find_loss(graph, loss)
    if view != "forward" and not gradient_nodes(graph):
        graph = _differentiate(graph, loss_ref)
    sel = select(graph, view, scope, collapse_depth)
    forward = [n for n in graph.nodes if n.name not in sel.gradient]
    notes = annotate(graph, forward, feeds, values, grad, loss_ref)
    return write_dot(graph, sel, view=view, loss=loss_ref, notes=notes, legend=legend)


def render(graph: Graph, path: str | Path, *, format: str | None = None,
           **options: Any) -> Path:
    """Draw ``graph`` into ``path`` (``.svg``, ``.png``, ``.pdf`` or ``.dot``).

    ``format`` overrides the file suffix; ``options`` are those of :func:`to_dot`.
    Returns the path written.

    Raises:
        RenderError: an unknown format, Graphviz missing (for images) or failing,
            and everything :func:`to_dot` raises.

    >>> import graphengine as ge, tempfile, os
    >>> g = ge.Graph("tiny")
    >>> y = ge.exp(g.placeholder("x", (3,)))
    >>> path = ge.render(g, os.path.join(tempfile.mkdtemp(), "tiny.dot"))
    >>> path.read_text().startswith('digraph "tiny"')
    True
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise RenderError(f"cannot draw into {str(path)!r}: unknown format {fmt!r}; use a "
                          f"file ending in {', '.join('.' + f for f in FORMATS)}")
    text = to_dot(graph, **options)
    if fmt in ("dot", "gv"):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(run_dot(text, fmt))
    return path


def render_svg(graph: Graph) -> str:
    """SVG text of ``graph``, as a notebook shows it: both views for a gradient
    graph, and top-level scopes collapsed above ``NOTEBOOK_COLLAPSE_ABOVE`` nodes."""
    view = "both" if gradient_nodes(graph) else "forward"
    depth = 0 if len(graph) > NOTEBOOK_COLLAPSE_ABOVE else None
    return run_dot(to_dot(graph, view=view, collapse_depth=depth), "svg").decode("utf-8")


def run_dot(text: str, fmt: str) -> bytes:
    """Lay out DOT ``text`` with Graphviz's ``dot`` and return the ``fmt`` image."""
    binary = shutil.which("dot")
    if binary is None:
        raise RenderError(f"cannot make a .{fmt} image: Graphviz's `dot` program is not on "
                          f"PATH; {_INSTALL_HINT}")
    result = subprocess.run([binary, f"-T{fmt}"], input=text.encode("utf-8"),
                            capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed (exit code {result.returncode}) making a "
                          f".{fmt} image: {' '.join(message[:3]) or 'no message'}; write a "
                          ".dot file to inspect the input")
    return result.stdout


def _find_loss(graph: Graph, loss: str | Tensor | None) -> str | None:
    if loss is not None:
        return graph.tensor(loss).name
    if graph.gradient is not None:
        return graph.gradient.loss
    training_loss = getattr(graph.training, "loss", None)
    return graph.tensor(training_loss).name if training_loss else None


def _differentiate(graph: Graph, loss: str | None) -> Graph:
    """The gradient graph of ``loss`` with respect to the trainable parameters (or,
    in a graph without any, the float placeholders)."""
    from ..dtypes import is_float
    from ..gradients import gradients

    if loss is None:
        raise RenderError(f"graph '{graph.name}' holds no gradient nodes, so the gradient "
                          "view must build them: name the loss with loss=NAME (--loss NAME), "
                          "or save the graph with a training spec")
    wrt = None
    if not graph.parameters(trainable=True):
        wrt = [n.name for n in graph.placeholders() if is_float(n.types[0].dtype)]
        if not wrt:
            raise RenderError(f"graph '{graph.name}' has no trainable parameter and no float "
                              "placeholder: there is nothing to differentiate")
    try:
        return gradients(graph, loss, wrt=wrt)
    except GradientError as exc:
        raise RenderError(f"cannot draw the gradient of '{loss}': {exc}") from exc


__all__ = ["FORMATS", "VIEWS", "RenderError", "render", "render_svg", "run_dot", "to_dot"]
