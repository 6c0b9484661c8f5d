"""A one-line progress bar for terminals.

It draws on the given stream only when that stream is a terminal (and not
quiet), redrawing at most ten times a second, so it costs nothing measurable
per step and writes nothing into logs or pipes.

    epoch 2/10  45/90 [##########----------] step 135  loss 0.3121  5230 ex/s  ETA 0:04

The ETA is the epoch's: the batches left at the mean time per batch so far.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO


class ProgressBar:
    """Progress through ``total`` steps of one epoch, with the latest loss and the
    throughput in examples per second.

    >>> bar = ProgressBar(10, "epoch 1/1", enabled=False)
    >>> bar.update(5, step=5, loss=0.25, examples=160)
    >>> bar.close()
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.total = total
        self.label = label
        self.min_interval = min_interval
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._examples = 0
        self._drawn = False

    def update(self, done: int, *, step: int, loss: float, examples: int) -> None:
        """Record that ``done`` of ``total`` batches are finished; ``examples`` is
        the size of the batch just finished.  Redraws when due."""
        self._examples += examples
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        elapsed = max(now - self._start, 1e-9)
        rate = self._examples / elapsed
        eta = format_seconds(elapsed / max(done, 1) * (self.total - done))
        self._draw(f"step {step}  loss {loss:.4g}  {rate:,.0f} ex/s  ETA {eta}", done)

    def _draw(self, status: str, done: int) -> None:
        columns = shutil.get_terminal_size((80, 20)).columns
        counter = f"{done}/{self.total}"
        width = max(10, min(30, columns - len(self.label) - len(counter) - len(status) - 8))
        filled = width * done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.label}  {counter} [{bar}] {status}"[: columns - 1]
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar so the next line (an epoch summary) starts clean."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration.

    >>> format_seconds(75.4), format_seconds(3725)
    ('1:15', '1:02:05')
    """
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
