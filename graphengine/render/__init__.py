"""Graphviz drawings of the forward graph, the gradient graph, or both.

:func:`to_dot` writes DOT text (deterministic: one graph gives one text);
:func:`render` writes it to a file, running Graphviz's ``dot`` for images;
:func:`render_svg` is what a notebook shows for a graph.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..errors import GradientError, RenderError
from ..graph import Graph, Tensor, require_graph
from .dot import DIRECTIONS, write_dot
from .selection import EXPAND_BUDGET, NODE_BUDGET, VIEWS, gradient_nodes, select
from .values import annotate

#: Output formats by file suffix; all but ``dot`` (and its alias ``gv``) need Graphviz.
FORMATS = ("svg", "png", "pdf", "dot", "gv")

#: The environment variable naming the ``dot`` program to run instead of the one on
#: PATH: a path, or a command name looked up on PATH.
DOT_VARIABLE = "GRAPHENGINE_DOT"

#: Seconds ``dot`` may take to lay out one drawing before we stop it.
DOT_TIMEOUT = 60.0

_INSTALL_HINT = (
    "install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), "
    "`brew install graphviz` (macOS) or `conda install -c conda-forge graphviz`; "
    "or write a .dot file, which needs no Graphviz"
)


class RenderWarning(UserWarning):
    """Something a drawing did on its own: collapsed scopes to stay within the node
    budget, or fell back to a simpler layout when ``dot`` failed.  The command
    line prints it as one line."""


class DotFailedError(RenderError):
    """Graphviz's ``dot`` exited with an error (not a timeout, not missing);
    ``reason`` holds the start of what it printed."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def to_dot(
    graph: Graph,
    *,
    view: str = "forward",
    loss: str | Tensor | None = None,
    feeds: Mapping[str | Tensor, Any] | None = None,
    values: Mapping[str | Tensor, Any] | None = None,
    grad: bool = False,
    legend: bool = True,
    collapse_depth: int | None = None,
    scope: str | None = None,
    expand: bool | Collection[str] | None = None,
    derived: bool = True,
    reads: bool = False,
    direction: str = "auto",
    max_nodes: int | None = NODE_BUDGET,
    clusters: bool = True,
) -> str:
    """The DOT text of a drawing of ``graph``.

    Args:
        graph: a forward graph, or a gradient graph made by :func:`graphengine.gradients`.
        view: ``"forward"``, ``"gradient"`` (the backward pass alone) or ``"both"``.
            For a graph without gradient nodes, the gradient views differentiate
            ``loss`` first.
        loss: the loss tensor; default the gradient graph's loss, or the loss of
            the graph's training spec.
        feeds: placeholder values; the graph is run and each node shows its value.
        values: tensor values already computed (from :func:`graphengine.run`).
        grad: also show d loss / d tensor beside each forward tensor (needs
            ``feeds``, or ``values`` holding the gradient tensors of a gradient graph).
        legend: add a legend of node and edge styles (on by default).
        collapse_depth: draw every scope nested this deep or deeper as one box
            (1: each top-level scope is a box; 2: their sub-scopes; 0 is taken as 1).
        scope: draw only this scope (and the nodes it reads, faded).
        expand: the gradient of each forward op is one box ``∂ op`` unless expanded
            into its nodes: True (all), False (none), forward node names, or None
            (all when the view holds at most ``EXPAND_BUDGET`` gradient nodes).
        derived: link each forward op to the box of its gradient (dashed).
        reads: draw the forward values that gradient rules read (dotted, faded).
        direction: ``"TB"`` (forward flow downwards), ``"LR"``, or ``"auto"``:
            whichever keeps the picture nearer 4:3.
        max_nodes: the node budget: above it scopes are collapsed automatically,
            with a :class:`RenderWarning` (default ``NODE_BUDGET``; None: no limit).
            An explicit ``collapse_depth`` turns it off.
        clusters: draw scopes as clusters (False: the simpler layout that
            :func:`render` falls back to when ``dot`` fails on clusters).

    Raises:
        RenderError: an unknown view, scope or direction, or a gradient view without a loss.
        FeedError, ExecutionError: running on ``feeds`` failed.

    >>> import graphengine as ge
    >>> g = ge.Graph("tiny")
    >>> y = ge.exp(g.placeholder("x", (3,)))
    >>> print(ge.to_dot(g).count(" -> "))
    1
    """
    require_graph(graph, "ge.to_dot")
    if view not in VIEWS:
        raise RenderError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if direction not in DIRECTIONS:
        raise RenderError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    loss_ref = _find_loss(graph, loss)
    if view != "forward" and not gradient_nodes(graph):
        graph = _differentiate(graph, loss_ref)
    sel = select(
        graph, view, scope, collapse_depth, expand=expand, reads=reads, max_nodes=max_nodes
    )
    for note in sel.notes:
        warnings.warn(note, RenderWarning, stacklevel=2)
    forward = [n for n in graph.nodes if n.name not in sel.gradient]
    notes = annotate(graph, forward, feeds, values, grad, loss_ref)
    return write_dot(
        graph,
        sel,
        view=view,
        loss=loss_ref,
        notes=notes,
        legend=legend,
        derived=derived,
        reads=reads,
        direction=direction,
        clusters=clusters,
    )


def render(
    graph: Graph,
    path: str | Path,
    *,
    format: str | None = None,
    timeout: float | None = DOT_TIMEOUT,
    **options: Any,
) -> Path:
    """Draw ``graph`` into ``path`` (``.svg``, ``.png``, ``.pdf`` or ``.dot``).

    ``format`` overrides the file suffix; ``timeout`` bounds the seconds ``dot``
    may take (None: no bound); ``options`` are those of :func:`to_dot`.  When
    ``dot`` fails on the drawing, it is laid out again with Graphviz's other
    ranking (``newrank``), then with plain edge labels, then without scope clusters, with a
    :class:`RenderWarning` saying so.  Returns the path written.

    Raises:
        RenderError: an unknown format, Graphviz missing (for images), failing on
            every layout or running past ``timeout``, and everything
            :func:`to_dot` raises.

    >>> import graphengine as ge, tempfile, os
    >>> g = ge.Graph("tiny")
    >>> y = ge.exp(g.placeholder("x", (3,)))
    >>> path = ge.render(g, os.path.join(tempfile.mkdtemp(), "tiny.dot"))
    >>> path.read_text().startswith('digraph "tiny"')
    True
    """
    require_graph(graph, "ge.render")
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise RenderError(
            f"cannot draw into {str(path)!r}: unknown format {fmt!r}; use a "
            f"file ending in {', '.join('.' + f for f in FORMATS)}"
        )
    text = to_dot(graph, **options)
    if fmt in ("dot", "gv"):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(_draw(graph, text, fmt, timeout, options))
    return path


def render_svg(graph: Graph) -> str:
    """SVG text of ``graph``, as a notebook shows it: both views for a gradient graph,
    scopes collapsed automatically above the node budget."""
    view = "both" if gradient_nodes(graph) else "forward"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RenderWarning)
        text = to_dot(graph, view=view)
        return _draw(graph, text, "svg", DOT_TIMEOUT, {"view": view}).decode("utf-8")


def _draw(
    graph: Graph, text: str, fmt: str, timeout: float | None, options: dict[str, Any]
) -> bytes:
    """Run ``dot`` on ``text``; if it fails, on the same drawing with ``newrank``, then
    with plain edge labels instead of xlabels, then without clusters (each retry
    said in a RenderWarning)."""
    try:
        return run_dot(text, fmt, timeout)
    except DotFailedError as first:
        failure = first
    tries = [("Graphviz's other ranking (newrank=true)", _with_newrank(text))]
    if ', xlabel="' in text:
        # Graphviz 14.1 can fail to route edges around xlabels ("triangulation
        # failed" in routesplines: 1 of 720 fuzzed drawings), where 2.43 cannot rank
        # labels between clusters; the other form of the label suits the other dot.
        tries.append(("edge labels ranked as nodes", text.replace(', xlabel="', ', label="')))
    if options.get("clusters", True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RenderWarning)  # said once already
            flat = to_dot(graph, **{**options, "clusters": False})
        tries.append(("no scope clusters", flat))
    for how, retry in tries:
        try:
            image = run_dot(retry, fmt, timeout)
        except DotFailedError:
            continue
        warnings.warn(
            f"Graphviz's dot failed on this drawing ({failure.reason}); drew it with {how} instead",
            RenderWarning,
            stacklevel=3,
        )
        return image
    raise failure


def _with_newrank(text: str) -> str:
    return text.replace("  graph [", '  graph [newrank="true", ', 1)


_NODE_LINE = re.compile(r'^\s*"[^"]+" \[', re.MULTILINE)


def find_dot(fmt: str = "svg") -> str:
    """The path of the ``dot`` program to run: the one ``GRAPHENGINE_DOT`` names (to draw
    with another Graphviz than the system's), else ``dot`` on PATH.

    Raises RenderError, saying how to get one, when there is none (``fmt`` is the
    image format wanted, for the message).
    """
    wanted = os.environ.get(DOT_VARIABLE, "")
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            raise RenderError(
                f"cannot make a .{fmt} image: {DOT_VARIABLE}={wanted!r} is not an "
                f"executable file nor a program on PATH; point it at Graphviz's dot, "
                f"or unset it to use the dot on PATH"
            )
        return found
    found = shutil.which("dot")
    if found is None:
        raise RenderError(
            f"cannot make a .{fmt} image: Graphviz's `dot` program is not on PATH; {_INSTALL_HINT}"
        )
    return found


def dot_version() -> str:
    """What the ``dot`` that :func:`run_dot` runs says its version is
    (``"2.43.0"``, ``"14.1.2"``); RenderError when there is none."""
    result = subprocess.run(
        [find_dot(), "-V"], capture_output=True, check=False, timeout=DOT_TIMEOUT
    )
    said = result.stderr.decode("utf-8", "replace")
    match = re.search(r"version (\S+)", said)
    return match.group(1) if match else said.strip() or "unknown"


def run_dot(text: str, fmt: str, timeout: float | None = DOT_TIMEOUT) -> bytes:
    """Lay out DOT ``text`` with Graphviz's ``dot`` (see :func:`find_dot`) and return
    the ``fmt`` image.

    Raises RenderError when ``dot`` is missing or runs past ``timeout`` seconds,
    DotFailedError when it fails.
    """
    binary = find_dot(fmt)
    try:
        result = subprocess.run(
            [binary, f"-T{fmt}"],
            input=text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        nodes, edges = len(_NODE_LINE.findall(text)), text.count(" -> ")
        raise RenderError(
            f"Graphviz's dot did not finish laying out {nodes:,} nodes and "
            f"{edges:,} edges within {timeout:g} s and was stopped; draw less "
            "(--collapse-depth 1, --scope NAME, --max-nodes N) or allow more "
            "time (--timeout SECONDS)"
        ) from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").split()
        reason = " ".join(message[:12]) or "no message"
        raise DotFailedError(
            f"Graphviz's dot failed (exit code {result.returncode}) making "
            f"a .{fmt} image: {reason}; write a .dot file to inspect the "
            "input",
            reason,
        )
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
        raise RenderError(
            f"graph '{graph.name}' holds no gradient nodes, so the gradient "
            "view must build them: name the loss with loss=NAME (--loss NAME), "
            "or save the graph with a training spec"
        )
    wrt = None
    if not graph.parameters(trainable=True):
        wrt = [n.name for n in graph.placeholders() if is_float(n.types[0].dtype)]
        if not wrt:
            raise RenderError(
                f"graph '{graph.name}' has no trainable parameter and no float "
                "placeholder: there is nothing to differentiate"
            )
    try:
        return gradients(graph, loss, wrt=wrt)
    except GradientError as exc:
        raise RenderError(f"cannot draw the gradient of '{loss}': {exc}") from exc


__all__ = [
    "DOT_TIMEOUT",
    "DOT_VARIABLE",
    "EXPAND_BUDGET",
    "FORMATS",
    "NODE_BUDGET",
    "VIEWS",
    "DotFailedError",
    "RenderError",
    "RenderWarning",
    "dot_version",
    "find_dot",
    "render",
    "render_svg",
    "run_dot",
    "to_dot",
]
