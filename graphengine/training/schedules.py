"""Learning-rate schedules: the learning rate as a function of the step.

``step`` counts updates from 0 (the first update uses ``schedule(0)``), so a
schedule depends on nothing but the step, and a resumed run gets the same
rates as an uninterrupted one.

* ``constant``: ``lr`` throughout.
* ``step``: ``lr * gamma ** (step // step_size)``.
* ``cosine``: half a cosine from ``lr`` down to ``min_lr`` at ``total_steps``
  (Loshchilov and Hutter, 2017, without restarts), held at ``min_lr`` after.

Each can start with a linear warm-up over ``warmup_steps`` updates: update
``k < warmup_steps`` uses ``(k + 1) / warmup_steps`` of the rate, so the rate
climbs from ``lr / warmup_steps`` to ``lr`` (not from 0: an update at rate 0
would be wasted).  A cosine schedule begins its decay when the warm-up ends.

>>> s = Cosine(0.1, total_steps=10, warmup_steps=2)
>>> [round(s(k), 4) for k in (0, 1, 2, 6, 10)]
[0.05, 0.1, 0.1, 0.05, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import TrainingError
from ..training_spec import ScheduleSpec


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
        if self.step_size < 1:
            raise TrainingError(f"step schedule: step_size must be >= 1, got {self.step_size}")

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
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise TrainingError(f"cosine schedule: need total_steps >= 1 and warmup_steps >= 0, "
                                f"got {self.total_steps} and {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * _warmup_factor(step, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(spec: ScheduleSpec, lr: float, run_steps: int) -> Constant | Step | Cosine:
    """The schedule ``spec`` describes for base rate ``lr``; ``run_steps`` (epochs times
    batches per epoch) is the cosine's length when ``spec.total_steps`` is 0.

    >>> make_schedule(ScheduleSpec("step", step_size=2, gamma=0.5), 1.0, 10)(4)
    0.25
    """
    if spec.kind == "cosine":
        return Cosine(lr, spec.total_steps or run_steps, spec.warmup_steps, spec.min_lr)
    if spec.kind == "step":
        return Step(lr, spec.step_size, spec.gamma, spec.warmup_steps)
    return Constant(lr, spec.warmup_steps)
