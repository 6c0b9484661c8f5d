"""The effective training spec of a run: the graph's own spec, or defaults for
a plain graph, with settings given in Python or on the command line laid over it.

Overrides use the field names of :class:`~graphengine.training_spec.TrainingSpec`;
the optimizer's and the schedule's fields are given flat, and the names
``optimizer`` and ``schedule`` take the optimizer's name and the schedule's kind::

    resolve_spec(graph, optimizer="adam", learning_rate=1e-3, schedule="cosine",
                 warmup_steps=100, batch_size=64)

When the graph has no spec and no loss is given, the loss is the graph's only
scalar float output (or the loss of its gradient section).  When a metric
other than the loss is asked for without ``predictions`` and ``labels``, they
come from the ``softmax_cross_entropy`` node that computes the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import GraphError, TrainingError
from ..graph import Graph
from ..training_spec import EarlyStoppingSpec, OptimizerSpec, ScheduleSpec, TrainingSpec
from .metrics import find_comparison

_OPTIMIZER_FIELDS = {f.name for f in dataclasses.fields(OptimizerSpec)} - {"name"}
_SCHEDULE_FIELDS = {f.name for f in dataclasses.fields(ScheduleSpec)} - {"kind"}
_SPEC_FIELDS = {f.name for f in dataclasses.fields(TrainingSpec)} - {"optimizer", "schedule"}
#: Every setting an override may name.
SETTINGS = sorted(_SPEC_FIELDS | _OPTIMIZER_FIELDS | _SCHEDULE_FIELDS | {"optimizer", "schedule"})


def resolve_spec(graph: Graph, spec: TrainingSpec | None = None, **overrides: Any) -> TrainingSpec:
    """``spec`` (default: ``graph.training``) with ``overrides`` applied; None values
    are ignored, so unset command-line options change nothing.

    Raises TrainingError for an unknown setting or a loss that cannot be found,
    and for values out of range (naming the field).
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise TrainingError(
            f"unknown training setting(s) {', '.join(unknown)}; the settings "
            f"are {', '.join(SETTINGS)}"
        )
    base = spec if spec is not None else graph.training
    try:
        if base is None:
            loss = overrides.pop("loss", None) or default_loss(graph)
            base = TrainingSpec(loss=loss)
        optimizer = _replace(base.optimizer, overrides, _OPTIMIZER_FIELDS, "optimizer", "name")
        schedule = _replace(base.schedule, overrides, _SCHEDULE_FIELDS, "schedule", "kind")
        top = {k: overrides[k] for k in _SPEC_FIELDS if k in overrides}
        for key in ("trainable", "frozen"):
            if key in top:
                top[key] = (top[key],) if isinstance(top[key], str) else tuple(top[key])
        if "early_stopping" in top:
            top["early_stopping"] = as_early_stopping(top["early_stopping"])
        metrics = tuple(top.get("metrics", base.metrics))
        compared = [m for m in metrics if m != "loss"]
        if compared:
            labels = top.get("labels", base.labels)
            predictions = top.get("predictions", base.predictions)
            if not labels or not predictions:
                found = find_comparison(
                    graph, top.get("loss", base.loss), predictions, labels, compared[0]
                )
                top["labels"], top["predictions"] = found.labels, found.predictions
        resolved = _rebuild(base, optimizer=optimizer, schedule=schedule, **top)
        resolved.check_graph(graph)
    except GraphError as exc:
        raise TrainingError(str(exc)) from None
    return resolved


def as_early_stopping(value: Any) -> EarlyStoppingSpec | None:
    """An EarlyStoppingSpec from what a user may write: the spec itself, a dict of
    its fields, True (the defaults) or False (none)."""
    if value is None or value is False:
        return None
    if value is True:
        return EarlyStoppingSpec()
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(EarlyStoppingSpec)})
        if unknown:
            raise TrainingError(
                f"early_stopping: unknown field(s) {', '.join(unknown)}; the "
                "fields are monitor, patience, min_delta, mode, restore_best"
            )
        return EarlyStoppingSpec(**value)
    if isinstance(value, EarlyStoppingSpec):
        return value
    raise TrainingError(
        f"early_stopping must be an EarlyStoppingSpec, a dict or a bool, not {type(value).__name__}"
    )


def _replace(
    spec: Any, overrides: dict[str, Any], fields: set[str], key: str, key_field: str
) -> Any:
    changes = {k: overrides[k] for k in fields if k in overrides}
    for k in ("boundaries", "values"):
        if k in changes:
            changes[k] = tuple(changes[k])
    if key in overrides:
        changes[key_field] = overrides[key]
    return dataclasses.replace(spec, **changes) if changes else spec


def _rebuild(spec: TrainingSpec, **changes: Any) -> TrainingSpec:
    """``dataclasses.replace`` that re-runs the checks once every change is in (a new
    metric and its labels must be checked together)."""
    values = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    values.update(changes)
    return TrainingSpec(**values)


def default_loss(graph: Graph) -> str:
    """The loss of a graph without a training spec: the loss of its gradient section,
    else its only scalar float output.  TrainingError asks for ``--loss`` otherwise."""
    if graph.gradient is not None:
        return graph.gradient.loss
    candidates = [
        ref
        for ref in graph.outputs
        if graph.tensor(ref).shape == () and graph.tensor(ref).dtype.kind == "f"
    ]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(repr(c) for c in candidates) or "none"
    raise TrainingError(
        f"graph '{graph.name}' has no training spec, and the loss to minimize "
        f"is not clear (scalar float outputs: {found}); name it with --loss "
        "NAME, or loss=... in Python"
    )


def build_spec(graph: Graph, loss: Any, **settings: Any) -> TrainingSpec:
    """The spec for ``graph.set_training(loss, **settings)``: defaults with ``settings``
    applied; ``loss`` may be a tensor handle."""
    ref = graph.tensor(loss).name
    return resolve_spec(graph, TrainingSpec(loss=ref), **settings)


def flatten(spec: TrainingSpec) -> dict[str, Any]:
    """The spec as one flat JSON-ready dict (``optimizer.learning_rate`` ...), as
    checkpoints record it."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(spec).items():
        if isinstance(value, dict) and key in ("optimizer", "schedule", "early_stopping"):
            for sub, item in value.items():
                out[f"{key}.{sub}"] = list(item) if isinstance(item, tuple) else item
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def describe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """One line per setting whose value differs: ``optimizer.learning_rate: 0.1 -> 0.05``."""
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            lines.append(f"{key}: {_short(old)} -> {_short(new)}")
    return lines


def _short(value: Any, limit: int = 80) -> str:
    # A checkpoint's settings come from a file: one line each, whatever it holds.
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
