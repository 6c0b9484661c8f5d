"""Graph optimization: a pipeline of passes, each graph in, new graph out, with a report.

``ge.optimize(graph)`` runs, in order (:data:`DEFAULT_PASSES`):

``dce``
    dead-code elimination (:func:`eliminate_dead_code`);
``fold``
    bounded constant folding (:func:`fold_constants`; nothing over
    ``max_fold_elements`` elements is materialised, 65,536 by default);
``cse``
    common-subexpression elimination (:func:`eliminate_common_subexpressions`;
    ops declared ``random`` are never merged);
``simplify``
    algebraic simplification (:func:`simplify_algebra`: transpose and reshape
    chains, broadcasts of scalars, identities, log-softmax times one-hot into
    cross-entropy);
``cse``
    again: simplify's rewrites can make two nodes equal (``exp(x) + 0`` is
    ``exp(x)``, so ``(exp(x) + 0) * (exp(x) + 0)`` is ``exp(x) * exp(x)``), and
    running the pipeline on its own result then finds nothing more;
``fuse``
    fusion into the ops of :mod:`graphengine.ops.fused` (:func:`fuse_ops`:
    matmul + bias + activation, elementwise chains, relu, softmax cross-entropy
    and batch-norm backward).

Every pass keeps what the graph promises: declared outputs, the gradient
section's loss and gradients, the training spec's tensors, every placeholder and
parameter, under their names.  The result saves, loads, draws, runs and
differentiates like any other graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import GraphError
from ..graph import Graph, require_graph
from .algebra import simplify_algebra
from .basic import (
    MAX_FOLD_ELEMENTS,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_constants,
)
from .fuse import fuse_ops
from .rewrite import kept_refs

#: The passes by name, in the order ``optimize`` runs them by default.
PASSES: dict[str, Callable[..., Graph]] = {
    "dce": eliminate_dead_code,
    "fold": fold_constants,
    "cse": eliminate_common_subexpressions,
    "simplify": simplify_algebra,
    "fuse": fuse_ops,
}

#: What ``optimize`` runs by default: every pass, and cse again after simplify
#: (see the module docstring).
DEFAULT_PASSES: tuple[str, ...] = ("dce", "fold", "cse", "simplify", "cse", "fuse")


@dataclass(frozen=True)
class PassRecord:
    """One pass of a pipeline run: node counts before and after, seconds spent."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float


@dataclass
class PassReport:
    """What :func:`optimize` did, pass by pass.  ``str(report)`` is a table."""

    records: list[PassRecord] = field(default_factory=list)

    @property
    def nodes_before(self) -> int:
        return self.records[0].nodes_before if self.records else 0

    @property
    def nodes_after(self) -> int:
        return self.records[-1].nodes_after if self.records else 0

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def __str__(self) -> str:
        lines = [f"{'pass':<10} {'nodes before':>12} {'nodes after':>12} {'time (ms)':>10}"]
        for r in self.records:
            lines.append(
                f"{r.name:<10} {r.nodes_before:>12} {r.nodes_after:>12} {r.seconds * 1e3:>10.2f}"
            )
        lines.append(
            f"{'total':<10} {self.nodes_before:>12} {self.nodes_after:>12} "
            f"{self.seconds * 1e3:>10.2f}"
        )
        return "\n".join(lines)


def optimize(
    graph: Graph,
    passes: Sequence[str] | None = None,
    *,
    keep: Iterable[str] = (),
    max_fold_elements: int = MAX_FOLD_ELEMENTS,
) -> tuple[Graph, PassReport]:
    """Run optimization passes over ``graph``; return the new graph and a report.

    Args:
        graph: any graph, forward or gradient (left unchanged).
        passes: names from :data:`PASSES`, run in the order given (a name may
            repeat); default :data:`DEFAULT_PASSES`.
        keep: more tensors that must survive under their names (besides the
            declared outputs, gradient and training tensors, placeholders and
            parameters).  A graph without declared outputs keeps every tensor
            nobody consumes.
        max_fold_elements: the largest tensor, in elements, that constant
            folding may create.

    Raises:
        GraphError: an unknown pass name, or a ``keep`` tensor the graph lacks.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3))
    >>> w, b = g.parameter("w", shape=(3, 2)), g.parameter("b", shape=(2,), init="zeros")
    >>> g.mark_output(ge.relu(x @ w + b * 1.0))
    >>> opt, report = ge.optimize(g)
    >>> [n.op for n in opt.nodes]
    ['placeholder', 'parameter', 'parameter', 'dense']
    >>> [(r.name, r.nodes_before, r.nodes_after) for r in report.records][-1]
    ('fuse', 6, 4)
    >>> [r.name for r in report.records]
    ['dce', 'fold', 'cse', 'simplify', 'cse', 'fuse']
    """
    require_graph(graph, "ge.optimize")
    names = list(DEFAULT_PASSES if passes is None else passes)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise GraphError(f"unknown pass {unknown[0]!r}; the passes are {', '.join(PASSES)}")
    for ref in keep:
        graph.tensor(ref)  # FeedError naming the tensor when it does not exist
    refs = kept_refs(graph, keep)
    report = PassReport()
    current = graph
    for name in names:
        start = time.perf_counter()
        result = PASSES[name](current, refs, max_fold_elements=max_fold_elements)
        report.records.append(
            PassRecord(name, len(current), len(result), time.perf_counter() - start)
        )
        current = result
    out = current.copy(graph.name) if current is not graph else graph.copy()
    return out, report


__all__ = [
    "DEFAULT_PASSES",
    "MAX_FOLD_ELEMENTS",
    "PASSES",
    "PassRecord",
    "PassReport",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "fold_constants",
    "fuse_ops",
    "optimize",
    "simplify_algebra",
]
