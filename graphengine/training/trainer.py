"""The training loop: compile once, then per step feed a batch, run the plan of
the gradient graph, and update the parameters in place.

:class:`Trainer` builds the gradient graph of the spec's loss with respect to
the trained parameters and compiles one plan for it (and one for evaluation)
when it is made; a step does no graph work.  The forward graph and the gradient
graph share one dict of parameter values, so the optimizer's in-place updates
are seen by both, and ``graph.values`` holds the trained values at the end.
With plain SGD, the plan updates large weights itself and the optimizer's
parameters are packed into one array (:mod:`.folded_sgd`): ``graph.values``
then holds views of it, and arrays taken from it before training no longer
follow the updates.

Every random draw depends only on the seed and counters: the example order of
epoch ``e`` on ``(seed, e)``, the random ops of step ``s`` (dropout) on
``(seed << 32) + s``.  So the seed and the counters are the whole RNG state,
and a run resumed from a checkpoint ends with the same parameters, bit for
bit, as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..compiler import prune_to
from ..errors import TrainingError, TrainingInterrupted
from ..executor import Plan, compile_plan
from ..gradients import GradientWarning, gradients
from ..graph import Graph, Node, make_ref, parse_ref, require_graph
from ..passes import optimize
from ..training_spec import TrainingSpec
from . import checkpoint as ckpt_io
from .callbacks import BestCheckpoint, Callback, EarlyStopping
from .data import BatchFeeder, DataLike, as_dataset, batch_bounds, epoch_order, fixed_batch_size
from .evaluate import Evaluator
from .folded_sgd import FoldedSGD
from .losses import check_class_labels
from .metrics import EpochMetrics, MetricsLog
from .optimizers import clip_scale, cycled_momentum, global_norm, optimizer_from_spec
from .progress import ProgressBar
from .schedules import ReduceOnPlateau, make_schedule
from .selection import describe_names, select_parameters
from .settings import describe_changes, flatten, resolve_spec

if TYPE_CHECKING:  # pragma: no cover
    from .distributed import DataParallel


@dataclass
class StepInfo:
    """What a step callback sees.  ``step`` counts updates done (1 after the first);
    ``epoch`` and ``batch`` count from 1."""

    step: int
    epoch: int
    batch: int
    batch_size: int
    loss: float
    learning_rate: float


@dataclass
class TrainResult:
    """What a run produced: the graph (its ``values`` trained), the spec used, one
    record per epoch (as in the metrics log), every validation record, the
    number of updates, whether the run ended before its last epoch (early
    stopping or a callback stopped it), and the best monitored value with its
    step (when validations were watched)."""

    graph: Graph
    spec: TrainingSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    stopped: bool = False
    best: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty when no epoch ended)."""
        return self.history[-1] if self.history else {}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: steps, epochs, stopped, seconds, the final
        record's metrics and the best (what ``graphengine train --json`` prints)."""
        final = {k: v for k, v in self.final.items() if k.startswith(("train_", "val_"))}
        if self.validations:
            final.update({k: v for k, v in self.validations[-1].items() if k.startswith("val_")})
        return {
            "steps": self.steps,
            "epochs": len(self.history),
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "final": final,
            "best": self.best,
        }


@dataclass
class _RunState:
    """Where a run is: updates done, epochs done, examples of the current epoch's
    ``order`` consumed, and the running metric sums of that epoch."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    order: np.ndarray | None = None
    sums: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Train ``graph`` on ``data`` as its training spec says, with ``settings`` laid
    over the spec (see :func:`graphengine.training.settings.resolve_spec`).

    Args:
        graph: the graph to train; its parameter values are updated in place.
        data: an ``.npz`` path, a dict of arrays or a :class:`~.data.Dataset`.
        val: validation data (same forms), evaluated after each epoch (and every
            ``validate_every`` steps, a spec setting).
        val_map: placeholder -> array names for ``val``, over the spec's data_map
            (for a file that holds both splits under different names).
        callbacks: :class:`Callback` objects.
        checkpoint_dir: where to write checkpoints (None: none are written).
        checkpoint_every: also write one every this many steps (0: at epoch ends only).
        keep_checkpoints: how many of the newest checkpoints to keep (0: all).
        best_path: where to write the model with the best parameters (default:
            ``best.pb`` in ``checkpoint_dir`` when there is one; None otherwise).
        emergency_dir: where an interrupted run (Ctrl-C) writes its checkpoint when
            there is no ``checkpoint_dir`` (None: nowhere).
        log: path of the JSON-lines metrics log, one record per epoch, per
            validation and every ``log_every`` steps (None: none).
        progress: draw a progress bar and print epoch lines (None: the bar only
            when ``stream`` is a terminal; False: print nothing).
        stream: where the bar and messages go (default stderr).
        parallel: train as one process of a data-parallel MPI job
            (:class:`~.distributed.DataParallel`); only rank 0 writes checkpoints,
            the log and messages.
        **settings: training settings over the spec (``learning_rate=0.1`` ...).

    Raises TrainingError when the data do not fit the placeholders (naming the
    array and the placeholder) or the spec names what the graph lacks.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None,))
    >>> w = g.parameter("w", np.zeros((), np.float32))
    >>> loss = ge.mean((x * w - x * 3.0) ** 2.0)
    >>> data = {"x": np.linspace(-1, 1, 64, dtype=np.float32)}
    >>> _ = Trainer(g, data, loss=loss.name, learning_rate=0.5, epochs=20,
    ...             progress=False).fit()
    >>> round(float(g.values["w"]), 3)
    3.0
    """

    def __init__(
        self,
        graph: Graph,
        data: DataLike,
        *,
        val: DataLike | None = None,
        val_map: Mapping[str, str] | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 3,
        best_path: str | os.PathLike | None = "",
        emergency_dir: str | os.PathLike | None = None,
        log: str | os.PathLike | None = None,
        progress: bool | None = None,
        stream: IO[str] | None = None,
        parallel: DataParallel | None = None,
        **settings: Any,
    ) -> None:
        require_graph(graph, "ge.Trainer")
        self.parallel = parallel
        if parallel is not None:
            checkpoint_dir, log, progress, stream = parallel.outputs(
                checkpoint_dir, log, progress, stream
            )
        self.graph = graph
        self.spec = spec = resolve_spec(graph, **settings)
        self.callbacks = list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = _count(
            "checkpoint_every", checkpoint_every, "0 checkpoints at epoch ends only"
        )
        self.keep_checkpoints = _count("keep_checkpoints", keep_checkpoints, "0 keeps all")
        self.emergency_dir = Path(emergency_dir) if emergency_dir is not None else None
        self.log = MetricsLog(log) if log is not None else None
        self.stream = stream if stream is not None else sys.stderr
        self.progress = progress
        self.graph_hash = ckpt_io.graph_fingerprint(graph)
        #: Seconds to hold a finished temporary checkpoint before its rename (tests
        #: use it to kill a run in the middle of a write).
        self._checkpoint_pause = 0.0
        self._stop = False
        self._interrupted = False
        self._last_checkpoint: Path | None = None
        self._saved_at = -1  # the step of the last checkpoint written or resumed from
        self._optimizer_first_step = 0  # the step the optimizer's state began at
        self._result: TrainResult | None = None

        self.param_names = self._trained_parameters()
        _own_values(graph)
        self.evaluator = Evaluator(graph, spec)
        self.comparison = self.evaluator.comparison
        self._compile()
        self.train_data = as_dataset(data, self._feeds, spec.data_map, "training data")
        check_class_labels(graph, self.train_data)
        self.val_data = (
            self.evaluator.bind(val, "validation data", val_map) if val is not None else None
        )
        if (
            self.val_data is not None
            and self.val_data.fingerprint() == self.train_data.fingerprint()
        ):
            # Easy to do by accident: a spec's data_map picks the training arrays from
            # a file that holds both splits.
            self._notice(
                "note: the validation data are the training data (the same "
                "arrays); map the validation arrays to the placeholders"
            )
        fixed = fixed_batch_size(self._feeds)
        if fixed is not None and fixed != spec.batch_size:
            raise TrainingError(
                f"placeholders fix the batch size to {fixed} on axis 0, but "
                f"the batch size is {spec.batch_size}; set batch_size={fixed} "
                "or give the placeholders a symbolic batch dim (None)"
            )
        # A placeholder with a fixed batch dim takes no smaller batch.
        self.drop_last = spec.drop_last or fixed is not None
        size, b = self.train_data.size, spec.batch_size
        self.steps_per_epoch = len(batch_bounds(size, b, self.drop_last))
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"the training data has {size} examples, fewer than one batch "
                f"of {b}, and the last partial batch is dropped; lower the "
                "batch size"
            )
        self.optimizer = optimizer_from_spec(spec.optimizer, cycled_momentum(spec.schedule))
        # The optimizer updates what the plan does not (see _plain_sgd).
        self.optimizer.setup({name: graph.values[name] for name in self._fetched_params})
        #: The record key that monitors watch when they are not told: the validation
        #: loss with validation data, else the epoch's training loss.
        self.default_monitor = "val_loss" if self.val_data is not None else "train_loss"
        self.schedule = make_schedule(
            spec.schedule,
            spec.optimizer.learning_rate,
            spec.epochs * self.steps_per_epoch,
            self.default_monitor,
        )
        #: The momentum of each step when the schedule cycles it (one-cycle).
        self._momentum = getattr(self.schedule, "momentum", None)
        self._add_spec_callbacks(best_path)

    # -- setting up --------------------------------------------------------------
    def _trained_parameters(self) -> list[str]:
        graph, spec = self.graph, self.spec
        try:
            if spec.trainable:
                names = select_parameters(graph, spec.trainable, "trainable")
            else:
                names = [n.name for n in graph.parameters(trainable=True)]
            if spec.frozen:
                frozen = set(select_parameters(graph, spec.frozen, "frozen"))
                names = [n for n in names if n not in frozen]
        except Exception as exc:  # GraphError: a pattern that selects nothing
            raise TrainingError(str(exc)) from None
        # Running statistics follow the batches (see _update_running_stats); the
        # optimizer must not move them too, even when they are marked trainable.
        statistics = {name for node in graph.nodes for name in _running_stats(node)}
        named = statistics & set(spec.trainable)  # asked for by name, not by scope or glob
        if named or (statistics & set(names) and not spec.trainable):
            ops = sorted(
                {node.op for node in graph.nodes if set(_running_stats(node)) & set(names)}
            )
            self._notice(
                "not training "
                + ", ".join(repr(n) for n in names if n in statistics)
                + f": {'/'.join(ops)} running statistics are updated from the "
                "batches; mark them trainable=False"
            )
        names = [n for n in names if n not in statistics]
        for name in names:
            dtype = graph.node(name).types[0].dtype
            if dtype.kind != "f":
                raise TrainingError(
                    f"parameter '{name}' has dtype {dtype}; only float parameters can be trained"
                )
        if not names:
            everything = [n.name for n in graph.parameters()]
            raise TrainingError(
                f"graph '{graph.name}' has no parameter to train (after "
                f"trainable={list(spec.trainable)}, frozen={list(spec.frozen)}); "
                f"mark some trainable, or select them with --trainable: "
                f"{describe_names(everything)}"
            )
        return names

    def _add_spec_callbacks(self, best_path: str | os.PathLike | None) -> None:
        """The early stopping and best checkpoint that the spec asks for; a best
        checkpoint goes to ``best.pb`` in the checkpoint folder by default."""
        spec = self.spec
        stop = spec.early_stopping
        if stop is not None and not any(isinstance(c, EarlyStopping) for c in self.callbacks):
            self.callbacks.append(
                EarlyStopping(
                    stop.monitor, stop.patience, stop.min_delta, stop.mode, stop.restore_best
                )
            )
        if best_path == "":
            best_path = self.checkpoint_dir / "best.pb" if self.checkpoint_dir else None
        if best_path is not None and not any(isinstance(c, BestCheckpoint) for c in self.callbacks):
            monitor = spec.best_monitor or (stop.monitor if stop is not None else "")
            mode = stop.mode if stop is not None and not spec.best_monitor else ""
            self.callbacks.append(BestCheckpoint(best_path, monitor, mode))

    def _compile(self) -> None:
        """Build the gradient graph and compile the training plan: it fetches the
        loss, the gradients, the batch statistics of batch_norm nodes and the
        predictions (for the metrics)."""
        graph, spec = self.graph, self.spec
        with warnings.catch_warnings():
            # A parameter the loss ignores gets a zero gradient; training says nothing.
            warnings.simplefilter("ignore", GradientWarning)
            self.grad_graph = (
                gradients(graph, spec.loss, self.param_names)
                if self.parallel is None
                else self.parallel.gradient_graph(graph, spec.loss, self.param_names)
            )
        self.grad_graph.values = graph.values  # one dict: updates reach the forward graph
        info = self.grad_graph.gradient
        if info.zero:
            # Left out of the updates, so that weight decay does not shrink them either.
            self._notice(
                f"note: the loss does not depend on {', '.join(map(repr, info.zero))}, "
                "so training leaves it as it is"
            )
            self.param_names = [p for p in self.param_names if p not in info.zero]
        self._batch_norms = _batch_norms(graph, prune_to(graph, [spec.loss]))
        fetches = [info.loss] + [info.grads[p] for p in self.param_names]
        for node in self._batch_norms:
            stats = [
                make_ref(node.name, node.opdef.outputs.index(update.batch))
                for update in node.opdef.state_updates
            ]
            fetches += stats if self.parallel is None else list(map(self.parallel.fetch, stats))
        if self.comparison is not None:
            fetches.append(self.comparison.predictions)
        # A fed seed gradient (a data-parallel share) is the trainer's, not the data's.
        self._feeds = [
            n
            for n in prune_to(self.grad_graph, fetches)
            if n.op == "placeholder" and n.name != info.seed
        ]
        #: Plain SGD's share of the plan (see _plain_sgd), or None.
        self._folded = (
            FoldedSGD({p: info.grads[p] for p in self.param_names}, info.loss)
            if self._plain_sgd()
            else None
        )
        self.train_plan: Plan = compile_training_plan(
            self.grad_graph,
            fetches,
            [n.name for n in self._feeds] + ([info.seed] if info.seed else []),
            folded=self._folded,
        )
        folded = set(self._folded.params) if self._folded is not None else set()
        #: The parameters whose gradients the plan fetches for the optimizer.
        self._fetched_params = [p for p in self.param_names if p not in folded]
        self._stat_scratch = {
            name: np.empty_like(graph.values[name])
            for node in self._batch_norms
            for name in _running_stats(node)
        }

    def _plain_sgd(self) -> bool:
        """Whether the updates are plain SGD, which the plan may fold and pack
        (:mod:`.folded_sgd`): SGD without momentum (cycled or not), weight decay
        or clipping, in a single process."""
        spec = self.spec
        opt = spec.optimizer
        return (
            self.parallel is None
            and opt.name == "sgd"
            and not opt.momentum
            and not opt.weight_decay
            and cycled_momentum(spec.schedule) is None
            and not opt.clip_value
            and not opt.clip_global_norm
        )

    # -- running -------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end after the current step (from a callback)."""
        self._stop = True

    def fit(self, resume: str | os.PathLike | None = None) -> TrainResult:
        """Train for the spec's epochs, or what is left of them after resuming from
        ``resume`` (a checkpoint file, or a folder whose newest checkpoint is used).

        Raises TrainingError on a non-finite loss (naming the step; the last
        checkpoint written stays as it was), on a checkpoint of another graph, on a
        checkpoint folder in use by another run, and on a fresh run (no ``resume``)
        in a folder that holds another run's checkpoints.
        """
        # One run per checkpoint folder: refuse a concurrent trainer, and a fresh
        # run that would prune and overwrite another run's checkpoints.
        root = self.parallel is None or self.parallel.is_root
        lock = (
            ckpt_io.FolderLock(self.checkpoint_dir).acquire(resume)
            if self.checkpoint_dir is not None and root
            else None
        )
        try:
            return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: str | os.PathLike | None) -> TrainResult:
        started = time.perf_counter()
        self._result = result = TrainResult(self.graph, self.spec)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        if resume is not None and (self.parallel is None or self.parallel.is_root):
            state = self._resume(resume)
        else:
            state = _RunState()
            if self.log is not None:
                self.log.truncate_after(0)  # a fresh run starts a fresh log
        if self.parallel is not None:
            state = self.parallel.synchronize(self, state)  # every process as rank 0
        params = {name: self.graph.values[name] for name in self._fetched_params}
        feeder = BatchFeeder(self.train_data, self.spec.batch_size)
        with _catch_interrupt(self):
            while state.epoch < self.spec.epochs and not self._stop:
                record = self._run_epoch(state, params, feeder)
                if record is not None:
                    result.history.append(record)
        result.steps = state.step
        result.stopped = state.epoch < self.spec.epochs
        result.seconds = time.perf_counter() - started
        if self.parallel is not None:
            self.parallel.finish(self)
        if self._interrupted:
            raise self._interruption(state)
        watchers = [c for c in self.callbacks if isinstance(c, BestCheckpoint)] + [
            c for c in self.callbacks if isinstance(c, EarlyStopping)
        ]
        best = next((c for c in watchers if c.best_step), None)
        if best is not None and best._watch is not None:
            result.best = {
                "monitor": best._watch.monitor,
                "value": best.best,
                "step": best.best_step,
            }
            if isinstance(best, BestCheckpoint):
                result.best["path"] = str(best.path)
        for callback in self.callbacks:
            callback.on_train_end(self, result)
        return result

    def _interruption(self, state: _RunState) -> TrainingInterrupted:
        """The error an interrupted run ends with, after saving where it stopped."""
        where = self._last_checkpoint if self._saved_at == state.step else None
        if where is None and self.emergency_dir is not None:
            self._save(state, self.emergency_dir)
            where = self._last_checkpoint
        if where is None:
            message = (
                f"interrupted at step {state.step}; no checkpoint folder was given, so "
                "the parameters were not saved (use --checkpoint-dir DIR)"
            )
        else:
            message = (
                f"interrupted at step {state.step} (epoch {state.epoch + 1}); "
                f"checkpoint written to '{where}'"
            )
        return TrainingInterrupted(message, checkpoint=where, step=state.step)

    def _run_epoch(
        self, state: _RunState, params: dict[str, np.ndarray], feeder: BatchFeeder
    ) -> dict[str, Any] | None:
        """Finish the epoch ``state`` is in; returns its record, or None when a
        callback stopped the run before the epoch ended."""
        spec = self.spec
        if state.order is None:
            state.order = epoch_order(spec.seed, state.epoch, self.train_data.size)
        totals = EpochMetrics(spec.metrics, self.comparison, state.sums)
        bounds = batch_bounds(self.train_data.size, spec.batch_size, self.drop_last, state.position)
        bar = ProgressBar(
            len(bounds),
            f"epoch {state.epoch + 1}/{spec.epochs}",
            stream=self.stream,
            enabled=self.progress,
        )
        started = time.perf_counter()
        try:
            for i, (start, stop) in enumerate(bounds):
                batch = start // spec.batch_size
                indices = state.order[start:stop]
                feeds = (
                    feeder.feeds(indices)
                    if self.parallel is None
                    else self.parallel.feeds(feeder, indices)
                )
                loss, predictions = self._step(params, feeds, state.step, state.epoch, batch)
                state.step += 1
                state.position = stop
                if predictions is None:
                    totals.add(stop - start, loss)
                elif self.parallel is None:
                    totals.add(stop - start, loss, predictions, feeds[self.comparison.labels])
                else:  # this process saw a slice of the batch: the sums are added up
                    mine = totals.batch_sums(predictions, feeds[self.comparison.labels])
                    totals.add(stop - start, loss, sums=self.parallel.total(mine))
                bar.update(i + 1, step=state.step, loss=loss, examples=stop - start)
                info = StepInfo(
                    state.step,
                    state.epoch + 1,
                    batch + 1,
                    stop - start,
                    loss,
                    self.schedule(state.step - 1),
                )
                for callback in self.callbacks:
                    callback.on_step(self, info)
                last = i == len(bounds) - 1
                self._log_step(state, info, validate=not last)
                if self._interrupted:
                    self._stop = True
                if self.parallel is not None:  # callbacks differ by rank (BestCheckpoint)
                    self._stop = self.parallel.agree_to_stop(self._stop)
                if last:
                    break  # the epoch-end checkpoint follows
                if self._stop or (
                    self.checkpoint_every and state.step % self.checkpoint_every == 0
                ):
                    state.sums = totals.sums()
                    self._save(state)
                if self._stop:
                    return None
        finally:
            bar.close()
        record = self._epoch_record(state, totals, time.perf_counter() - started)
        # The log record goes first: a resume from an earlier checkpoint drops it
        # (MetricsLog.truncate_after), so the log never holds an epoch twice.
        if self.log is not None:
            self.log.append(record)
        self._observe(record)
        state.epoch, state.position, state.order, state.sums = state.epoch + 1, 0, None, {}
        self._save(state)
        for callback in self.callbacks:
            callback.on_epoch(self, record)
        return record

    def _log_step(self, state: _RunState, info: StepInfo, validate: bool) -> None:
        """The per-step record every log_every steps, and a validation every
        validate_every steps (the epoch's last step validates with its record)."""
        spec = self.spec
        record: dict[str, Any] | None = None
        if spec.log_every and state.step % spec.log_every == 0:
            record = {
                "kind": "step",
                "epoch": state.epoch + 1,
                "step": state.step,
                "loss": info.loss,
                "learning_rate": info.learning_rate,
            }
        if (
            validate
            and spec.validate_every
            and self.val_data is not None
            and state.step % spec.validate_every == 0
        ):
            record = record or {"kind": "validation", "epoch": state.epoch + 1, "step": state.step}
            record.update(self._validate())
            self._notice(
                "  ".join(
                    [f"step {state.step}"]
                    + [f"{k} {v:.4g}" for k, v in record.items() if k.startswith("val_")]
                ),
                quiet_ok=True,
            )
        if record is None:
            return
        if self.log is not None:
            self.log.append(record)
        if any(k.startswith("val_") for k in record):
            self._observe(record)

    def _validate(self) -> dict[str, float]:
        assert self.val_data is not None
        val = (
            self.evaluator(self.val_data)
            if self.parallel is None
            else self.parallel.evaluate(self.evaluator, self.val_data)
        )
        return {f"val_{k}": v for k, v in val.items() if k != "examples"}

    def _observe(self, record: dict[str, Any]) -> None:
        """Hand a validation record (or, without validation data, an epoch record)
        to the monitors: the plateau schedule and the callbacks."""
        validated = any(k.startswith("val_") for k in record)
        if self.val_data is not None and not validated:
            return
        if validated and self._result is not None:
            self._result.validations.append(record)
        if isinstance(self.schedule, ReduceOnPlateau):
            self.schedule.observe(record)
        for callback in self.callbacks:
            callback.on_validation(self, record)

    def _step(
        self,
        params: dict[str, np.ndarray],
        feeds: dict[str, np.ndarray],
        step: int,
        epoch: int,
        batch: int,
    ) -> tuple[float, np.ndarray | None]:
        """One update; returns the batch's loss and its predictions (None when no
        metric needs them).  ``params`` are those the optimizer updates; the plan
        updates the folded ones itself, except when the loss is not finite."""
        seed = (self.spec.seed << 32) + step
        if self.parallel is not None:
            seed = self.parallel.run_seed(seed)
        lr = self.schedule(step)
        if self._folded is not None:
            self._folded.lr = lr
        out = self.train_plan.run(feeds, training=True, seed=seed)
        loss = float(out[0])
        if not math.isfinite(loss):
            self._fail_non_finite(f"the loss is {loss}", step, epoch, batch)
        n = len(self._fetched_params)
        grads = dict(zip(self._fetched_params, out[1 : 1 + n]))
        limit = self.spec.optimizer.clip_value
        if limit:
            grads = {name: np.clip(g, -limit, limit) for name, g in grads.items()}
        scale = 1.0
        clip = self.spec.optimizer.clip_global_norm
        if clip:
            norm = global_norm(grads)
            if not math.isfinite(norm):
                self._fail_non_finite(f"the gradient norm is {norm}", step, epoch, batch)
            scale = clip_scale(norm, clip)
        predictions = out[-1] if self.comparison is not None else None
        momentum = self._momentum(step) if self._momentum is not None else None
        if momentum is not None:
            self.optimizer.set_momentum(momentum)
        self.optimizer.step(params, grads, lr, scale)
        stats = sum(len(node.opdef.state_updates) for node in self._batch_norms)
        self._update_running_stats(out[1 + n : 1 + n + stats])
        return loss, predictions

    def _update_running_stats(self, stats: list[np.ndarray]) -> None:
        """running = momentum * running + (1 - momentum) * batch, for each state
        update an op declares (batch_norm's running statistics; StateUpdate)."""
        values = self.graph.values
        batch_stats = iter(stats)
        for node in self._batch_norms:
            for name, update in zip(_running_stats(node), node.opdef.state_updates):
                momentum = node.attrs[update.momentum]
                running, scratch = values[name], self._stat_scratch[name]
                running *= momentum
                np.multiply(next(batch_stats), 1.0 - momentum, out=scratch)
                running += scratch

    def _fail_non_finite(self, what: str, step: int, epoch: int, batch: int) -> None:
        kept = (
            f"the last checkpoint, '{self._last_checkpoint}', is intact"
            if self._last_checkpoint
            else "no checkpoint was written"
        )
        raise TrainingError(
            f"{what} at step {step + 1} (epoch {epoch + 1}, batch {batch + 1}); training "
            f"stopped before applying that step, and {kept}. Lower the learning rate "
            f"(now {self.schedule(step):g}), clip gradients (clip_global_norm), or check the "
            "data for inf or nan values"
        )

    def _epoch_record(
        self, state: _RunState, totals: EpochMetrics, seconds: float
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "epoch",
            "epoch": state.epoch + 1,
            "step": state.step,
            "learning_rate": self.schedule(state.step - 1),
        }
        record.update(totals.result(prefix="train_"))
        if self.val_data is not None:
            record.update(self._validate())
        record["seconds"] = round(seconds, 4)
        record["examples_per_second"] = round(totals.examples / max(seconds, 1e-9), 1)
        if self.progress is not False:
            parts = [f"epoch {record['epoch']}/{self.spec.epochs}", f"step {record['step']}"]
            parts += [f"{k} {v:.4g}" for k, v in record.items() if k.startswith(("train_", "val_"))]
            parts.append(f"{record['examples_per_second']:,.0f} ex/s")
            print("  ".join(parts), file=self.stream, flush=True)
        return record

    def evaluate(self, data: DataLike, batch_size: int | None = None) -> dict[str, float]:
        """The loss and metrics of the graph on ``data`` in inference mode."""
        return self.evaluator(data, batch_size)

    # -- checkpoints ---------------------------------------------------------------
    def _save(self, state: _RunState, folder: Path | None = None) -> None:
        folder = folder or self.checkpoint_dir
        if folder is None:
            return
        scalars, slots = self.optimizer.state()
        checkpoint = ckpt_io.Checkpoint(
            graph_hash=self.graph_hash,
            step=state.step,
            epoch=state.epoch,
            position=state.position,
            seed=self.spec.seed,
            params=dict(self.graph.values),
            optimizer={
                "name": self.spec.optimizer.name,
                "scalars": scalars,
                "slots": slots,
                "first_step": self._optimizer_first_step,
            },
            order=state.order,
            config=flatten(self.spec),
            metrics={**state.sums, **self._monitor_state()},
            data={"size": self.train_data.size, "fingerprint": self.train_data.fingerprint()},
            extra={
                f"{key}/{name}": value
                for key, callback in self._callback_keys().items()
                for name, value in callback.arrays().items()
            },
        )
        self._last_checkpoint = ckpt_io.write_checkpoint(
            folder,
            checkpoint,
            keep=self.keep_checkpoints,
            pause_before_rename=self._checkpoint_pause,
        )
        self._saved_at = state.step

    def _callback_keys(self) -> dict[str, Callback]:
        """The callbacks by the name their state has in checkpoints: the class
        name, with ``_1``, ``_2`` ... for repeats, so that a resumed run given its
        callbacks in another order or with others added (a command-line run
        resumed from Python) still gives each its own state."""
        keys: dict[str, Callback] = {}
        for callback in self.callbacks:
            base = type(callback).__name__
            key, n = base, 0
            while key in keys:
                n += 1
                key = f"{base}_{n}"
            keys[key] = callback
        return keys

    def _monitor_state(self) -> dict[str, float]:
        """The state of the plateau schedule and the callbacks, as checkpoint numbers
        under "state/..." keys beside the running metric sums."""
        out: dict[str, float] = {}
        parts: list[tuple[str, Any]] = list(self._callback_keys().items())
        if isinstance(self.schedule, ReduceOnPlateau):
            parts.append(("schedule", self.schedule))
        for prefix, part in parts:
            for key, value in part.state().items():
                out[f"state/{prefix}/{key}"] = float(value)
        return out

    def _load_monitor_state(self, saved: dict[str, float]) -> dict[str, float]:
        """Restore what _monitor_state saved; returns the other entries (the sums)."""
        parts: dict[str, Any] = dict(self._callback_keys())
        if isinstance(self.schedule, ReduceOnPlateau):
            parts["schedule"] = self.schedule
        grouped: dict[str, dict[str, float]] = {}
        sums = {}
        for key, value in saved.items():
            if key.startswith("state/"):
                _, prefix, name = key.split("/", 2)
                grouped.setdefault(prefix, {})[name] = value
            else:
                sums[key] = value
        for prefix, state in grouped.items():
            if prefix in parts:
                parts[prefix].load_state(state)
        return sums

    def _load_callback_arrays(self, extra: dict[str, np.ndarray]) -> None:
        """Give each callback the arrays it kept (checked by _check_checkpoint)."""
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key, value in extra.items():
            prefix, name = key.split("/", 1)
            grouped.setdefault(prefix, {})[name] = value
        for key, callback in self._callback_keys().items():
            callback.load_arrays(grouped.get(key, {}))

    def _resume(self, path: str | os.PathLike) -> _RunState:
        """Restore parameters, optimizer state and position from a checkpoint; say
        what changed since it was written (and apply the new settings)."""
        file, saved = ckpt_io.resume_checkpoint(path, self._check_checkpoint, self._notice)
        self._notice(
            f"resuming from '{file}': step {saved.step}, {saved.epoch} epoch(s) "
            f"done, {saved.position} examples into the next"
        )
        changes = describe_changes(saved.config, flatten(self.spec))
        if changes:
            self._notice(
                f"settings changed since the checkpoint; the new values apply from "
                f"step {saved.step + 1}:\n  " + "\n  ".join(changes)
            )
        for name, value in saved.params.items():
            if name in self.graph.values:
                self.graph.values[name][...] = value
        if saved.optimizer.get("name") == self.spec.optimizer.name:
            self.optimizer.load_state(saved.optimizer["scalars"], saved.optimizer["slots"])
            first = saved.optimizer.get("first_step")
            self._optimizer_first_step = (
                first if first is not None else saved.step - self.optimizer.iterations
            )
        else:
            self._optimizer_first_step = saved.step
            self._notice(
                f"the optimizer changed from {saved.optimizer.get('name')!r} to "
                f"{self.spec.optimizer.name!r}, so its state starts afresh"
            )
        sums = self._load_monitor_state(dict(saved.metrics))
        self._load_callback_arrays(saved.extra)
        state = _RunState(saved.step, saved.epoch, saved.position, saved.order, sums)
        if saved.data.get("fingerprint") not in (None, self.train_data.fingerprint()):
            self._notice(
                f"the training data differ from the checkpoint's "
                f"({saved.data.get('size')} examples then, {self.train_data.size} "
                f"now): epoch {saved.epoch + 1} starts over with a new order"
            )
            state = _RunState(saved.step, saved.epoch)
        if self.log is not None:
            self.log.truncate_after(saved.step)
        self._last_checkpoint = file
        self._saved_at = saved.step
        return state

    def _check_checkpoint(self, saved: ckpt_io.Checkpoint, file: Path) -> None:
        """Refuse a checkpoint of another graph, or one that does not fit this run."""
        if saved.graph_hash != self.graph_hash:
            raise TrainingError(
                f"checkpoint '{file}' belongs to another graph: it records graph hash "
                f"{saved.graph_hash}, but graph '{self.graph.name}' hashes to "
                f"{self.graph_hash} (its nodes, ops, shapes or connections differ). Resume "
                "with the model file the checkpoint was made from, or train from scratch "
                "without --resume"
            )
        size, forced = self.train_data.size, self.drop_last and not self.spec.drop_last
        ckpt_io.check_against(
            saved,
            file,
            graph=self.graph,
            trained=self.param_names,
            optimizer_name=self.spec.optimizer.name,
            slot_names=self.optimizer.slot_names,
            data_size=size,
            data_fingerprint=self.train_data.fingerprint(),
            batch_size=self.spec.batch_size,
            steps_per_epoch=lambda b, drop: len(batch_bounds(size, b, drop or forced)),
        )
        declared = {n.name: n.types[0] for n in self.graph.parameters()}
        for key, value in saved.extra.items():
            prefix, _, name = key.partition("/")
            t = declared.get(name)
            if not prefix or t is None:
                raise ckpt_io.DamagedCheckpoint(
                    f"checkpoint '{file}': callback array {key!r} names no parameter of "
                    f"graph '{self.graph.name}'; the file is damaged"
                )
            if value.dtype != t.dtype or value.shape != tuple(t.shape):
                raise ckpt_io.DamagedCheckpoint(
                    f"checkpoint '{file}': callback array {key!r} is "
                    f"{value.dtype}{value.shape}, parameter {name!r} is {t}; the file is damaged"
                )

    def notice(self, message: str) -> None:
        """Print a message where the run prints (not when progress is off)."""
        self._notice(message, quiet_ok=True)

    def _notice(self, message: str, quiet_ok: bool = False) -> None:
        if quiet_ok and self.progress is False:
            return
        print(message, file=self.stream, flush=True)


def _count(name: str, value: Any, zero: str) -> int:
    """A non-negative int option, else TrainingError saying what 0 means."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TrainingError(f"{name} must be an int >= 0 ({zero}), got {value!r}")
    return int(value)


class _catch_interrupt:
    """Turn the first Ctrl-C (SIGINT) during training into a request to stop after
    the current step, so the parameters are never left half updated and a
    checkpoint can be written; a second Ctrl-C interrupts at once.  Only the main
    thread can take signals; elsewhere this does nothing."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: Any = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # someone else handles Ctrl-C (a notebook, a test harness): leave it
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer._interrupted:
            raise KeyboardInterrupt
        self.trainer._interrupted = True
        print(
            "\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again "
            "to quit at once)",
            file=self.trainer.stream,
            flush=True,
        )

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


#: The passes run on the gradient graph before its training plan is compiled
#: (see compile_training_plan).  (Batch norm's
#: backward is found by replaying its rule with identical nodes shared, so cse
#: goes first.)
TRAINING_PASSES = ("cse", "fuse")


def compile_training_plan(
    grad_graph: Graph,
    fetches: Sequence[str],
    feed_names: Sequence[str],
    *,
    folded: FoldedSGD | None = None,
) -> Plan:
    """The plan a training step runs: ``grad_graph`` with identical nodes shared
    and its common patterns fused (the ``cse`` and ``fuse`` passes of
    :func:`graphengine.optimize`: dense layers, relu's, softmax cross-entropy's
    and batch norm's backward), computing ``fetches``.

    The fused graph keeps every fetch under its name and shares ``grad_graph``'s
    parameter values (one dict), so updates in place reach both.  Fusion changes
    which kernels run; they compute the same values (a fused batch norm backward
    to float rounding, the others exactly).  Each step consumes its
    fetches before the next, so they may live in the plan's reused buffers and a
    step allocates no gradient arrays.

    With ``folded`` (plain SGD), the parameters it folds
    (:meth:`FoldedSGD.updates`) are updated by the plan itself, and their
    gradients are left out of the fetches, which otherwise keep their order; the
    others are packed (:meth:`FoldedSGD.pack`: ``grad_graph.values`` then holds
    views of one array), and so are their gradients' buffers."""
    fused, _ = optimize(grad_graph, TRAINING_PASSES, keep=fetches)
    fused.values = grad_graph.values
    updates, packed = [], []
    if folded is not None:
        updates = folded.updates(fused, fetches)
        dropped = {folded.grads[p] for p in folded.params}
        fetches = [f for f in fetches if f not in dropped]
        packed = [folded.grads[p] for p in folded.pack(grad_graph.values)]
    return compile_plan(
        fused,
        fetches,
        feed_names,
        reuse_fetch_buffers=True,
        updates=updates,
        packed_fetches=packed,
    )


def _own_values(graph: Graph) -> None:
    """Make every parameter value a writeable, contiguous array of its own (a value
    read from a file may be a read-only view of the file's bytes)."""
    for name, value in graph.values.items():
        if not value.flags.writeable or not value.flags.c_contiguous:
            graph.values[name] = np.array(value, copy=True, order="C")


def _running_stats(node: Node) -> list[str]:
    """The names of the tensors a node's declared state updates write (a
    batch_norm's running mean and variance), in declaration order."""
    return [parse_ref(node.inputs[i])[0] for i in node.opdef.state_inputs()]


def _batch_norms(graph: Graph, forward: list[Node]) -> list[Node]:
    """Nodes with declared state updates (batch_norm) whose state tensors are all
    parameters, which the trainer keeps up."""
    found = []
    for node in forward:
        if not node.opdef.state_updates:
            continue
        if all(graph.node(name).op == "parameter" for name in _running_stats(node)):
            found.append(node)
        else:
            names = " and ".join(u.state for u in node.opdef.state_updates)
            warnings.warn(
                f"{node.op} '{node.name}': {names} are not all parameters, so "
                "training leaves them as they are",
                stacklevel=4,
            )
    return found


def train(
    graph: Graph, data: DataLike, *, resume: str | os.PathLike | None = None, **options: Any
) -> TrainResult:
    """Train ``graph`` on ``data``: ``Trainer(graph, data, **options).fit(resume)``.

    ``options`` are :class:`Trainer`'s (``val``, ``callbacks``, ``checkpoint_dir``,
    ``log`` ...) and training settings over the graph's spec (``epochs=5``,
    ``learning_rate=0.1``, ``optimizer="adam"`` ...).  The graph's parameter values
    are trained in place.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None,))
    >>> w = g.parameter("w", np.zeros((), np.float32))
    >>> g.set_training(ge.mean((x * w - x) ** 2.0), learning_rate=0.5, epochs=10)
    >>> result = ge.train(g, {"x": np.ones(8, np.float32)}, progress=False)
    >>> result.steps, round(float(g.values["w"]), 3)
    (10, 1.0)
    """
    require_graph(graph, "ge.train")
    return Trainer(graph, data, **options).fit(resume)
