"""Watching a metric for improvement: shared by early stopping, the
reduce-on-plateau schedule and the best checkpoint.

A value improves on the best so far when it is lower by more than
``min_delta`` (mode "min") or higher by more than ``min_delta`` (mode "max"),
as in Keras.  The mode left empty is "min" for names ending in "loss", "mae" or
"error" and "max" otherwise (accuracy, f1, r2 ...).

>>> m = Monitor("val_loss", min_delta=0.1)
>>> [m.update(v) for v in (1.0, 0.95, 0.8, 0.85)], m.best, m.wait
([True, False, True, False], 0.8, 1)
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import TrainingError


def infer_mode(monitor: str, mode: str = "") -> str:
    """``mode`` if given, else "min" for a loss or an error and "max" otherwise."""
    if mode:
        return mode
    return "min" if monitor.endswith(("loss", "mae", "error")) else "max"


class Monitor:
    """The best value of ``monitor`` seen so far and how many updates since it."""

    def __init__(self, monitor: str, mode: str = "", min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = infer_mode(monitor, mode)
        self.min_delta = float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step = 0
        self.wait = 0

    def value(self, record: dict[str, Any]) -> float | None:
        """The monitored value in ``record``, None when the record lacks it (a step
        record without validation); TrainingError when it never can have it."""
        return record.get(self.monitor)

    def missing(self, record: dict[str, Any]) -> TrainingError:
        keys = ", ".join(repr(k) for k in record if k.startswith(("train_", "val_"))) or "none"
        return TrainingError(
            f"cannot monitor {self.monitor!r}: the records have no such key "
            f"(they have {keys}); monitor one of those, or give validation "
            "data (--val) for a 'val_' metric"
        )

    def update(self, value: float, step: int = 0) -> bool:
        """Count ``value``; True when it improves on the best (which it becomes)."""
        if self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.best_step, self.wait = float(value), step, 0
        else:
            self.wait += 1
        return better

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps (the best only once there is one: no infinities)."""
        state = {"best_step": float(self.best_step), "wait": float(self.wait)}
        if math.isfinite(self.best):
            state["best"] = self.best
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", self.best))
        self.best_step = int(state.get("best_step", 0))
        self.wait = int(state.get("wait", 0))
