"""``graphengine train`` and ``graphengine eval`` from files: outputs, overrides,
errors, and runs killed with SIGKILL (mid-run and mid-checkpoint-write) that
resume to the same parameters, bit for bit, as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main
from graphengine.training import evaluate
from graphengine.training.checkpoint import list_checkpoints

from ..train_models import assert_bitwise_equal, classifier, classifier_data, parameters


@pytest.fixture
def files(tmp_path):
    """A model file with a training spec and .npz data, in tmp_path."""
    classifier().save(tmp_path / "model.pb")
    np.savez(tmp_path / "train.npz", **classifier_data(160))
    np.savez(tmp_path / "test.npz", **classifier_data(60, seed=1))
    return tmp_path


def test_train_writes_a_model_that_loads_and_runs(files, capsys):
    out = files / "trained.pb"
    code = main(
        [
            "train",
            str(files / "model.pb"),
            "--data",
            str(files / "train.npz"),
            "--val",
            str(files / "test.npz"),
            "--epochs",
            "5",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "epoch 5/5  step 50" in captured.err and f"wrote {out}" in captured.out
    trained = ge.load(out)
    original = ge.load(files / "model.pb")
    assert [n.name for n in trained.nodes] == [n.name for n in original.nodes]
    assert trained.training.epochs == 5  # the settings used travel with the model
    assert not np.array_equal(trained.values["out/w"], original.values["out/w"])
    log = [json.loads(line) for line in (files / "trained.metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5] and "val_accuracy" in log[-1]
    logits = ge.run(trained, "out/add", {"x": classifier_data(5)["x"]})
    assert logits.shape == (5, 3)


def test_eval_reports_loss_and_accuracy(files, capsys):
    main(
        [
            "train",
            str(files / "model.pb"),
            "--data",
            str(files / "train.npz"),
            "--epochs",
            "8",
            "--quiet",
            "-o",
            str(files / "trained.pb"),
        ]
    )
    capsys.readouterr()
    assert (
        main(["eval", str(files / "trained.pb"), "--data", str(files / "test.npz"), "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 60 and result["accuracy"] > 0.8 and result["loss"] < 0.6
    expected = evaluate(ge.load(files / "trained.pb"), files / "test.npz")
    assert result["loss"] == pytest.approx(expected["loss"])
    assert main(["eval", str(files / "trained.pb"), "--data", str(files / "test.npz")]) == 0
    assert capsys.readouterr().out.startswith("loss ")


def test_plain_graph_trains_with_loss_and_map_options(tmp_path, capsys):
    g = ge.Graph("plain")
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    ge.mean((x * w - x * 3.0) ** 2.0, name="loss")
    ge.mean(x * w, name="other")
    g.save(tmp_path / "plain.pb")
    np.savez(tmp_path / "d.npz", inputs=np.linspace(-1, 1, 64, dtype=np.float32))
    args = [
        "train",
        str(tmp_path / "plain.pb"),
        "--data",
        str(tmp_path / "d.npz"),
        "-o",
        str(tmp_path / "out.pb"),
        "--quiet",
        "--lr",
        "0.5",
        "--epochs",
        "20",
    ]
    assert main(args) == 1
    assert "name it with --loss" in capsys.readouterr().err
    assert main(args + ["--loss", "loss"]) == 1
    assert "no array 'x' for placeholder 'x'" in capsys.readouterr().err
    assert main(args + ["--loss", "loss", "--map", "x=inputs"]) == 0
    trained = ge.load(tmp_path / "out.pb")
    assert float(trained.values["w"]) == pytest.approx(3.0, abs=1e-3)
    assert trained.training.loss == "loss" and trained.training.data_map == {"x": "inputs"}


def test_errors_are_one_line_with_exit_code_1(files, capsys):
    np.savez(
        files / "bad.npz", x=classifier_data()["x"].astype(np.float64), y=classifier_data()["y"]
    )
    code = main(
        [
            "train",
            str(files / "model.pb"),
            "--data",
            str(files / "bad.npz"),
            "-o",
            str(files / "t.pb"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphengine train: TrainingError: training data")
    assert "array 'x' for placeholder 'x' has dtype float64" in err and "\n" not in err
    assert not (files / "t.pb").exists()


def train_command(files: Path, out: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "graphengine",
        "train",
        str(files / "model.pb"),
        "--data",
        str(files / "train.npz"),
        "-o",
        str(files / out),
        "--quiet",
        "--epochs",
        "4",
        *extra,
    ]


def wait_for(predicate, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(
                f"training ended (code {process.returncode}) before the kill point: "
                f"{process.stderr.read().decode()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the kill point")
        time.sleep(0.005)


def reference_parameters(files: Path) -> dict[str, np.ndarray]:
    subprocess.run(train_command(files, "reference.pb"), check=True)
    return parameters(ge.load(files / "reference.pb"))


@pytest.mark.parametrize("when", ["between checkpoints", "while writing a checkpoint"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(files, when):
    reference = reference_parameters(files)
    ckpt = files / "ckpt"
    # Each checkpoint write holds its finished temporary file for a moment before
    # the rename, so the kill can land there (and the run lasts long enough).
    command = train_command(
        files,
        "killed.pb",
        "--checkpoint-dir",
        str(ckpt),
        "--checkpoint-every",
        "3",
        "--pause-before-rename",
        "0.2",
    )
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        if when == "between checkpoints":
            wait_for(lambda: len(list_checkpoints(ckpt)) >= 3, process)
        else:
            wait_for(
                lambda: len(list_checkpoints(ckpt)) >= 2 and any(ckpt.glob(".ckpt-*.tmp")), process
            )
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (files / "killed.pb").exists()
    if when == "while writing a checkpoint":
        assert list(ckpt.glob(".ckpt-*.tmp"))  # the half-written one never became final
    resumed = subprocess.run(
        train_command(files, "resumed.pb", "--resume", str(ckpt)),
        check=False,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert not list(ckpt.glob(".ckpt-*.tmp"))  # cleaned up by the next write
    assert_bitwise_equal(parameters(ge.load(files / "resumed.pb")), reference)


def test_resume_with_another_graph_is_refused(files, capsys):
    main(
        [
            "train",
            str(files / "model.pb"),
            "--data",
            str(files / "train.npz"),
            "--quiet",
            "--checkpoint-dir",
            str(files / "ckpt"),
            "-o",
            str(files / "t.pb"),
        ]
    )
    classifier(hidden=8).save(files / "other.pb")
    code = main(
        [
            "train",
            str(files / "other.pb"),
            "--data",
            str(files / "train.npz"),
            "--resume",
            str(files / "ckpt"),
            "-o",
            str(files / "t2.pb"),
        ]
    )
    assert code == 1
    assert "belongs to another graph" in capsys.readouterr().err


def test_resume_reports_changed_hyperparameters(files, capsys):
    main(
        [
            "train",
            str(files / "model.pb"),
            "--data",
            str(files / "train.npz"),
            "--quiet",
            "--epochs",
            "2",
            "--checkpoint-dir",
            str(files / "ckpt"),
            "-o",
            str(files / "t.pb"),
        ]
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(files / "model.pb"),
                "--data",
                str(files / "train.npz"),
                "--epochs",
                "3",
                "--lr",
                "0.001",
                "--resume",
                str(files / "ckpt"),
                "-o",
                str(files / "t2.pb"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "optimizer.learning_rate: 0.02 -> 0.001" in err and "epochs: 2 -> 3" in err
    assert "epoch 3/3  step 30" in err
    assert ge.load(files / "t2.pb").training.optimizer.learning_rate == 0.001


def test_one_file_with_both_splits(files, capsys):
    train, test = classifier_data(160), classifier_data(60, seed=1)
    np.savez(
        files / "both.npz",
        train_x=train["x"],
        train_y=train["y"],
        test_x=test["x"],
        test_y=test["y"],
    )
    both = str(files / "both.npz")
    assert (
        main(
            [
                "train",
                str(files / "model.pb"),
                "--data",
                both,
                "--map",
                "x=train_x",
                "--map",
                "y=train_y",
                "--val",
                both,
                "--val-map",
                "x=test_x",
                "--val-map",
                "y=test_y",
                "--quiet",
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 0
    )
    last = json.loads((files / "t.metrics.jsonl").read_text().splitlines()[-1])
    trained = ge.load(files / "t.pb")
    assert trained.training.data_map == {"x": "train_x", "y": "train_y"}
    assert last["val_loss"] == pytest.approx(evaluate(trained, test)["loss"])
    capsys.readouterr()  # the training summary
    assert (
        main(
            [
                "eval",
                str(files / "t.pb"),
                "--data",
                both,
                "--map",
                "x=test_x",
                "--map",
                "y=test_y",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["loss"] == pytest.approx(last["val_loss"]) and out["examples"] == 60


def test_drop_last_flag_overrides_the_file(tmp_path):
    g = classifier()
    g.set_training("loss", batch_size=16, epochs=1)
    g.save(tmp_path / "m.pb")
    np.savez(tmp_path / "d.npz", **classifier_data(100))
    code = main(
        [
            "train",
            str(tmp_path / "m.pb"),
            "--data",
            str(tmp_path / "d.npz"),
            "--drop-last",
            "--quiet",
            "-o",
            str(tmp_path / "t.pb"),
        ]
    )
    assert code == 0
    trained = ge.load(tmp_path / "t.pb")
    assert trained.training.drop_last is True  # the spec actually used is saved
