"""Timing helpers shared by the benchmarks in tools/ (run them as scripts:
``python tools/bench_*.py``, which puts this folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls of ``fn`` in seconds, and its last result.

    The minimum is the figure least disturbed by other work on a shared machine.
    """
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
