"""``graphengine train`` and ``eval`` options added for models users bring: a loss
added from the command line, summaries on stdout, refused counts, non-finite
evaluations, and Ctrl-C."""

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

from ..train_models import classifier_data

ROOT = Path(__file__).resolve().parents[2]


def _plain_model(path):
    """A classifier with no loss and no spec: what an import gives."""
    g = ge.Graph("plain")
    x = g.placeholder("x", (None, 4))
    with g.name_scope("dense"):
        h = ge.relu(
            x @ g.parameter("w", shape=(4, 16)) + g.parameter("b", np.zeros(16, np.float32))
        )
    with g.name_scope("head"):
        logits = ge.identity(h @ g.parameter("w", shape=(16, 3)), name="logits")
    g.mark_output(logits)
    g.save(path)


@pytest.fixture
def files(tmp_path):
    _plain_model(tmp_path / "plain.pb")
    np.savez(tmp_path / "train.npz", **classifier_data(160))
    np.savez(tmp_path / "test.npz", **classifier_data(60, seed=1))
    return tmp_path


def test_a_loss_from_the_command_line_is_stored_and_metrics_work(files, capsys):
    out = files / "trained.pb"
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "logits",
                "--labels",
                "y",
                "--optimizer",
                "adam",
                "--lr",
                "0.05",
                "--epochs",
                "8",
                "--metrics",
                "loss,accuracy,f1",
                "--json",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 40 and summary["final"]["train_accuracy"] > 0.8
    spec = ge.load(out).training
    assert spec.loss_kind == "cross_entropy" and spec.labels == "y"
    assert spec.loss == "cross_entropy_loss/loss" and spec.predictions == "head/logits"
    # The trained file evaluates with its own spec: no options needed.
    assert main(["eval", str(out), "--data", str(files / "test.npz"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"loss", "accuracy", "f1", "examples"} and results["accuracy"] > 0.8
    # Training the trained file again with the same --loss does not add a second loss.
    assert (
        main(
            [
                "train",
                str(out),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "head/logits",
                "--labels",
                "y",
                "-q",
                "-o",
                str(files / "again.pb"),
            ]
        )
        == 0
    )
    assert len(ge.load(files / "again.pb").nodes) == len(ge.load(out).nodes)


def test_a_loss_kind_needs_predictions_and_labels(files, capsys):
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "mse",
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "--loss mse needs --predictions OUTPUT (the graph's outputs: 'head/logits')" in err
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "mse",
                "--predictions",
                "logits",
                "--labels",
                "z",
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 1
    )
    assert "the data have no such array; they have 'x', 'y'" in capsys.readouterr().err


def test_without_a_loss_the_error_points_to_loss_kinds(files, capsys):
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 1
    )
    assert "name it with --loss NAME" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, message",
    [
        (
            "--checkpoint-every",
            "--checkpoint-every must be >= 0 (0 writes checkpoints at epoch ends only), got -1",
        ),
        ("--keep", "--keep must be >= 0 (0 keeps every checkpoint), got -1"),
        ("--val-every", "--val-every must be >= 0"),
    ],
)
def test_negative_counts_are_refused(files, capsys, option, message):
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "logits",
                "--labels",
                "y",
                option,
                "-1",
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 1
    )
    assert message in capsys.readouterr().err


def test_trainer_refuses_negative_counts_too():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    g.set_training(ge.mean((x * w) ** 2.0))
    with pytest.raises(ge.TrainingError, match="keep_checkpoints must be an int >= 0"):
        ge.Trainer(g, {"x": np.ones(4, np.float32)}, keep_checkpoints=-1)


def test_eval_exits_1_on_a_non_finite_loss(files, capsys):
    out = files / "trained.pb"
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "logits",
                "--labels",
                "y",
                "-q",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    bad = classifier_data(20, seed=2)
    bad["x"][3, 1] = np.nan
    np.savez(files / "bad.npz", **bad)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(files / "bad.npz")]) == 1
    captured = capsys.readouterr()
    assert "loss nan" in captured.out
    assert "loss is nan" in captured.err and "inf or nan" in captured.err


def test_summary_goes_to_stdout(files, capsys):
    assert (
        main(
            [
                "train",
                str(files / "plain.pb"),
                "--data",
                str(files / "train.npz"),
                "--val",
                str(files / "test.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "logits",
                "--labels",
                "y",
                "--checkpoint-dir",
                str(files / "ck"),
                "-o",
                str(files / "t.pb"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("trained 5 steps in ")
    assert "best val_loss " in out and f"written to {files / 'ck' / 'best.pb'}" in out


def _slow_run(files, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable,
        "-m",
        "graphengine",
        "train",
        str(files / "plain.pb"),
        "--data",
        str(files / "train.npz"),
        "--loss",
        "cross_entropy",
        "--predictions",
        "logits",
        "--labels",
        "y",
        "--epochs",
        "100000",
        "--batch-size",
        "4",
        "-o",
        str(files / "t.pb"),
        *extra,
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    log = (
        files
        / ("ck" if "--checkpoint-dir" in extra else "")
        / ("metrics.jsonl" if "--checkpoint-dir" in extra else "t.metrics.jsonl")
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until an epoch has been logged: training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.slow
def test_ctrl_c_writes_an_emergency_checkpoint_and_prints_the_resume_command(files):
    code, _, err = _slow_run(files)
    assert code == 130, err
    folder = files / "t.pb.interrupted"
    assert f"checkpoint written to '{folder}" in err
    command = err.split("resume with:\n  ", 1)[1].strip()
    assert command.endswith(f"--resume {folder}")
    saved = ge.training.read_checkpoint(ge.training.latest_checkpoint(folder))
    assert saved.step > 0
    # The printed command resumes (here with fewer epochs, so that it ends).
    args = command.split()[1:]
    args[args.index("--epochs") + 1] = str(saved.epoch + 1)
    assert main(args + ["-q"]) == 0


@pytest.mark.slow
def test_ctrl_c_with_a_checkpoint_dir_writes_there(files):
    code, _, err = _slow_run(files, "--checkpoint-dir", str(files / "ck"))
    assert code == 130, err
    assert f"checkpoint written to '{files / 'ck'}" in err and "--resume" in err


@pytest.mark.parametrize(
    "options, expected",
    [
        (
            [
                "--schedule",
                "one_cycle",
                "--no-cycle-momentum",
                "--base-momentum",
                "0.7",
                "--max-momentum",
                "0.8",
                "--pct-start",
                "0.4",
            ],
            {
                "kind": "one_cycle",
                "cycle_momentum": False,
                "base_momentum": 0.7,
                "max_momentum": 0.8,
                "pct_start": 0.4,
            },
        ),
        (
            [
                "--schedule",
                "reduce_on_plateau",
                "--plateau-cooldown",
                "2",
                "--plateau-mode",
                "min",
                "--plateau-min-delta",
                "0.01",
                "--plateau-patience",
                "1",
                "--plateau-monitor",
                "train_loss",
            ],
            {
                "kind": "reduce_on_plateau",
                "plateau_cooldown": 2,
                "plateau_mode": "min",
                "plateau_min_delta": 0.01,
                "plateau_patience": 1,
                "plateau_monitor": "train_loss",
            },
        ),
    ],
)
def test_schedule_options_reach_the_trained_files_spec(files, capsys, options, expected):
    out = files / "trained.pb"
    argv = ["train", str(files / "plain.pb"), "--data", str(files / "train.npz"), "--loss",
            "cross_entropy", "--predictions", "logits", "--labels", "y", "--epochs", "2",
            "-q", "-o", str(out), *options]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    schedule = ge.load(out).training.schedule
    assert {key: getattr(schedule, key) for key in expected} == expected
