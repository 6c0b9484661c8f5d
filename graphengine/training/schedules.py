"""Learning-rate schedules: the learning rate as a function of the step.

``step`` counts updates from 0 (the first update uses ``schedule(0)``), so a
schedule depends on nothing but the step, and a resumed run gets the same
rates as an uninterrupted one.

* ``constant``: ``lr`` throughout.
* ``step``: ``lr * gamma ** (step // step_size)``.
* ``cosine``: half a cosine from ``lr`` down to ``min_lr`` at ``total_steps``
  (Loshchilov and Hutter, 2017, without restarts), held at ``min_lr`` after.
* ``exponential``: ``lr * gamma ** (step / step_size)``, a smooth decay by
  ``gamma`` every ``step_size`` steps.
* ``polynomial``: ``min_lr + (lr - min_lr) * (1 - step / total_steps) ** power``,
  held at ``min_lr`` after ``total_steps`` (power 1: linear).
* ``one_cycle``: Smith's 1cycle, as PyTorch's ``OneCycleLR`` (cosine annealing,
  two phases): from ``lr / div_factor`` up to ``lr`` at step ``pct_start *
  total_steps - 1``, then down to ``lr / (div_factor * final_div_factor)`` at
  step ``total_steps - 1``, each half a cosine.  With ``cycle_momentum`` (the
  default) the momentum (SGD's, or Adam's beta1) moves the other way, from
  ``max_momentum`` down to ``base_momentum`` at the peak and back, as
  PyTorch's ``cycle_momentum=True``; the trainer sets it before each update.
* ``piecewise``: ``values[i]`` where ``i`` is how many ``boundaries`` are <= step
  (absolute rates, as Keras's ``PiecewiseConstantDecay``; ``lr`` is not used).
* ``reduce_on_plateau``: ``lr`` times ``gamma`` for each plateau of the
  monitored metric (``plateau_patience`` validations in a row without an
  improvement larger than ``plateau_min_delta``), never below ``min_lr``
  (Keras's ``ReduceLROnPlateau``); the ``plateau_cooldown`` validations after a
  reduction do not count (PyTorch's ``cooldown``).  It depends on the metrics,
  not on the step alone, so its state goes into checkpoints.

The range of every setting is checked in one place,
:class:`~graphengine.training_spec.ScheduleSpec`; a schedule built directly in
Python is checked by the same code.

Each can start with a linear warm-up over ``warmup_steps`` updates: update
``k < warmup_steps`` uses ``(k + 1) / warmup_steps`` of the rate, so the rate
climbs from ``lr / warmup_steps`` to ``lr`` (not from 0: an update at rate 0
would be wasted).  A cosine schedule begins its decay when the warm-up ends.

>>> s = Cosine(0.1, total_steps=10, warmup_steps=2)
>>> [round(s(k), 4) for k in (0, 1, 2, 6, 10)]
[0.05, 0.1, 0.1, 0.05, 0.0]
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import GraphError, TrainingError
from ..training_spec import ScheduleSpec
from .monitor import Monitor


def _check(kind: str, **fields: Any) -> None:
    """Check a schedule's settings with the spec's rules (TrainingError naming the field)."""
    try:
        ScheduleSpec(kind, **fields)
    except GraphError as exc:
        raise TrainingError(str(exc)) from None
    # A spec's total_steps of 0 means "the whole run", which make_schedule resolves;
    # a schedule object needs the number itself.
    if fields.get("total_steps", 1) < 1:
        raise TrainingError(
            f"{kind} schedule: total_steps must be >= 1, got {fields['total_steps']} (0 "
            "means the whole run only in a training spec)"
        )


def _warmup_factor(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


@dataclass(frozen=True)
class Constant:
    """The same learning rate at every step (after the warm-up)."""

    lr: float
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        return self.lr * _warmup_factor(step, self.warmup_steps)


@dataclass(frozen=True)
class Step:
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps."""

    lr: float
    step_size: int
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check("step", step_size=self.step_size, gamma=self.gamma, warmup_steps=self.warmup_steps)

    def __call__(self, step: int) -> float:
        decayed = self.lr * self.gamma ** (step // self.step_size)
        return decayed * _warmup_factor(step, self.warmup_steps)


@dataclass(frozen=True)
class Cosine:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``total_steps`` (held after)."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check(
            "cosine",
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            min_lr=self.min_lr,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * _warmup_factor(step, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Exponential:
    """``lr * gamma ** (step / step_size)``, after the warm-up factor."""

    lr: float
    step_size: int
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check(
            "exponential",
            step_size=self.step_size,
            gamma=self.gamma,
            warmup_steps=self.warmup_steps,
        )

    def __call__(self, step: int) -> float:
        decayed = self.lr * self.gamma ** (step / self.step_size)
        return decayed * _warmup_factor(step, self.warmup_steps)


@dataclass(frozen=True)
class Polynomial:
    """Decay from ``lr`` to ``min_lr`` as ``(1 - step / total_steps) ** power``."""

    lr: float
    total_steps: int
    power: float = 1.0
    min_lr: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check(
            "polynomial",
            total_steps=self.total_steps,
            power=self.power,
            min_lr=self.min_lr,
            warmup_steps=self.warmup_steps,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * _warmup_factor(step, self.warmup_steps)
        left = max(0.0, 1.0 - min(step, self.total_steps) / max(self.total_steps, 1))
        return self.min_lr + (self.lr - self.min_lr) * left**self.power


@dataclass(frozen=True)
class OneCycle:
    """PyTorch's ``OneCycleLR`` (``anneal_strategy="cos"``, two phases) with
    ``max_lr = lr``; :meth:`momentum` is its cycled momentum (None without
    ``cycle_momentum``).

    >>> s = OneCycle(1.0, total_steps=10, pct_start=0.5)
    >>> round(s(4), 3), round(s.momentum(0), 3), round(s.momentum(4), 3), round(s.momentum(9), 3)
    (1.0, 0.95, 0.85, 0.95)
    """

    lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self) -> None:
        _check(
            "one_cycle",
            total_steps=self.total_steps,
            pct_start=self.pct_start,
            div_factor=self.div_factor,
            final_div_factor=self.final_div_factor,
            cycle_momentum=self.cycle_momentum,
            base_momentum=self.base_momentum,
            max_momentum=self.max_momentum,
        )

    def _phase(self, step: int) -> tuple[bool, float]:
        """(rising, fraction of that phase done) at ``step``, as OneCycleLR's phases:
        rising until step pct_start * total_steps - 1, falling until total_steps - 1."""
        peak = float(self.pct_start * self.total_steps) - 1
        end = float(self.total_steps - 1)
        if step <= peak:
            return True, step / peak if peak > 0 else 1.0
        span = end - peak
        return False, min(1.0, (step - peak) / span) if span > 0 else 1.0

    def __call__(self, step: int) -> float:
        first = self.lr / self.div_factor
        rising, fraction = self._phase(step)
        if rising:
            return _cos_anneal(first, self.lr, fraction)
        return _cos_anneal(self.lr, first / self.final_div_factor, fraction)

    def momentum(self, step: int) -> float | None:
        """The momentum of ``step``: inverse to the rate (None: not cycled)."""
        if not self.cycle_momentum:
            return None
        rising, fraction = self._phase(step)
        low, high = self.base_momentum, self.max_momentum
        return _cos_anneal(high, low, fraction) if rising else _cos_anneal(low, high, fraction)


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)


@dataclass(frozen=True)
class Piecewise:
    """``values[i]`` from step ``boundaries[i - 1]`` on (``values[0]`` before the first)."""

    boundaries: tuple[int, ...]
    values: tuple[float, ...]
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check(
            "piecewise",
            boundaries=tuple(self.boundaries),
            values=tuple(self.values),
            warmup_steps=self.warmup_steps,
        )

    def __call__(self, step: int) -> float:
        rate = self.values[bisect.bisect_right(self.boundaries, step)]
        return rate * _warmup_factor(step, self.warmup_steps)


@dataclass
class ReduceOnPlateau:
    """``lr`` times ``gamma`` per plateau of ``monitor``, not below ``min_lr``.

    The trainer calls :meth:`observe` after each validation with the record; the
    rate of every later step follows.  A reduction comes after ``patience``
    validations in a row without improvement (Keras's count: PyTorch's
    ``patience=p`` is ``patience=p + 1`` here); the ``cooldown`` validations
    after it are not counted, as PyTorch's ``cooldown``.

    >>> s = ReduceOnPlateau(1.0, "val_loss", patience=1, gamma=0.5)
    >>> for loss in (1.0, 0.9, 0.9, 0.9):
    ...     s.observe({"val_loss": loss})
    >>> s(100)
    0.25
    >>> s = ReduceOnPlateau(1.0, "val_loss", patience=1, gamma=0.5, cooldown=2)
    >>> for loss in (1.0, 1.0, 1.0, 1.0, 1.0):
    ...     s.observe({"val_loss": loss})
    >>> s(100)
    0.25
    """

    lr: float
    monitor: str
    patience: int = 0
    gamma: float = 0.1
    min_lr: float = 0.0
    min_delta: float = 0.0
    mode: str = ""
    warmup_steps: int = 0
    cooldown: int = 0
    scale: float = 1.0
    _cooling: int = field(default=0, init=False, repr=False)
    _watch: Monitor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check(
            "reduce_on_plateau",
            plateau_monitor=self.monitor,
            plateau_patience=self.patience,
            gamma=self.gamma,
            min_lr=self.min_lr,
            plateau_min_delta=self.min_delta,
            plateau_mode=self.mode,
            warmup_steps=self.warmup_steps,
            plateau_cooldown=self.cooldown,
        )
        self._watch = Monitor(self.monitor, self.mode, self.min_delta)

    def __call__(self, step: int) -> float:
        return max(self.lr * self.scale, min(self.min_lr, self.lr)) * _warmup_factor(
            step, self.warmup_steps
        )

    def observe(self, record: dict[str, Any]) -> None:
        """Count a validation record; reduce the rate at the end of a plateau."""
        value = self._watch.value(record)
        if value is None:
            raise self._watch.missing(record)
        self._watch.update(value)  # the best follows improvements during a cooldown too
        if self._cooling:
            self._cooling -= 1
            self._watch.wait = 0
        if self._watch.wait >= max(self.patience, 1):
            self.scale *= self.gamma
            self._watch.wait = 0
            self._cooling = self.cooldown

    def state(self) -> dict[str, float]:
        return {"scale": self.scale, "cooling": float(self._cooling), **self._watch.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.scale = float(state.get("scale", 1.0))
        self._cooling = int(state.get("cooling", 0))
        self._watch.load_state(state)


Schedule = (
    Constant | Step | Cosine | Exponential | Polynomial | OneCycle | Piecewise | ReduceOnPlateau
)


def make_schedule(
    spec: ScheduleSpec, lr: float, run_steps: int, default_monitor: str = "val_loss"
) -> Schedule:
    """The schedule ``spec`` describes for base rate ``lr``; ``run_steps`` (epochs times
    batches per epoch) is the length of cosine, polynomial and one-cycle schedules
    when ``spec.total_steps`` is 0; ``default_monitor`` is watched by
    reduce-on-plateau when ``spec.plateau_monitor`` is empty.

    >>> make_schedule(ScheduleSpec("step", step_size=2, gamma=0.5), 1.0, 10)(4)
    0.25
    """
    total = spec.total_steps or run_steps
    if spec.kind == "cosine":
        return Cosine(lr, total, spec.warmup_steps, spec.min_lr)
    if spec.kind == "step":
        return Step(lr, spec.step_size, spec.gamma, spec.warmup_steps)
    if spec.kind == "exponential":
        return Exponential(lr, spec.step_size, spec.gamma, spec.warmup_steps)
    if spec.kind == "polynomial":
        return Polynomial(lr, total, spec.power, spec.min_lr, spec.warmup_steps)
    if spec.kind == "one_cycle":
        return OneCycle(
            lr,
            total,
            spec.pct_start,
            spec.div_factor,
            spec.final_div_factor,
            spec.cycle_momentum,
            spec.base_momentum,
            spec.max_momentum,
        )
    if spec.kind == "piecewise":
        return Piecewise(spec.boundaries, spec.values, spec.warmup_steps)
    if spec.kind == "reduce_on_plateau":
        return ReduceOnPlateau(
            lr,
            spec.plateau_monitor or default_monitor,
            spec.plateau_patience,
            spec.gamma,
            spec.min_lr,
            spec.plateau_min_delta,
            spec.plateau_mode,
            spec.warmup_steps,
            spec.plateau_cooldown,
        )
    return Constant(lr, spec.warmup_steps)
