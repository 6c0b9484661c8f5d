"""How to train a graph from data files: the optimizer, the schedule and the data.

A :class:`TrainingSpec` travels in the model file (``TrainingSpecProto`` in
proto/graphengine.proto), so a saved graph says how it is meant to be trained.
The dataclasses here mirror those messages field by field, with the same
defaults; :meth:`TrainingSpec.to_proto` and :meth:`TrainingSpec.from_proto` are
the only mapping between the two.  Every value is checked when a spec is made,
and a bad one raises GraphError naming the field.

>>> spec = TrainingSpec(loss="loss", optimizer=OptimizerSpec("adam", learning_rate=1e-3))
>>> spec.optimizer.beta1, spec.batch_size
(0.9, 32)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import GraphError
from .graph import Graph, check_name, parse_ref

if TYPE_CHECKING:  # pragma: no cover - protobuf is imported when a spec is read or written
    from .proto import graphengine_pb2 as pb

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = (
    "constant",
    "step",
    "cosine",
    "exponential",
    "polynomial",
    "one_cycle",
    "reduce_on_plateau",
    "piecewise",
)
#: Metric names; "topK_accuracy" takes any K >= 1 ("top5_accuracy").
METRICS = ("loss", "accuracy", "top5_accuracy", "precision", "recall", "f1", "mae", "r2")
#: Losses that ge.add_loss and ``graphengine train --loss KIND`` add to a graph.
LOSS_KINDS = ("cross_entropy", "binary_cross_entropy", "mse", "l1", "huber")
MODES = ("", "min", "max")
_TOP_K = re.compile(r"^top([1-9][0-9]{0,5})_accuracy$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!/]+$")

_UINT64_MAX = 2**64 - 1


def _fail(name: str, message: str) -> GraphError:
    return GraphError(f"training spec: {name} {message}")


def _check_float(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float inside the interval, else GraphError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, f"must be a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = (
            ("(" if low_open else "[")
            + f"{low:g}, {high:g}"
            + (")" if high_open or high == math.inf else "]")
        )
        raise _fail(name, f"must be in {interval}, got {value!r}")
    return value


def _check_int(name: str, value: Any, *, low: int, high: int = _UINT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, f"must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(name, f"must be an int >= {low}, got {value}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, f"is {value!r}; use one of {', '.join(map(repr, choices))}")
    return value


def check_metric(name: str, value: Any) -> str:
    """``value`` if it is a metric name (see METRICS), else GraphError naming the field."""
    if isinstance(value, str) and (value in METRICS or _TOP_K.fullmatch(value)):
        return value
    choices = ", ".join(repr(m) for m in METRICS if m != "top5_accuracy")
    raise _fail(
        name,
        f"is {value!r}; use one of {choices} or 'topK_accuracy' (K >= 1, such as 'top5_accuracy')",
    )


def top_k(metric: str) -> int | None:
    """K of a "topK_accuracy" metric name, else None."""
    found = _TOP_K.fullmatch(metric)
    return int(found.group(1)) if found else None


def _check_pattern(name: str, value: Any) -> str:
    """A parameter name, scope or glob (``dense2``, ``dense2/*``, ``*/bias``)."""
    if not isinstance(value, str) or not value or not _PATTERN.fullmatch(value):
        raise _fail(
            name,
            f"is {value!r}; give a parameter name, a scope ('dense2') or a glob "
            "('dense2/*', '*/bias')",
        )
    return value


def _check_ref(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(name, "must name a tensor ('node' or 'node:k')")
    try:
        check_name(parse_ref(value)[0], "tensor reference")
    except GraphError as exc:
        raise _fail(name, str(exc)) from None
    return value


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer and its hyper-parameters (``OptimizerProto``).

    ``name`` is "sgd", "adam" or "adamw".  ``momentum`` and ``nesterov`` apply to
    sgd; ``beta1``, ``beta2`` and ``epsilon`` to adam(w).  ``weight_decay`` is an
    L2 penalty (sgd, adam) or decoupled decay (adamw); ``clip_value`` > 0 clips
    each gradient element to [-clip_value, clip_value], then ``clip_global_norm``
    > 0 rescales gradients to that global norm (0: no clipping).
    """

    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    clip_global_norm: float = 0.0
    clip_value: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("optimizer.name", self.name, OPTIMIZERS)
        _check_float("optimizer.learning_rate", self.learning_rate, low=0, low_open=True)
        _check_float("optimizer.momentum", self.momentum, low=0, high=1, high_open=True)
        if not isinstance(self.nesterov, bool):
            raise _fail("optimizer.nesterov", "must be a bool")
        if self.nesterov and self.momentum == 0:
            raise _fail("optimizer.nesterov", "needs optimizer.momentum > 0")
        _check_float("optimizer.beta1", self.beta1, low=0, high=1, high_open=True)
        _check_float("optimizer.beta2", self.beta2, low=0, high=1, high_open=True)
        _check_float("optimizer.epsilon", self.epsilon, low=0, low_open=True)
        _check_float("optimizer.weight_decay", self.weight_decay, low=0)
        _check_float("optimizer.clip_global_norm", self.clip_global_norm, low=0)
        _check_float("optimizer.clip_value", self.clip_value, low=0)


@dataclass(frozen=True)
class ScheduleSpec:
    """How the learning rate changes with the step (``ScheduleProto``).

    "constant"; "step" multiplies it by ``gamma`` every ``step_size`` steps;
    "exponential" by ``gamma ** (step / step_size)``; "cosine" decays it to
    ``min_lr`` over ``total_steps`` (0: the whole run), "polynomial" likewise
    with ``(1 - t) ** power``; "one_cycle" rises from ``lr / div_factor`` to
    ``lr`` over ``pct_start`` of ``total_steps`` and falls to ``lr /
    (div_factor * final_div_factor)``; "piecewise" takes ``values[i]`` after the
    i-th of ``boundaries``; "reduce_on_plateau" multiplies it by ``gamma`` when
    ``plateau_monitor`` has not improved by ``plateau_min_delta`` for
    ``plateau_patience`` validations (not counting the ``plateau_cooldown``
    validations after each reduction).  ``one_cycle`` with ``cycle_momentum``
    (the default, as PyTorch's) moves the momentum inversely, between
    ``max_momentum`` and ``base_momentum``.  ``warmup_steps`` ramps it
    linearly first.  The formulas: :mod:`graphengine.training.schedules`.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    step_size: int = 0
    gamma: float = 0.1
    min_lr: float = 0.0
    total_steps: int = 0
    power: float = 1.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    plateau_monitor: str = ""
    plateau_patience: int = 0
    plateau_min_delta: float = 0.0
    boundaries: tuple[int, ...] = ()
    values: tuple[float, ...] = ()
    plateau_mode: str = ""
    plateau_cooldown: int = 0
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self) -> None:
        _check_choice("schedule.kind", self.kind, SCHEDULES)
        _check_int("schedule.warmup_steps", self.warmup_steps, low=0)
        needs_size = self.kind in ("step", "exponential")
        _check_int("schedule.step_size", self.step_size, low=1 if needs_size else 0)
        _check_float("schedule.gamma", self.gamma, low=0, high=1, low_open=True)
        _check_float("schedule.min_lr", self.min_lr, low=0)
        _check_int("schedule.total_steps", self.total_steps, low=0)
        _check_float("schedule.power", self.power, low=0, low_open=True)
        _check_float(
            "schedule.pct_start", self.pct_start, low=0, high=1, low_open=True, high_open=True
        )
        _check_float("schedule.div_factor", self.div_factor, low=1)
        _check_float("schedule.final_div_factor", self.final_div_factor, low=1)
        if self.plateau_monitor:
            _check_name_field("schedule.plateau_monitor", self.plateau_monitor)
        _check_int("schedule.plateau_patience", self.plateau_patience, low=0)
        _check_float("schedule.plateau_min_delta", self.plateau_min_delta, low=0)
        _check_choice("schedule.plateau_mode", self.plateau_mode, MODES)
        _check_int("schedule.plateau_cooldown", self.plateau_cooldown, low=0)
        if not isinstance(self.cycle_momentum, bool):
            raise _fail(
                "schedule.cycle_momentum", f"must be True or False, got {self.cycle_momentum!r}"
            )
        _check_float("schedule.base_momentum", self.base_momentum, low=0, high=1, high_open=True)
        _check_float(
            "schedule.max_momentum",
            self.max_momentum,
            low=self.base_momentum,
            high=1,
            high_open=True,
        )
        if self.kind == "one_cycle" and self.warmup_steps:
            raise _fail(
                "schedule.warmup_steps",
                "must be 0 for one_cycle, which has its own warm-up (pct_start)",
            )
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(
            self, "values", tuple(float(v) if isinstance(v, int) else v for v in self.values)
        )
        for i, b in enumerate(self.boundaries):
            _check_int(f"schedule.boundaries[{i}]", b, low=1)
            if i and b <= self.boundaries[i - 1]:
                raise _fail(
                    "schedule.boundaries", f"must increase strictly, got {list(self.boundaries)}"
                )
        for i, v in enumerate(self.values):
            _check_float(f"schedule.values[{i}]", v, low=0)
        if self.kind == "piecewise":
            if len(self.values) != len(self.boundaries) + 1:
                raise _fail(
                    "schedule.values",
                    f"needs one more entry than schedule.boundaries "
                    f"({len(self.boundaries)} boundaries, "
                    f"{len(self.values)} values)",
                )
        elif self.boundaries or self.values:
            raise _fail(
                "schedule.boundaries", f"and values are for kind 'piecewise', not {self.kind!r}"
            )


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` validations (``EarlyStoppingProto``).  ``monitor`` "" means
    "val_loss" with validation data, else "train_loss"; ``mode`` "" is "min"
    for a loss or an error and "max" otherwise; ``restore_best`` puts back the
    best parameters at the end."""

    monitor: str = ""
    patience: int = 5
    min_delta: float = 0.0
    mode: str = ""
    restore_best: bool = False

    def __post_init__(self) -> None:
        if self.monitor:
            _check_name_field("early_stopping.monitor", self.monitor)
        _check_int("early_stopping.patience", self.patience, low=1)
        _check_float("early_stopping.min_delta", self.min_delta, low=0)
        _check_choice("early_stopping.mode", self.mode, MODES)
        if not isinstance(self.restore_best, bool):
            raise _fail("early_stopping.restore_best", "must be true or false")


@dataclass(frozen=True)
class TrainingSpec:
    """How to train a graph (``TrainingSpecProto``).

    ``loss`` is the scalar tensor to minimize; ``trainable`` names the
    parameters to update (empty: every trainable parameter) and ``frozen`` those
    to leave, both by name, scope or glob; ``metrics`` lists names of METRICS
    (empty means ("loss",)), which compare ``predictions`` with the placeholder
    ``labels``.  ``data_map`` maps a placeholder to the name of the .npz array
    feeding it (default: its own name).  ``validate_every``, ``early_stopping``,
    ``best_monitor`` and ``log_every`` are described in the proto.

    Raises GraphError naming the field when a value is out of range.
    """

    loss: str
    trainable: tuple[str, ...] = ()
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    batch_size: int = 32
    epochs: int = 1
    seed: int = 0
    drop_last: bool = False
    metrics: tuple[str, ...] = ("loss",)
    labels: str = ""
    predictions: str = ""
    # A dict in a frozen dataclass: compared, but left out of the hash.
    data_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    frozen: tuple[str, ...] = ()
    validate_every: int = 0
    early_stopping: EarlyStoppingSpec | None = None
    best_monitor: str = ""
    log_every: int = 0
    loss_kind: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize through object.__setattr__
        _check_ref("loss", self.loss)
        set_(self, "trainable", tuple(self.trainable))
        for i, name in enumerate(self.trainable):
            _check_pattern(f"trainable[{i}]", name)
        set_(self, "frozen", tuple(self.frozen))
        for i, name in enumerate(self.frozen):
            _check_pattern(f"frozen[{i}]", name)
        _check_int("validate_every", self.validate_every, low=0)
        _check_int("log_every", self.log_every, low=0)
        if self.early_stopping is not None and not isinstance(
            self.early_stopping, EarlyStoppingSpec
        ):
            raise _fail("early_stopping", "must be an EarlyStoppingSpec")
        if self.best_monitor:
            _check_name_field("best_monitor", self.best_monitor)
        if self.loss_kind:
            _check_choice("loss_kind", self.loss_kind, LOSS_KINDS)
        if not isinstance(self.optimizer, OptimizerSpec):
            raise _fail("optimizer", "must be an OptimizerSpec")
        if not isinstance(self.schedule, ScheduleSpec):
            raise _fail("schedule", "must be a ScheduleSpec")
        _check_int("batch_size", self.batch_size, low=1)
        _check_int("epochs", self.epochs, low=1)
        _check_int("seed", self.seed, low=0)
        if not isinstance(self.drop_last, bool):
            raise _fail("drop_last", f"must be true or false, not {self.drop_last!r}")
        set_(self, "metrics", tuple(self.metrics) or ("loss",))
        for i, metric in enumerate(self.metrics):
            check_metric(f"metrics[{i}]", metric)
        compared = [m for m in self.metrics if m != "loss"]
        if compared:
            _check_name_field("labels", self.labels, f"is needed for the {compared[0]!r} metric")
            _check_ref("predictions", self.predictions)
        else:
            if self.labels:
                _check_name_field("labels", self.labels)
            if self.predictions:
                _check_ref("predictions", self.predictions)
        data_map = dict(sorted(dict(self.data_map).items()))
        for key, value in data_map.items():
            _check_name_field(f"data_map key {key!r}", key)
            if not isinstance(value, str) or not value:
                raise _fail(f"data_map[{key!r}]", "must be the name of an array in the data file")
        set_(self, "data_map", data_map)

    # -- the proto mapping ------------------------------------------------------
    def to_proto(self) -> pb.TrainingSpecProto:
        """This spec as a ``TrainingSpecProto``; every field is written explicitly."""
        from .proto import graphengine_pb2 as pb

        opt, sch, stop = self.optimizer, self.schedule, self.early_stopping
        return pb.TrainingSpecProto(
            loss=self.loss,
            trainable=list(self.trainable),
            optimizer=pb.OptimizerProto(
                name=opt.name,
                learning_rate=opt.learning_rate,
                momentum=opt.momentum,
                nesterov=opt.nesterov,
                beta1=opt.beta1,
                beta2=opt.beta2,
                epsilon=opt.epsilon,
                weight_decay=opt.weight_decay,
                clip_global_norm=opt.clip_global_norm,
                clip_value=opt.clip_value,
            ),
            schedule=pb.ScheduleProto(
                kind=sch.kind,
                warmup_steps=sch.warmup_steps,
                step_size=sch.step_size,
                gamma=sch.gamma,
                min_lr=sch.min_lr,
                total_steps=sch.total_steps,
                power=sch.power,
                pct_start=sch.pct_start,
                div_factor=sch.div_factor,
                final_div_factor=sch.final_div_factor,
                plateau_monitor=sch.plateau_monitor,
                plateau_patience=sch.plateau_patience,
                plateau_min_delta=sch.plateau_min_delta,
                boundaries=list(sch.boundaries),
                values=list(sch.values),
                plateau_mode=sch.plateau_mode,
                plateau_cooldown=sch.plateau_cooldown,
                cycle_momentum=sch.cycle_momentum,
                base_momentum=sch.base_momentum,
                max_momentum=sch.max_momentum,
            ),
            batch_size=self.batch_size,
            epochs=self.epochs,
            seed=self.seed,
            drop_last=self.drop_last,
            metrics=list(self.metrics),
            labels=self.labels,
            predictions=self.predictions,
            data_map=dict(self.data_map),
            frozen=list(self.frozen),
            validate_every=self.validate_every,
            early_stopping=(
                None
                if stop is None
                else pb.EarlyStoppingProto(
                    monitor=stop.monitor,
                    patience=stop.patience,
                    min_delta=stop.min_delta,
                    mode=stop.mode,
                    restore_best=stop.restore_best,
                )
            ),
            best_monitor=self.best_monitor,
            log_every=self.log_every,
            loss_kind=self.loss_kind,
        )

    @classmethod
    def from_proto(cls, proto: pb.TrainingSpecProto) -> TrainingSpec:
        """The spec a ``TrainingSpecProto`` describes, absent fields taking their
        documented defaults.  Raises GraphError naming a field out of range."""
        opt, sch = proto.optimizer, proto.schedule
        optimizer = OptimizerSpec(
            name=opt.name or OptimizerSpec.name,
            learning_rate=_optional(opt, "learning_rate", OptimizerSpec.learning_rate),
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            beta1=_optional(opt, "beta1", OptimizerSpec.beta1),
            beta2=_optional(opt, "beta2", OptimizerSpec.beta2),
            epsilon=_optional(opt, "epsilon", OptimizerSpec.epsilon),
            weight_decay=opt.weight_decay,
            clip_global_norm=opt.clip_global_norm,
            clip_value=opt.clip_value,
        )
        schedule = ScheduleSpec(
            kind=sch.kind or ScheduleSpec.kind,
            warmup_steps=sch.warmup_steps,
            step_size=sch.step_size,
            gamma=_optional(sch, "gamma", ScheduleSpec.gamma),
            min_lr=sch.min_lr,
            total_steps=sch.total_steps,
            power=_optional(sch, "power", ScheduleSpec.power),
            pct_start=_optional(sch, "pct_start", ScheduleSpec.pct_start),
            div_factor=_optional(sch, "div_factor", ScheduleSpec.div_factor),
            final_div_factor=_optional(sch, "final_div_factor", ScheduleSpec.final_div_factor),
            plateau_monitor=sch.plateau_monitor,
            plateau_patience=sch.plateau_patience,
            plateau_min_delta=sch.plateau_min_delta,
            boundaries=tuple(sch.boundaries),
            values=tuple(sch.values),
            plateau_mode=sch.plateau_mode,
            plateau_cooldown=sch.plateau_cooldown,
            cycle_momentum=_optional(sch, "cycle_momentum", ScheduleSpec.cycle_momentum),
            base_momentum=_optional(sch, "base_momentum", ScheduleSpec.base_momentum),
            max_momentum=_optional(sch, "max_momentum", ScheduleSpec.max_momentum),
        )
        stop = None
        if proto.HasField("early_stopping"):
            es = proto.early_stopping
            stop = EarlyStoppingSpec(
                monitor=es.monitor,
                patience=_optional(es, "patience", EarlyStoppingSpec.patience),
                min_delta=es.min_delta,
                mode=es.mode,
                restore_best=es.restore_best,
            )
        return cls(
            loss=proto.loss,
            trainable=tuple(proto.trainable),
            optimizer=optimizer,
            schedule=schedule,
            batch_size=_optional(proto, "batch_size", TrainingSpec.batch_size),
            epochs=_optional(proto, "epochs", TrainingSpec.epochs),
            seed=proto.seed,
            drop_last=proto.drop_last,
            metrics=tuple(proto.metrics),
            labels=proto.labels,
            predictions=proto.predictions,
            data_map=dict(proto.data_map),
            frozen=tuple(proto.frozen),
            validate_every=proto.validate_every,
            early_stopping=stop,
            best_monitor=proto.best_monitor,
            log_every=proto.log_every,
            loss_kind=proto.loss_kind,
        )

    # -- checks against a graph -------------------------------------------------
    def check_graph(self, graph: Graph) -> None:
        """Check that the tensors and parameters this spec names exist in ``graph``.

        Raises GraphError naming the field and the missing name.
        """
        for what, ref in (("loss", self.loss), ("predictions", self.predictions)):
            if ref and not _has_tensor(graph, ref):
                raise _fail(what, f"names {ref!r}, which is not a tensor of graph '{graph.name}'")
        _check_scalar_loss(graph, self.loss)
        from .training.selection import select_parameters

        for what, patterns in (("trainable", self.trainable), ("frozen", self.frozen)):
            select_parameters(graph, patterns, what)
        placeholders = {n.name for n in graph.placeholders()}
        for what, name in [("labels", self.labels)] + [("data_map key", k) for k in self.data_map]:
            if name and name not in placeholders:
                raise _fail(
                    what, f"names {name!r}, which is not a placeholder of graph '{graph.name}'"
                )


def _check_name_field(name: str, value: Any, missing: str = "must be a node name") -> str:
    if not isinstance(value, str) or not value:
        raise _fail(name, missing)
    try:
        return check_name(value)
    except GraphError as exc:
        raise _fail(name, str(exc)) from None


def _optional(message: Any, name: str, default: Any) -> Any:
    """The value of an ``optional`` proto field, or ``default`` when absent."""
    return getattr(message, name) if message.HasField(name) else default


def _check_scalar_loss(graph: Graph, ref: str) -> None:
    """A loss must be one float number: a gradient of anything else needs a seed
    that the trainer does not have."""
    loss = graph.tensor(ref)
    if loss.dtype.kind == "f" and loss.shape == ():
        return
    node = graph.node(loss.node)
    what = f"{loss.dtype.name} of shape {tuple(loss.shape)}" if loss.shape else loss.dtype.name
    fix = (
        "reduce it to one number, e.g. ge.mean(loss) in Python (or reduction='mean' on "
        f"the {node.op} op), or add a loss with ge.add_loss(graph, KIND, predictions, "
        "labels) / graphengine train --loss KIND --predictions OUTPUT --labels ARRAY "
        f"(KIND: {', '.join(LOSS_KINDS)})"
    )
    if loss.dtype.kind != "f":
        raise _fail(
            "loss",
            f"names {ref!r} ({node.op}), a {what} tensor; the loss must be a float scalar: {fix}",
        )
    raise _fail("loss", f"names {ref!r} ({node.op}), a {what} tensor, not a scalar; {fix}")


def _has_tensor(graph: Graph, ref: str) -> bool:
    node, index = parse_ref(ref)
    return node in graph and index < len(graph.node(node).types)
