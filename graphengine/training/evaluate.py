"""Evaluation: the loss and metrics of a graph on data, in inference mode.

The loss reported is each batch's loss weighted by its size, which for a loss
with ``reduction="mean"`` is the loss over the whole data set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compiler import prune_to
from ..errors import TrainingError
from ..executor import compile_plan
from ..graph import Graph
from ..training_spec import TrainingSpec
from .data import DataLike, Dataset, as_dataset, iterate
from .losses import check_class_labels
from .metrics import EpochMetrics, find_comparison
from .settings import resolve_spec


class Evaluator:
    """One compiled inference plan of a spec's loss (and predictions, for metrics),
    run over data sets batch by batch."""

    def __init__(self, graph: Graph, spec: TrainingSpec) -> None:
        self.graph = graph
        self.spec = spec
        compared = [m for m in spec.metrics if m != "loss"]
        self.comparison = (
            find_comparison(graph, spec.loss, spec.predictions, spec.labels, compared[0])
            if compared
            else None
        )
        fetches = [spec.loss] + ([self.comparison.predictions] if self.comparison else [])
        self.placeholders = [n for n in prune_to(graph, fetches) if n.op == "placeholder"]
        self.plan = compile_plan(graph, fetches, [n.name for n in self.placeholders])

    def bind(
        self,
        data: DataLike,
        what: str = "evaluation data",
        mapping: Mapping[str, str] | None = None,
    ) -> Dataset:
        """``data`` checked against the placeholders the evaluation needs; ``mapping``
        (placeholder -> array) is laid over the spec's data_map."""
        if isinstance(data, Dataset) and data.arrays.keys() == {n.name for n in self.placeholders}:
            return data
        mapping = {**self.spec.data_map, **(mapping or {})}
        dataset = as_dataset(data, self.placeholders, mapping, what)
        check_class_labels(self.graph, dataset)
        return dataset

    def __call__(self, data: DataLike, batch_size: int | None = None) -> dict[str, float]:
        """{"loss": ..., "accuracy": ..., "examples": N} of the graph on ``data``."""
        dataset = self.bind(data)
        return {**self.totals(dataset, batch_size).result(), "examples": dataset.size}

    def totals(self, data: DataLike, batch_size: int | None = None) -> EpochMetrics:
        """The running sums of the loss and metrics over ``data`` (which
        data-parallel evaluation adds up over the processes' slices)."""
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise TrainingError(f"evaluation batch_size must be an int >= 1, got {batch_size!r}")
        dataset = self.bind(data)
        totals = EpochMetrics(self.spec.metrics, self.comparison)
        for feeds in iterate(dataset, batch_size or max(self.spec.batch_size, 256)):
            out = self.plan.run(feeds, training=False)
            size = len(next(iter(feeds.values())))
            if self.comparison is not None:
                totals.add(size, float(out[0]), out[1], feeds[self.comparison.labels])
            else:
                totals.add(size, float(out[0]))
        return totals


def evaluate(
    graph: Graph, data: DataLike, *, batch_size: int | None = None, **settings: Any
) -> dict[str, float]:
    """The loss and the spec's metrics of ``graph`` on ``data``.

    ``settings`` override the graph's training spec as in :func:`graphengine.training.train`
    (``loss=...``, ``metrics=["loss", "accuracy"]``, ``data_map=...``).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None,))
    >>> w = g.parameter("w", np.float32(2.0))
    >>> loss = ge.mean((x * w) ** 2.0)
    >>> evaluate(g, {"x": np.ones(4, np.float32)}, loss=loss.name)
    {'loss': 4.0, 'examples': 4}
    """
    return Evaluator(graph, resolve_spec(graph, **settings))(data, batch_size)
