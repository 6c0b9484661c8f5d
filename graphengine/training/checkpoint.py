"""Checkpoints: everything needed to resume training exactly where it stopped.

A checkpoint is one ``.npz`` file, ``ckpt-<step>.npz``, holding a JSON header
(array ``header``, UTF-8 bytes) and plain numeric arrays: every parameter value
(``param.<i>``, trainable or not, so batch-norm statistics come back too), the
optimizer's state (``slot.<slot>.<i>``), the example order of the current
epoch (``order``) and the arrays callbacks keep (``extra.<i>``: the best
parameters of early stopping with ``restore_best``).  It is read with
``numpy.load(allow_pickle=False)``, so loading a checkpoint never runs code.

The header records the step, the epoch, the position in the epoch, the seed
(every random draw derives from the seed and these counters, so they are the
RNG state), the effective training settings, a fingerprint of the data, the
running sums of the current epoch's metrics, and a hash of the graph's
structure (:func:`graph_fingerprint`): a checkpoint resumes only the graph it
was taken from.

Files are written atomically (a temporary file in the same folder, flushed to
disk, then renamed over the final name), so a reader sees a complete
checkpoint or none; the newest ``keep`` are kept.  The header records the
CRC-32 of every array.

**Reading never trusts the file.**  The archive is read by the bounded reader
(:mod:`graphengine.npz_files`); every header field is checked for its type and
range, every array against its checksum (:func:`read_checkpoint`), and then
everything against the graph, the optimizer and the data of the run that
resumes (:func:`check_against`): the same parameter names, each of its exact
shape and dtype, every optimizer slot present, an example order that is the
permutation of the data the seed gives, counters that agree with each other.
A checkpoint that fails is refused with a TrainingError naming the field;
``--resume DIR`` then says so and takes the newest good one before it
(:func:`resume_checkpoint`).

**One run per folder.**  A run that writes checkpoints holds a lock on
``DIR/.lock`` (:class:`FolderLock`): a second trainer on the same folder is
refused, and so is a fresh run (no ``--resume``) in a folder that already holds
checkpoints, which would otherwise prune and overwrite that run's files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..graph import Graph
from ..input_files import open_input
from ..npz_files import read_npz
from ..serialize import atomic_file
from ..serialize.files import process_is_running
from ..training_spec import OPTIMIZERS

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

FORMAT = "graphengine-checkpoint"
VERSION = 1
_NAME_RE = re.compile(r"^ckpt-(\d+)\.npz$")
#: The largest header read: ample for 10**5 parameters (a checksum and a name each).
MAX_HEADER_BYTES = 16 * 2**20
#: A graph hash or data fingerprint: what graph_fingerprint and Dataset.fingerprint write.
_HASH_RE = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass
class Checkpoint:
    """The state of a training run after ``step`` updates.

    ``epoch`` counts completed epochs; ``position`` is how many examples of the
    current epoch's ``order`` were consumed.  ``optimizer`` holds ``name``,
    ``scalars`` (the step count ...) and ``slots`` (slot -> parameter -> array).
    ``config`` is the effective training settings, ``metrics`` the running sums
    of the current epoch, ``data`` the data fingerprint, ``extra`` the arrays
    that callbacks keep (``callback<i>/<key>``; a file without them reads as
    none).
    """

    graph_hash: str
    step: int
    epoch: int
    position: int
    seed: int
    params: dict[str, np.ndarray]
    optimizer: dict[str, Any]
    order: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def graph_fingerprint(graph: Graph) -> str:
    """A hash of a graph's structure: node names, ops, inputs and attributes
    (constants by content), not parameter values and not the training spec.

    Training changes parameter values but not this hash; a changed op, shape,
    connection or constant changes it.
    """
    h = hashlib.sha256()
    for node in graph.nodes:
        attrs = {k: _attr_text(v) for k, v in node.attrs.items()}
        h.update(json.dumps([node.name, node.op, list(node.inputs), attrs]).encode())
    return h.hexdigest()[:32]


def _attr_text(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"{value.dtype.str}{value.shape}:{data}"
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, (tuple, list)):
        return [_attr_text(v) for v in value]
    return repr(value)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:09d}.npz"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (temporary files excluded)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def write_checkpoint(
    directory: str | os.PathLike,
    ckpt: Checkpoint,
    *,
    keep: int = 3,
    pause_before_rename: float = 0.0,
) -> Path:
    """Write ``ckpt`` atomically into ``directory`` and delete all but the newest
    ``keep`` checkpoints there.  Returns the file's path.

    ``pause_before_rename`` (seconds) holds the finished temporary file before
    the rename; tests use it to kill a process in the middle of a write.
    """
    folder = Path(directory)
    _refuse_non_finite(folder, ckpt)
    names = list(ckpt.params)
    slots = ckpt.optimizer.get("slots", {})
    opt_params = [n for n in names if any(n in by_param for by_param in slots.values())]
    arrays: dict[str, np.ndarray] = {f"param.{i}": ckpt.params[n] for i, n in enumerate(names)}
    for slot, by_param in slots.items():
        for i, name in enumerate(opt_params):
            if name in by_param:
                arrays[f"slot.{slot}.{i}"] = by_param[name]
    if ckpt.order is not None:
        arrays["order"] = ckpt.order
    extra = list(ckpt.extra)
    for i, key in enumerate(extra):
        arrays[f"extra.{i}"] = ckpt.extra[key]
    header = {
        "format": FORMAT,
        "version": VERSION,
        "graph_hash": ckpt.graph_hash,
        "step": ckpt.step,
        "epoch": ckpt.epoch,
        "position": ckpt.position,
        "rng": {
            "seed": ckpt.seed,
            "scheme": "epoch order = default_rng([seed, epoch]).permutation; "
            "run seed of step s = (seed << 32) + s",
        },
        "params": names,
        "optimizer": {
            "name": ckpt.optimizer.get("name", ""),
            "scalars": ckpt.optimizer.get("scalars", {}),
            "params": opt_params,
            "slots": sorted(slots),
            "first_step": ckpt.optimizer.get("first_step", 0),
        },
        "config": ckpt.config,
        "metrics": ckpt.metrics,
        "data": ckpt.data,
        "extra": extra,
        "time": time.time(),
        "crc32": {name: _crc32(array) for name, array in sorted(arrays.items())},
    }
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    final = checkpoint_path(folder, ckpt.step)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(final, pause_before_rename) as f:
            np.savez(f, **arrays)
    except OSError as exc:
        # A full disk, a read-only or vanished folder: the temporary file is gone
        # (atomic_file removes it) and every earlier checkpoint is as it was.
        then = f"continue with --resume {folder}" if latest_checkpoint(folder) else "train again"
        raise TrainingError(
            f"cannot write checkpoint '{final}' ({exc.strerror or exc}); "
            f"{_newest_intact(folder)}. Free space on that disk (or move the folder), "
            f"then {then}"
        ) from None
    _prune(folder, keep)
    return final


def _newest_intact(folder: Path) -> str:
    """What an error says about the checkpoints a failed write left in ``folder``."""
    newest = latest_checkpoint(folder)
    if newest is None:
        return "no earlier checkpoint was written"
    return f"the newest checkpoint, '{newest}', is intact"


def _refuse_non_finite(folder: Path, ckpt: Checkpoint) -> None:
    """Refuse to write parameters that hold inf or nan: such a checkpoint could
    only resume into a nan loss, and pruning would delete the good ones."""
    for name, value in ckpt.params.items():
        if value.dtype.kind in "fc" and value.size and not _all_finite(value):
            raise TrainingError(
                f"parameter {name!r} holds inf or nan after step {ckpt.step}, so no "
                "checkpoint was written for that step; "
                f"{_newest_intact(folder)}. A gradient was inf or nan: lower the "
                "learning rate, clip gradients (--clip-norm), or check the data "
                "for inf or nan values"
            )


def _all_finite(value: np.ndarray) -> bool:
    # min and max propagate nan and reach any inf, without a boolean array the
    # size of the parameter.
    return bool(np.isfinite(value.min()) and np.isfinite(value.max()))


def _crc32(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _prune(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        with contextlib.suppress(OSError):  # kept, not lost: the next save retries
            old.unlink(missing_ok=True)
    # Temporary files left by a process killed mid-write are never read; clear
    # them, but never those of a process that still runs.
    for stray in folder.glob(".ckpt-*.npz.*.tmp"):
        pid = stray.name.split(".")[-3]
        if pid.isdigit() and not process_is_running(int(pid)):
            with contextlib.suppress(OSError):
                stray.unlink(missing_ok=True)


class DamagedCheckpoint(TrainingError):
    """A checkpoint file that cannot be read or is inconsistent in itself."""


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file, checking every header field and array checksum.

    Raises DamagedCheckpoint (a TrainingError) naming the field when it is not a
    checkpoint this graphengine can read.
    """
    arrays = read_npz(path, "checkpoint", DamagedCheckpoint)
    raw = arrays.pop("header", None)
    if raw is not None and raw.size > MAX_HEADER_BYTES:
        # Parsing is the cost: a 2 MB file can hold a 2 GiB header of "[0,0,...",
        # which json.loads would take half an hour and gigabytes to read.
        raise DamagedCheckpoint(
            f"'{path}' has a header of {raw.size:,} bytes; a checkpoint header holds at "
            f"most {MAX_HEADER_BYTES:,} (names, counters and checksums), so the file is "
            "damaged or not a graphengine checkpoint"
        )
    try:
        if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError("no header array")
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DamagedCheckpoint(
            f"'{path}' is not a graphengine checkpoint (no readable header: {exc})"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DamagedCheckpoint(f"'{path}' is not a graphengine checkpoint")
    fields = _HeaderFields(header, path)
    version = fields.integer("version", 1)
    if version > VERSION:
        raise TrainingError(
            f"checkpoint '{path}' has version {version}, this graphengine "
            f"reads version {VERSION} and older; upgrade it"
        )
    checksums = header.get("crc32")
    if checksums is not None:
        fields.check(
            isinstance(checksums, dict) and set(checksums) == set(arrays),
            "crc32",
            "a checksum for every array",
        )
        for name, array in arrays.items():
            if checksums[name] != _crc32(array):
                raise DamagedCheckpoint(
                    f"checkpoint '{path}': array {name!r} does not match "
                    "its recorded crc32; the file is damaged"
                )
    names = fields.names("params")
    opt = fields.mapping("optimizer")
    opt_fields = _HeaderFields(opt, path, "optimizer.")
    opt_params = opt_fields.names("params")
    slot_names = opt_fields.names("slots")
    scalars = opt_fields.mapping("scalars")
    rng = _HeaderFields(fields.mapping("rng"), path, "rng.")
    params = {}
    for i, name in enumerate(names):
        params[name] = fields.array(arrays, f"param.{i}", f"parameter {name!r}")
    slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in slot_names}
    for slot in slot_names:
        for i, name in enumerate(opt_params):
            if f"slot.{slot}.{i}" in arrays:
                slots[slot][name] = fields.array(
                    arrays, f"slot.{slot}.{i}", f"optimizer slot {slot!r} of {name!r}"
                )
    extra_names = fields.names("extra") if "extra" in header else []
    kept = {
        key: fields.array(arrays, f"extra.{i}", f"callback array {key!r}")
        for i, key in enumerate(extra_names)
    }
    expected = (
        {f"param.{i}" for i in range(len(names))}
        | {"order"}
        | {f"extra.{i}" for i in range(len(extra_names))}
        | {f"slot.{slot}.{i}" for slot in slot_names for i in range(len(opt_params))}
    )
    extra = sorted(set(arrays) - expected)
    fields.check(not extra, "arrays", f"only the arrays the header lists, not {extra[:4]}")
    order = arrays.get("order")
    if order is not None:
        fields.check(order.ndim == 1 and order.dtype.kind in "iu", "order", "a 1-d integer array")
    named = _NAME_RE.match(Path(path).name)
    if named and int(named.group(1)) != fields.integer("step"):
        # A renamed file would be taken as the newest and resume an older state.
        raise DamagedCheckpoint(
            f"checkpoint '{path}' records step {fields.integer('step')}, but its name says "
            f"step {int(named.group(1))}; it was renamed or copied over another. Resume "
            "from it by a name that matches, or remove it"
        )
    opt_name = opt_fields.text("name")
    opt_fields.check(opt_name in OPTIMIZERS, "name", f"one of {', '.join(OPTIMIZERS)}")
    step = fields.integer("step")
    first_step = None
    if "first_step" in opt:
        first_step = opt_fields.integer("first_step")
        opt_fields.check(first_step <= step, "first_step", f"a step from 0 to {step}")
    graph_hash = fields.text("graph_hash")
    fields.check(_HASH_RE.fullmatch(graph_hash) is not None, "graph_hash", "a hex digest")
    data = fields.mapping("data", required=False)
    data_fields = _HeaderFields(data, path, "data.")
    if "size" in data:
        data_fields.integer("size")
    if "fingerprint" in data:
        fingerprint = data_fields.text("fingerprint")
        data_fields.check(
            _HASH_RE.fullmatch(fingerprint) is not None, "fingerprint", "a hex digest"
        )
    config = fields.mapping("config", required=False)
    config_fields = _HeaderFields(config, path, "config.")
    if "batch_size" in config:
        config_fields.check(
            config_fields.integer("batch_size") > 0, "batch_size", "an integer >= 1"
        )
    if "drop_last" in config:
        config_fields.check(isinstance(config["drop_last"], bool), "drop_last", "true or false")
    metrics = fields.mapping("metrics", required=False)
    for key, value in metrics.items():
        fields.check(
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value),
            f"metrics.{key}",
            "a finite number",
        )
    return Checkpoint(
        graph_hash=graph_hash,
        step=step,
        epoch=fields.integer("epoch"),
        position=fields.integer("position"),
        seed=rng.integer("seed"),
        params=params,
        optimizer={
            "name": opt_name,
            "scalars": dict(scalars),
            "slots": slots,
            "first_step": first_step,
        },
        order=order,
        config=dict(config),
        metrics=dict(metrics),
        data=dict(data),
        extra=kept,
    )


class _HeaderFields:
    """Typed access to a checkpoint header; DamagedCheckpoint names the field."""

    def __init__(self, header: Mapping[str, Any], path: Any, prefix: str = "") -> None:
        self.header, self.path, self.prefix = header, path, prefix

    def check(self, ok: bool, name: str, expected: str) -> None:
        if not ok:
            seen = self.header.get(name, "(missing)")
            raise DamagedCheckpoint(
                f"checkpoint '{self.path}': header field "
                f"{self.prefix}{name} is {_short(seen)}; expected "
                f"{expected}"
            )

    def integer(self, name: str, default: int | None = None) -> int:
        value = self.header.get(name, default)
        self.check(
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63,
            name,
            "an integer >= 0",
        )
        return value

    def text(self, name: str) -> str:
        value = self.header.get(name)
        self.check(isinstance(value, str), name, "a string")
        return value

    def names(self, name: str) -> list[str]:
        value = self.header.get(name)
        self.check(
            isinstance(value, list)
            and all(isinstance(v, str) for v in value)
            and len(set(value)) == len(value),
            name,
            "a list of distinct names",
        )
        return value

    def mapping(self, name: str, required: bool = True) -> Mapping[str, Any]:
        value = self.header.get(name, None if required else {})
        self.check(isinstance(value, dict), name, "an object")
        return value

    def array(self, arrays: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
        if key not in arrays:
            raise DamagedCheckpoint(
                f"checkpoint '{self.path}' has no array {key!r} for {what}; the file is incomplete"
            )
        return arrays[key]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_against(
    ckpt: Checkpoint,
    path: Any,
    *,
    graph: Graph,
    trained: Sequence[str],
    optimizer_name: str,
    slot_names: Sequence[str],
    data_size: int,
    data_fingerprint: str,
    batch_size: int,
    steps_per_epoch: Callable[[int, bool], int],
) -> None:
    """Check a checkpoint against the run that resumes from it: every parameter of
    the graph with its exact shape and dtype, every slot of the optimizer for
    every trained parameter, counters and order that fit the data.

    ``steps_per_epoch(batch_size, drop_last)`` gives the steps of one epoch.
    Raises DamagedCheckpoint naming what does not fit.
    """
    where = f"checkpoint '{path}'"

    def fail(message: str) -> None:
        raise DamagedCheckpoint(f"{where}: {message}")

    declared = {n.name: n.types[0] for n in graph.parameters()}
    missing = [name for name in declared if name not in ckpt.params]
    unknown = [name for name in ckpt.params if name not in declared]
    if missing or unknown:
        fail(
            f"its parameters do not match the graph's (missing: {missing[:5] or 'none'}; "
            f"not in the graph: {unknown[:5] or 'none'})"
        )
    for name, value in ckpt.params.items():
        t = declared[name]
        if value.dtype != t.dtype or value.shape != tuple(t.shape):
            fail(
                f"parameter {name!r} is {value.dtype}{value.shape}, the graph declares "
                f"{t}; it belongs to another model or is damaged"
            )
        if value.dtype.kind == "f" and value.size and not _all_finite(value):
            fail(f"parameter {name!r} holds inf or nan; resume from an earlier checkpoint")
    for key, value in ckpt.extra.items():
        if value.dtype.kind == "f" and value.size and not _all_finite(value):
            fail(f"callback array {key!r} holds inf or nan; resume from an earlier checkpoint")
    if ckpt.epoch > ckpt.step:
        fail(f"it records {ckpt.epoch} finished epochs in only {ckpt.step} steps")
    for key, value in ckpt.metrics.items():
        # A monitor's counters: whole numbers of steps and validations so far.
        if key.startswith("state/") and key.rpartition("/")[2] in ("best_step", "wait"):
            if value != int(value) or not 0 <= value <= ckpt.step:
                fail(f"metrics.{key} is {_short(value)}; expected a count from 0 to {ckpt.step}")
    # With other data the trainer starts the epoch over with a new order, so the
    # position, order and running metrics of this one do not matter.
    if ckpt.data.get("fingerprint") in (None, data_fingerprint):
        _check_position(ckpt, fail, data_size, batch_size, steps_per_epoch)
    if ckpt.optimizer["name"] == optimizer_name:
        slots = ckpt.optimizer["slots"]
        if sorted(slots) != sorted(slot_names):
            fail(
                f"optimizer {optimizer_name!r} keeps slots {sorted(slot_names)}, the "
                f"checkpoint has {sorted(slots)}"
            )
        for slot in slot_names:
            for name in trained:
                saved = slots[slot].get(name)
                if saved is None:
                    fail(f"optimizer slot {slot!r} of parameter {name!r} is missing")
                t = declared[name]
                if saved.dtype != t.dtype or saved.shape != tuple(t.shape):
                    fail(
                        f"optimizer slot {slot!r} of {name!r} is {saved.dtype}{saved.shape}, "
                        f"the parameter is {t}"
                    )
        # Each step updates once, so the optimizer has counted every step since its
        # state began (step 0, or the resume that changed the optimizer).
        iterations = ckpt.optimizer["scalars"].get("iterations")
        first = ckpt.optimizer.get("first_step")
        expected = (
            f"{ckpt.step - first} (step {ckpt.step} less optimizer.first_step {first})"
            if first is not None
            else f"an integer from 0 to the step ({ckpt.step})"
        )
        if (
            not isinstance(iterations, int)
            or isinstance(iterations, bool)
            or not (0 <= iterations <= ckpt.step)
            or (first is not None and iterations != ckpt.step - first)
        ):
            fail(f"optimizer.scalars.iterations is {_short(iterations)}; expected {expected}")


def _check_position(
    ckpt: Checkpoint,
    fail: Callable[[str], None],
    data_size: int,
    batch_size: int,
    steps_per_epoch: Callable[[int, bool], int],
) -> None:
    """The counters, the order and the running metrics of a checkpoint against the
    data it was taken on."""
    if not 0 <= ckpt.position <= data_size:
        fail(f"position {ckpt.position} lies outside the data's {data_size} examples")
    config = ckpt.config
    saved_batch = config.get("batch_size", batch_size)
    drop_last = bool(config.get("drop_last", False))
    if isinstance(saved_batch, int) and saved_batch > 0:
        per_epoch = steps_per_epoch(saved_batch, drop_last)
        in_epoch = -(-ckpt.position // saved_batch)
        if per_epoch and ckpt.step != ckpt.epoch * per_epoch + in_epoch:
            fail(
                f"step {ckpt.step} does not fit {ckpt.epoch} epoch(s) of {per_epoch} steps "
                f"and position {ckpt.position} (batch size {saved_batch})"
            )
    if ckpt.position and ckpt.order is None:
        fail(f"it stopped {ckpt.position} examples into an epoch but holds no example order")
    if ckpt.order is not None:
        order = ckpt.order
        if order.shape != (data_size,) or not np.array_equal(np.sort(order), np.arange(data_size)):
            fail(f"its example order is not a permutation of the {data_size} examples")
    metrics = ckpt.metrics
    examples = metrics.get("examples", 0)
    if not 0 <= examples <= ckpt.position or not 0 <= metrics.get("correct", 0) <= examples:
        fail(f"its running metrics {_short(metrics)} do not fit position {ckpt.position}")


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint ``--resume`` names: a file, or the newest one in a folder."""
    target = Path(path)
    if target.is_file():
        return target
    if target.exists() and not target.is_dir():
        with open_input(target, "checkpoint", TrainingError):
            pass  # says what it is (a FIFO, a device)
    latest = latest_checkpoint(target)
    if latest is None:
        what = "does not exist" if not target.exists() else "holds no checkpoint (ckpt-*.npz)"
        raise TrainingError(f"cannot resume: '{target}' {what}")
    return latest


def resume_checkpoint(
    path: str | os.PathLike,
    check: Callable[[Checkpoint, Path], None],
    notice: Callable[[str], None],
) -> tuple[Path, Checkpoint]:
    """The checkpoint to resume from, read and checked (``check(ckpt, file)``).

    For a file, that file or a TrainingError.  For a folder, the newest
    checkpoint that reads and passes the checks: each damaged one newer than it
    is reported through ``notice`` (and left in place, for inspection).
    """
    target = Path(path)
    if target.is_file() or not target.is_dir():
        file = find_resume_checkpoint(target)
        ckpt = read_checkpoint(file)
        check(ckpt, file)
        return file, ckpt
    candidates = list_checkpoints(target)
    if not candidates:
        find_resume_checkpoint(target)  # raises, saying what is wrong
    problems = []
    for file in reversed(candidates):
        try:
            ckpt = read_checkpoint(file)
            check(ckpt, file)
        except DamagedCheckpoint as exc:
            problems.append(str(exc))
            notice(f"skipping damaged checkpoint: {exc}")
            continue
        if problems:
            notice(f"resuming from '{file}', the newest good checkpoint")
        return file, ckpt
    raise TrainingError(
        f"cannot resume from '{target}': none of its {len(candidates)} "
        f"checkpoint(s) is usable; the newest: {problems[0]}"
    )


# -- one run per folder ------------------------------------------------------------------


class FolderLock:
    """An exclusive lock on a checkpoint folder for one training run.

    ``flock`` on ``DIR/.lock``: the kernel releases it when the process ends,
    even by SIGKILL, so a killed run never leaves the folder locked.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    def acquire(self, resume: str | os.PathLike | None) -> FolderLock:
        """Take the lock; TrainingError if another run holds it, or if this fresh run
        (``resume`` None, or a checkpoint elsewhere) would mix with the folder's
        checkpoints."""
        folder = self.directory
        lock = folder / ".lock"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW, and one link only: the lock file is truncated, so a link
            # placed there (a checkpoint folder from elsewhere) must not reach
            # another file.
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise TrainingError(
                f"cannot use checkpoint folder '{folder}': {lock.name}: {reason or exc}; "
                f"remove '{lock}' if it is a link, or give --checkpoint-dir a folder you "
                "can write"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise TrainingError(
                f"cannot use checkpoint folder '{folder}': '{lock}' is not a file of its own "
                f"({st.st_nlink} links); remove it (training makes a new one)"
            )
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)  # a file system without locks (some NFS): not a rival run
                    raise TrainingError(
                        f"cannot lock checkpoint folder '{folder}' ({exc.strerror or exc}): "
                        "its file system does not support locks; give --checkpoint-dir a "
                        "folder on a local disk"
                    ) from None
                try:
                    holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                except OSError:
                    holder = "unknown"
                os.close(fd)
                raise TrainingError(
                    f"checkpoint folder '{folder}' is in use by another training run "
                    f"(process {holder}); two runs in one folder would delete each other's "
                    "checkpoints. Wait for it to end, or give this run another "
                    "--checkpoint-dir"
                ) from None
        self._fd = fd
        try:
            if list_checkpoints(folder) and not _resumes_from(resume, folder):
                found = list_checkpoints(folder)
                raise TrainingError(
                    f"checkpoint folder '{folder}' already holds {len(found)} checkpoint(s) "
                    f"of an earlier run (newest '{found[-1].name}'); a fresh run there would "
                    f"prune and overwrite them. Continue that run with --resume {folder}, or "
                    "give this one an empty --checkpoint-dir"
                )
            with contextlib.suppress(OSError):  # the pid only informs: a full disk is fine
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _resumes_from(resume: str | os.PathLike | None, folder: Path) -> bool:
    if resume is None:
        return False
    target = Path(resume).resolve()
    folder = folder.resolve()
    return target == folder or target.parent == folder
