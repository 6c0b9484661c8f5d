"""The example scripts run as a user runs them and reach their documented results."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, out: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--out", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_digits_data_file_holds_the_split():
    with np.load(EXAMPLES / "data" / "digits.npz", allow_pickle=False) as d:
        assert d["train_images"].shape == (1438, 8, 8) and d["test_images"].shape == (359, 8, 8)
        assert d["train_images"].dtype == np.uint8 and d["train_images"].max() == 16
        # Stratified: every class is a fifth of its images in the test split.
        counts = np.bincount(d["test_labels"], minlength=10)
        totals = counts + np.bincount(d["train_labels"], minlength=10)
        assert np.all(np.abs(counts - 0.2 * totals) <= 0.5)


def test_linear_regression_recovers_the_line(tmp_path):
    stdout = run_example("linear_regression.py", tmp_path)
    trained = ge.load(tmp_path / "trained.pb")
    assert np.allclose(trained.values["w"].ravel(), [2.0, -3.0, 0.5], atol=0.05)
    assert abs(float(trained.values["b"][0]) - 1.25) < 0.05
    assert "test mean squared error" in stdout


def test_logistic_regression_tells_threes_from_eights(tmp_path):
    stdout = run_example("logistic_regression.py", tmp_path)
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", stdout).group(1))
    assert accuracy >= 0.95
    assert (tmp_path / "forward.png").exists() and (tmp_path / "gradient.png").exists()


def test_digits_mlp_main_job_reaches_97_percent(tmp_path):
    stdout = run_example("digits_mlp.py", tmp_path)
    accuracy = float(re.search(r"test accuracy: (\d\.\d+)", stdout).group(1))
    assert accuracy >= 0.97
    for name in (
        "digits_mlp.pb",
        "forward.png",
        "gradient.png",
        "trained.pb",
        "checkpoints/metrics.jsonl",
    ):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "gradient.png").read_bytes().startswith(b"\x89PNG")
    # The eval command agrees, given the test arrays for the placeholders.
    data = EXAMPLES / "data" / "digits.npz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphengine",
            "eval",
            str(tmp_path / "trained.pb"),
            "--data",
            str(data),
            "--map",
            "images=test_images",
            "--map",
            "labels=test_labels",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(accuracy, abs=1e-4)


@pytest.mark.parametrize(
    "name, args", [("digits_mlp.py", ("--epochs", "1")), ("linear_regression.py", ())]
)
def test_an_example_run_again_in_its_folder_starts_afresh(name, args, tmp_path):
    # A user runs the main job twice: the second run must not trip over the
    # first one's checkpoints (training refuses a fresh run in a used folder).
    first = run_example(name, tmp_path, *args)
    again = run_example(name, tmp_path, *args)
    # Durations ("1.7 s", "in 0.1s:") differ from run to run; the rest must not.
    seconds = r"\d+\.\d+ ?s\b"
    assert re.sub(seconds, "", first) == re.sub(seconds, "", again)


@pytest.mark.slow
def test_digits_cnn_reaches_98_percent(tmp_path):
    stdout = run_example("digits_cnn.py", tmp_path)
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", stdout).group(1))
    assert accuracy >= 0.98
    trained = ge.load(tmp_path / "trained.pb")
    # The trainer kept the running statistics of batch normalization up to date.
    assert not np.allclose(trained.values["block1/running_var"], 1.0)


def _load_example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_feeds(name: str, tmp_path: Path) -> list[str]:
    with np.load(EXAMPLES / "data" / "digits.npz") as d:
        images, labels = d["test_images"][:4], d["test_labels"][:4]
    rng = np.random.default_rng(0)
    feeds = {
        "linear_regression": {
            "x": rng.normal(size=(5, 3)).astype(np.float32),
            "y": rng.normal(size=(5, 1)).astype(np.float32),
        },
        "logistic_regression": {"images": images, "is_eight": np.array([0, 1, 0, 1], np.float32)},
        "digits_mlp": {"images": images, "labels": labels},
        "digits_cnn": {"images": images, "labels": labels},
    }[name]
    path = tmp_path / "feeds.npz"
    np.savez(path, **feeds)
    return ["--feed-npz", str(path)]


@pytest.mark.parametrize(
    "name", ["linear_regression", "logistic_regression", "digits_mlp", "digits_cnn", "chain_rule"]
)
def test_grad_and_check_commands_work_on_every_example(name, tmp_path, capsys):
    from graphengine.cli.main import main

    model = tmp_path / f"{name}.pb"
    _load_example(name).build().save(model)
    loss = ["--loss", "f/y", "--wrt", "x"] if name == "chain_rule" else []
    assert main(["grad", str(model), *loss, "-o", str(tmp_path / "grad.pb")]) == 0
    grad = ge.load(tmp_path / "grad.pb")
    assert grad.gradient.grads and all(grad.node(n).derived_from for n in grad.gradient.nodes)
    if name == "chain_rule":
        np.save(tmp_path / "x.npy", np.float64(0.7))
        feeds = ["--feed", f"x={tmp_path / 'x.npy'}"]
    else:
        feeds = _example_feeds(name, tmp_path)
    # Training mode keeps batch-normalised values off relu's kink at exactly 0.
    mode = ["--training"] if name == "digits_cnn" else []
    assert main(["check", str(model), *loss, *feeds, *mode]) == 0, capsys.readouterr()
    assert "gradient check passed" in capsys.readouterr().out
