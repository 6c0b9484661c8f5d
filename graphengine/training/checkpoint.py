"""Checkpoints: everything needed to resume training exactly where it stopped.

A checkpoint is one ``.npz`` file, ``ckpt-<step>.npz``, holding a JSON header
(array ``header``, UTF-8 bytes) and plain numeric arrays: every parameter value
(``param.<i>``, trainable or not, so batch-norm statistics come back too), the
optimizer's state (``slot.<slot>.<i>``) and the example order of the current
epoch (``order``).  It is read with ``numpy.load(allow_pickle=False)``, so loading
a checkpoint never runs code.

The header records the step, the epoch, the position in the epoch, the seed
(every random draw derives from the seed and these counters, so they are the
RNG state), the effective training settings, a fingerprint of the data, the
running sums of the current epoch's metrics, and a hash of the graph's
structure (:func:`graph_fingerprint`): a checkpoint resumes only the graph it
was taken from.

Files are written atomically (a temporary file in the same folder, flushed to
disk, then renamed over the final name), so a reader sees a complete
checkpoint or none; the newest ``keep`` are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..graph import Graph
from ..serialize import atomic_file

FORMAT = "graphengine-checkpoint"
VERSION = 1
_NAME_RE = re.compile(r"^ckpt-(\d+)\.npz$")


@dataclass
class Checkpoint:
    """The state of a training run after ``step`` updates.

    ``epoch`` counts completed epochs; ``position`` is how many examples of the
    current epoch's ``order`` were consumed.  ``optimizer`` holds ``name``,
    ``scalars`` (the step count ...) and ``slots`` (slot -> parameter -> array).
    ``config`` is the effective training settings, ``metrics`` the running sums
    of the current epoch, ``data`` the data fingerprint.
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


def write_checkpoint(directory: str | os.PathLike, ckpt: Checkpoint, *, keep: int = 3,
                     pause_before_rename: float = 0.0) -> Path:
    """Write ``ckpt`` atomically into ``directory`` and delete all but the newest
    ``keep`` checkpoints there.  Returns the file's path.

    ``pause_before_rename`` (seconds) holds the finished temporary file before
    the rename; tests use it to kill a process in the middle of a write.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
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
    header = {
        "format": FORMAT, "version": VERSION, "graph_hash": ckpt.graph_hash,
        "step": ckpt.step, "epoch": ckpt.epoch, "position": ckpt.position,
        "rng": {"seed": ckpt.seed,
                "scheme": "epoch order = default_rng([seed, epoch]).permutation; "
                          "run seed of step s = (seed << 32) + s"},
        "params": names,
        "optimizer": {"name": ckpt.optimizer.get("name", ""),
                      "scalars": ckpt.optimizer.get("scalars", {}),
                      "params": opt_params,
                      "slots": sorted(slots)},
        "config": ckpt.config, "metrics": ckpt.metrics, "data": ckpt.data,
        "time": time.time(),
    }
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    final = checkpoint_path(folder, ckpt.step)
    with atomic_file(final, pause_before_rename) as f:
        np.savez(f, **arrays)
    _prune(folder, keep)
    return final


def _prune(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    # Temporary files left by a process killed mid-write are never read; clear them.
    for stray in folder.glob(".ckpt-*.npz.*.tmp"):
        if stray.name.split(".")[-3] != str(os.getpid()):
            stray.unlink(missing_ok=True)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file; TrainingError when it is not one we can read."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise TrainingError(f"checkpoint '{path}' does not exist") from None
    except (OSError, EOFError, ValueError) as exc:
        raise TrainingError(f"checkpoint '{path}' cannot be read: {exc}") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (KeyError, ValueError) as exc:
        raise TrainingError(f"'{path}' is not a graphengine checkpoint (no readable "
                            f"header: {exc})") from None
    if header.get("format") != FORMAT:
        raise TrainingError(f"'{path}' is not a graphengine checkpoint")
    if header.get("version", 0) > VERSION:
        raise TrainingError(f"checkpoint '{path}' has version {header['version']}, this "
                            f"graphengine reads version {VERSION} and older; upgrade it")
    names = header["params"]
    opt = header["optimizer"]
    slots = {slot: {name: arrays[f"slot.{slot}.{i}"] for i, name in enumerate(opt["params"])
                    if f"slot.{slot}.{i}" in arrays}
             for slot in opt["slots"]}
    return Checkpoint(
        graph_hash=header["graph_hash"], step=header["step"], epoch=header["epoch"],
        position=header["position"], seed=header["rng"]["seed"],
        params={name: arrays[f"param.{i}"] for i, name in enumerate(names)},
        optimizer={"name": opt["name"], "scalars": opt["scalars"], "slots": slots},
        order=arrays.get("order"), config=header.get("config", {}),
        metrics=header.get("metrics", {}), data=header.get("data", {}))


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint ``--resume`` names: a file, or the newest one in a folder."""
    target = Path(path)
    if target.is_file():
        return target
    latest = latest_checkpoint(target)
    if latest is None:
        what = "does not exist" if not target.exists() else "holds no checkpoint (ckpt-*.npz)"
        raise TrainingError(f"cannot resume: '{target}' {what}")
    return latest
