"""Callbacks: code the training loop calls at fixed points, as in Keras and
PyTorch Lightning.

Subclass :class:`Callback` and override the hooks you need; pass instances as
``ge.train(..., callbacks=[...])`` or ``Trainer(..., callbacks=[...])``.  A hook
may call ``trainer.stop()`` to end the run after the current step.  Two come
ready-made, and the training spec can ask for them from a file too
(``early_stopping``, ``best_monitor``):

* :class:`EarlyStopping` stops when a monitored record key (``val_loss``,
  ``val_accuracy`` ...) has not improved by more than ``min_delta`` for
  ``patience`` validations;
* :class:`BestCheckpoint` writes the model with the parameters of the best
  validation so far to a file (``best.pb``), atomically, each time it improves.

Validation happens at each epoch's end and, with ``validate_every=N``, every N
steps; without validation data the monitored records are the epoch records
(``train_loss`` ...).

>>> import numpy as np, graphengine as ge
>>> g = ge.Graph()
>>> x = g.placeholder("x", (None,))
>>> w = g.parameter("w", np.zeros((), np.float32))
>>> g.set_training(ge.mean((x * w - x) ** 2.0), learning_rate=0.5, epochs=50)
>>> stop = EarlyStopping(monitor="train_loss", patience=2, min_delta=1e-3)
>>> result = ge.train(g, {"x": np.ones(8, np.float32)}, callbacks=[stop], progress=False)
>>> result.stopped, result.steps < 50
(True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .monitor import Monitor

if TYPE_CHECKING:
    from .trainer import StepInfo, Trainer, TrainResult


class Callback:
    """Hooks called by :class:`~graphengine.training.Trainer`; override what you need.

    ``on_train_begin`` before the first step; ``on_step`` after each update;
    ``on_validation`` after each validation (mid-epoch ones and the epoch's,
    with the record: ``val_loss`` ...); ``on_epoch`` after each epoch with the
    record written to the metrics log; ``on_train_end`` with the result.  A
    callback with state that must survive a resume gives ``state()`` (a dict of
    numbers) and ``load_state(state)``, and for arrays ``arrays()`` and
    ``load_arrays(arrays)`` (keyed by parameter name, checked against the graph).
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first step (also after resuming)."""

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        """After each update."""

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each validation, with its record."""

    def on_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each epoch, with the record written to the metrics log."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """When the run ends (its last epoch done, or stopped)."""

    def state(self) -> dict[str, float]:
        """Numbers a checkpoint keeps for this callback (none by default)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def arrays(self) -> dict[str, np.ndarray]:
        """Parameter values a checkpoint keeps for this callback, by parameter
        name (none by default)."""
        return {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`arrays` returned (each already checked to have
        its parameter's shape and dtype)."""


class _Watching(Callback):
    """A callback that watches one record key through a :class:`Monitor` (made at the
    start of training, when the default key is known), and keeps its state in
    checkpoints.  Subclasses set ``monitor``, ``mode``, ``min_delta`` and ``_watch``."""

    monitor: str
    mode: str
    min_delta: float
    _watch: Monitor | None

    @property
    def best(self) -> float | None:
        return self._watch.best if self._watch is not None else None

    @property
    def best_step(self) -> int:
        return self._watch.best_step if self._watch is not None else 0

    def on_train_begin(self, trainer: Trainer) -> None:
        if self._watch is None:
            self._watch = Monitor(
                self.monitor or trainer.default_monitor, self.mode, self.min_delta
            )

    def _watched(self, record: dict[str, Any]) -> float:
        """The watched value in ``record``; our error when it is missing."""
        assert self._watch is not None
        value = self._watch.value(record)
        if value is None:
            raise self._watch.missing(record)
        return value

    def state(self) -> dict[str, float]:
        return self._watch.state() if self._watch is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if self._watch is not None:
            self._watch.load_state(state)


class EarlyStopping(_Watching):
    """Stop training when ``monitor`` stops improving (Keras's ``EarlyStopping``).

    Args:
        monitor: the record key watched ("" : "val_loss" with validation data,
            else "train_loss").
        patience: validations without improvement before stopping (>= 1).
        min_delta: the smallest change that counts as an improvement.
        mode: "min", "max" or "" (from the name: min for a loss or an error).
        restore_best: put back the best parameters when the run ends.

    ``stopped_step`` is the step at which it stopped (0: it did not), ``best``
    and ``best_step`` the best value and when it was seen.
    """

    def __init__(
        self,
        monitor: str = "",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "",
        restore_best: bool = False,
    ) -> None:
        if patience < 1:
            from ..errors import TrainingError

            raise TrainingError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self.stopped_step = 0
        self._watch: Monitor | None = None
        self._best_values: dict[str, np.ndarray] | None = None

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = self._watched(record)
        if self._watch.update(value, record["step"]):
            if self.restore_best:
                self._best_values = {k: v.copy() for k, v in trainer.graph.values.items()}
        elif self._watch.wait >= self.patience:
            self.stopped_step = record["step"]
            trainer.notice(
                f"early stopping at step {record['step']}: {self._watch.monitor} has "
                f"not improved on {self._watch.best:.6g} (step "
                f"{self._watch.best_step}) for {self.patience} validation(s)"
            )
            trainer.stop()

    def arrays(self) -> dict[str, np.ndarray]:
        # The best parameters travel in checkpoints, so a resumed run can still
        # restore them (the best value and step travel in state()).
        return dict(self._best_values) if self.restore_best and self._best_values else {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if self.restore_best and arrays:
            self._best_values = {k: v.copy() for k, v in arrays.items()}

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self.restore_best and self._best_values is not None:
            for name, value in self._best_values.items():
                trainer.graph.values[name][...] = value
            trainer.notice(
                f"restored the parameters of step {self.best_step} "
                f"({self._watch.monitor if self._watch else ''} {self.best:.6g})"
            )


class BestCheckpoint(_Watching):
    """Write the model with the best parameters so far to ``path`` (a model file,
    ``best.pb`` by convention), atomically, after each validation that improves
    ``monitor``.  ``best`` and ``best_step`` say which it holds."""

    def __init__(
        self, path: str | os.PathLike, monitor: str = "", mode: str = "", min_delta: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self._watch: Monitor | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        super().on_train_begin(trainer)
        from ..errors import TrainingError
        from ..output_files import check_writable

        # Now, not at the first improvement, which may come after hours of training.
        check_writable(self.path, "best model", "best_path (--best)", TrainingError)

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = self._watched(record)
        if self._watch.update(value, record["step"]):
            from ..serialize import save

            graph = trainer.graph
            previous = graph.training
            graph.training = trainer.spec
            graph.metadata["best_step"] = str(record["step"])
            graph.metadata["best_" + self._watch.monitor] = repr(float(value))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                save(graph, self.path)  # atomic: temporary file, fsync, rename
            except OSError as exc:  # a full disk: the previous best.pb is as it was
                from ..errors import TrainingError

                kept = trainer._last_checkpoint
                then = f"continue with --resume {kept.parent}" if kept else "train again"
                raise TrainingError(
                    f"cannot write best model '{self.path}' ({exc.strerror or exc}) at step "
                    f"{record['step']}; "
                    + (
                        f"the last checkpoint, '{kept}', is intact"
                        if kept
                        else "no checkpoint was written"
                    )
                    + f". Free space on that disk, then {then}"
                ) from None
            finally:
                graph.training = previous
                graph.metadata.pop("best_step", None)
                graph.metadata.pop("best_" + self._watch.monitor, None)
