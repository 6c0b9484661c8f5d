"""Checkpoint files: the graph hash, atomic writes, pruning, and refusals."""

import json

import numpy as np
import pytest

import graphengine as ge
from graphengine.errors import TrainingError
from graphengine.training.checkpoint import (
    Checkpoint,
    find_resume_checkpoint,
    graph_fingerprint,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from graphengine.training.settings import describe_changes, flatten

from ..train_models import classifier


def checkpoint(step: int) -> Checkpoint:
    return Checkpoint(
        graph_hash="abc",
        step=step,
        epoch=1,
        position=32,
        seed=5,
        params={
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "layer/b": np.ones(3, np.float64),
        },
        optimizer={
            "name": "adam",
            "scalars": {"iterations": step},
            "slots": {
                "m": {"w": np.full((2, 3), 0.5, np.float32)},
                "v": {"w": np.full((2, 3), 0.25, np.float32)},
            },
        },
        order=np.arange(64)[::-1].copy(),
        config={"epochs": 3},
        metrics={"examples": 32, "loss_sum": 1.5, "correct": 20},
        data={"size": 64, "fingerprint": "f00"},
    )


def test_write_and_read_back_exactly(tmp_path):
    path = write_checkpoint(tmp_path, checkpoint(7))
    assert path.name == "ckpt-000000007.npz"
    back = read_checkpoint(path)
    original = checkpoint(7)
    for name, value in original.params.items():
        assert back.params[name].dtype == value.dtype and np.array_equal(back.params[name], value)
    assert np.array_equal(back.optimizer["slots"]["v"]["w"], original.optimizer["slots"]["v"]["w"])
    assert back.optimizer["scalars"] == {"iterations": 7}
    assert np.array_equal(back.order, original.order)
    assert (back.step, back.epoch, back.position, back.seed) == (7, 1, 32, 5)
    assert back.metrics == original.metrics and back.data == original.data


def test_only_the_newest_are_kept_and_stray_temporary_files_go(tmp_path):
    (tmp_path / ".ckpt-000000001.npz.99999.0badf00d.tmp").write_bytes(b"half a file")
    for step in range(1, 6):
        write_checkpoint(tmp_path, checkpoint(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-000000004.npz",
        "ckpt-000000005.npz",
    ]
    assert not list(tmp_path.glob(".ckpt-*"))
    assert find_resume_checkpoint(tmp_path).name == "ckpt-000000005.npz"
    assert find_resume_checkpoint(tmp_path / "ckpt-000000004.npz").name == "ckpt-000000004.npz"


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(3))
    with pytest.raises(TrainingError, match="is not a graphengine checkpoint"):
        read_checkpoint(tmp_path / "plain.npz")
    path = write_checkpoint(tmp_path, checkpoint(1))
    with np.load(path) as npz:
        arrays = dict(npz)
    header = json.loads(arrays["header"].tobytes())
    header["version"] = 99
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(TrainingError, match="version 99, this graphengine reads version 1"):
        read_checkpoint(tmp_path / "newer.npz")


def test_graph_hash_follows_structure_not_values(tmp_path):
    g = classifier()
    h = graph_fingerprint(g)
    g.values["out/w"] += 1.0
    assert graph_fingerprint(g) == h
    g.save(tmp_path / "m.pb")
    assert graph_fingerprint(ge.load(tmp_path / "m.pb")) == h
    assert graph_fingerprint(classifier(hidden=8)) != h
    assert graph_fingerprint(classifier(dropout=0.3)) != h  # an attribute differs


def test_changes_are_described_setting_by_setting():
    a = flatten(classifier().training)
    b = dict(a, **{"optimizer.learning_rate": 0.5, "batch_size": 8})
    assert describe_changes(a, b) == ["batch_size: 16 -> 8", "optimizer.learning_rate: 0.02 -> 0.5"]
    assert describe_changes(a, a) == []
