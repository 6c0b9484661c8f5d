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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import GraphError
from .graph import Graph, check_name, parse_ref

if TYPE_CHECKING:  # pragma: no cover - protobuf is imported when a spec is read or written
    from .proto import graphengine_pb2 as pb

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
METRICS = ("loss", "accuracy")

_UINT64_MAX = 2**64 - 1


def _fail(name: str, message: str) -> GraphError:
    return GraphError(f"training spec: {name} {message}")


def _check_float(name: str, value: Any, *, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float inside the interval, else GraphError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, f"must be a number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = (("(" if low_open else "[") + f"{low:g}, {high:g}"
                    + (")" if high_open or high == math.inf else "]"))
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
    L2 penalty (sgd, adam) or decoupled decay (adamw); ``clip_global_norm`` > 0
    rescales gradients to that global norm (0: no clipping).
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


@dataclass(frozen=True)
class ScheduleSpec:
    """How the learning rate changes with the step (``ScheduleProto``).

    "constant"; "step" multiplies it by ``gamma`` every ``step_size`` steps;
    "cosine" decays it to ``min_lr`` over ``total_steps`` (0: the whole run).
    ``warmup_steps`` ramps it linearly from 0 first.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    step_size: int = 0
    gamma: float = 0.1
    min_lr: float = 0.0
    total_steps: int = 0

    def __post_init__(self) -> None:
        _check_choice("schedule.kind", self.kind, SCHEDULES)
        _check_int("schedule.warmup_steps", self.warmup_steps, low=0)
        _check_int("schedule.step_size", self.step_size, low=1 if self.kind == "step" else 0)
        _check_float("schedule.gamma", self.gamma, low=0, high=1, low_open=True)
        _check_float("schedule.min_lr", self.min_lr, low=0)
        _check_int("schedule.total_steps", self.total_steps, low=0)


@dataclass(frozen=True)
class TrainingSpec:
    """How to train a graph (``TrainingSpecProto``).

    ``loss`` is the scalar tensor to minimize; ``trainable`` names the
    parameters to update (empty: every trainable parameter); ``metrics`` lists
    "loss" and/or "accuracy" (empty means ("loss",)); accuracy compares
    ``predictions`` with the placeholder ``labels``.  ``data_map`` maps a
    placeholder to the name of the .npz array feeding it (default: its own name).

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

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize through object.__setattr__
        _check_ref("loss", self.loss)
        set_(self, "trainable", tuple(self.trainable))
        for i, name in enumerate(self.trainable):
            _check_name_field(f"trainable[{i}]", name)
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
            _check_choice(f"metrics[{i}]", metric, METRICS)
        if "accuracy" in self.metrics:
            _check_name_field("labels", self.labels, "is needed for the 'accuracy' metric")
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

        opt, sch = self.optimizer, self.schedule
        return pb.TrainingSpecProto(
            loss=self.loss, trainable=list(self.trainable),
            optimizer=pb.OptimizerProto(
                name=opt.name, learning_rate=opt.learning_rate, momentum=opt.momentum,
                nesterov=opt.nesterov, beta1=opt.beta1, beta2=opt.beta2, epsilon=opt.epsilon,
                weight_decay=opt.weight_decay, clip_global_norm=opt.clip_global_norm),
            schedule=pb.ScheduleProto(
                kind=sch.kind, warmup_steps=sch.warmup_steps, step_size=sch.step_size,
                gamma=sch.gamma, min_lr=sch.min_lr, total_steps=sch.total_steps),
            batch_size=self.batch_size, epochs=self.epochs, seed=self.seed,
            drop_last=self.drop_last, metrics=list(self.metrics), labels=self.labels,
            predictions=self.predictions, data_map=dict(self.data_map))

    @classmethod
    def from_proto(cls, proto: pb.TrainingSpecProto) -> TrainingSpec:
        """The spec a ``TrainingSpecProto`` describes, absent fields taking their
        documented defaults.  Raises GraphError naming a field out of range."""
        opt, sch = proto.optimizer, proto.schedule
        optimizer = OptimizerSpec(
            name=opt.name or OptimizerSpec.name,
            learning_rate=_optional(opt, "learning_rate", OptimizerSpec.learning_rate),
            momentum=opt.momentum, nesterov=opt.nesterov,
            beta1=_optional(opt, "beta1", OptimizerSpec.beta1),
            beta2=_optional(opt, "beta2", OptimizerSpec.beta2),
            epsilon=_optional(opt, "epsilon", OptimizerSpec.epsilon),
            weight_decay=opt.weight_decay, clip_global_norm=opt.clip_global_norm)
        schedule = ScheduleSpec(
            kind=sch.kind or ScheduleSpec.kind, warmup_steps=sch.warmup_steps,
            step_size=sch.step_size, gamma=_optional(sch, "gamma", ScheduleSpec.gamma),
            min_lr=sch.min_lr, total_steps=sch.total_steps)
        return cls(
            loss=proto.loss, trainable=tuple(proto.trainable), optimizer=optimizer,
            schedule=schedule,
            batch_size=_optional(proto, "batch_size", TrainingSpec.batch_size),
            epochs=_optional(proto, "epochs", TrainingSpec.epochs), seed=proto.seed,
            drop_last=proto.drop_last,
            metrics=tuple(proto.metrics), labels=proto.labels, predictions=proto.predictions,
            data_map=dict(proto.data_map))

    # -- checks against a graph -------------------------------------------------
    def check_graph(self, graph: Graph) -> None:
        """Check that the tensors and parameters this spec names exist in ``graph``.

        Raises GraphError naming the field and the missing name.
        """
        for what, ref in (("loss", self.loss), ("predictions", self.predictions)):
            if ref and not _has_tensor(graph, ref):
                raise _fail(what, f"names {ref!r}, which is not a tensor of graph "
                                  f"'{graph.name}'")
        params = {n.name for n in graph.parameters()}
        for name in self.trainable:
            if name not in params:
                raise _fail("trainable", f"names {name!r}, which is not a parameter of graph "
                                         f"'{graph.name}'")
        placeholders = {n.name for n in graph.placeholders()}
        for what, name in [("labels", self.labels)] + [("data_map key", k)
                                                       for k in self.data_map]:
            if name and name not in placeholders:
                raise _fail(what, f"names {name!r}, which is not a placeholder of graph "
                                  f"'{graph.name}'")


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


def _has_tensor(graph: Graph, ref: str) -> bool:
    node, index = parse_ref(ref)
    return node in graph and index < len(graph.node(node).types)
