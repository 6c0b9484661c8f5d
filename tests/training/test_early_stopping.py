"""Early stopping and the best checkpoint on a crafted validation curve.

One weight w is trained towards 3 (targets 3x) while the validation targets are
1.5x, so the validation loss E[x^2] (w - 1.5)^2 falls until w passes 1.5 and
rises after: the best step and the stopping step follow from the recorded w.
"""

import json

import numpy as np
import pytest

import graphengine as ge


def _model(**settings):
    g = ge.Graph("curve")
    x = g.placeholder("x", (None,))
    t = g.placeholder("t", (None,))
    w = g.parameter("w", np.zeros((), np.float64))
    g.set_training(
        ge.mean((ge.cast(x, "float64") * w - ge.cast(t, "float64")) ** 2.0),
        batch_size=8,
        epochs=40,
        learning_rate=0.05,
        seed=1,
        **settings,
    )
    return g


X = np.linspace(-1, 1, 32, dtype=np.float32)
TRAIN = {"x": X, "t": 3 * X}
VAL = {"x": X, "t": 1.5 * X}


class Weights(ge.Callback):
    def __init__(self):
        self.w = {}

    def on_step(self, trainer, info):
        self.w[info.step] = float(trainer.graph.values["w"])


def _val_loss(w):
    return float(np.mean((X.astype(np.float64) * w - VAL["t"].astype(np.float64)) ** 2))


@pytest.mark.parametrize("patience", [1, 3])
def test_stops_where_the_curve_says_and_best_pb_holds_the_best_step(tmp_path, patience):
    weights = Weights()
    g = _model(validate_every=1, early_stopping={"patience": patience})
    result = ge.train(
        g,
        TRAIN,
        val=VAL,
        callbacks=[weights],
        checkpoint_dir=tmp_path / "ck",
        log=tmp_path / "ck" / "metrics.jsonl",
        progress=False,
    )
    losses = {step: _val_loss(w) for step, w in weights.w.items()}
    best_step = min(losses, key=losses.get)
    # Every step validates; the run stops `patience` validations after the best.
    assert result.stopped and result.steps == best_step + patience
    assert result.best["step"] == best_step and result.best["monitor"] == "val_loss"
    assert result.best["value"] == pytest.approx(losses[best_step], rel=1e-9)
    best = ge.load(tmp_path / "ck" / "best.pb")
    assert float(best.values["w"]) == weights.w[best_step]  # bit for bit
    assert best.metadata["best_step"] == str(best_step)
    assert float(g.values["w"]) == weights.w[result.steps]  # Keras: the last weights
    log = [json.loads(line) for line in (tmp_path / "ck" / "metrics.jsonl").open()]
    assert [r["step"] for r in log if "val_loss" in r] == list(range(1, result.steps + 1))


def test_restore_best_puts_back_the_best_parameters():
    weights = Weights()
    g = _model(validate_every=2, early_stopping={"patience": 2, "restore_best": True})
    result = ge.train(g, TRAIN, val=VAL, callbacks=[weights], progress=False)
    validated = {s: _val_loss(w) for s, w in weights.w.items() if s % 2 == 0 or s % 4 == 0}
    best_step = min(validated, key=validated.get)
    assert result.best["step"] == best_step
    assert float(g.values["w"]) == weights.w[best_step]


def test_min_delta_and_mode_max():
    stop = ge.EarlyStopping(monitor="val_score", patience=2, min_delta=0.1, mode="max")

    class Fake:
        default_monitor = "val_loss"
        stopped = False

        def stop(self):
            self.stopped = True

        def notice(self, message):
            pass

    trainer = Fake()
    stop.on_train_begin(trainer)
    for step, score in enumerate([0.5, 0.55, 0.65, 0.7, 0.74], start=1):
        stop.on_validation(trainer, {"step": step, "val_score": score})
        if trainer.stopped:
            break
    # 0.55 is no improvement on 0.5 (min_delta 0.1), 0.65 is; 0.7 and 0.74 are not.
    assert stop.best_step == 3 and stop.stopped_step == 5


def test_without_validation_data_it_watches_the_training_loss():
    g = _model(early_stopping={"patience": 2, "min_delta": 1e-3})
    result = ge.train(g, TRAIN, progress=False)
    assert result.stopped and result.best["monitor"] == "train_loss"


def test_an_unknown_monitor_names_the_keys():
    g = _model(early_stopping={"monitor": "val_acc"})
    with pytest.raises(ge.TrainingError, match=r"cannot monitor 'val_acc'.*'val_loss'"):
        ge.train(g, TRAIN, val=VAL, progress=False)


def test_early_stopping_from_the_command_line(tmp_path, capsys):
    from graphengine.cli.main import main

    _model().save(tmp_path / "m.pb")
    np.savez(tmp_path / "train.npz", **TRAIN)
    np.savez(tmp_path / "val.npz", **VAL)
    assert (
        main(
            [
                "train",
                str(tmp_path / "m.pb"),
                "--data",
                str(tmp_path / "train.npz"),
                "--val",
                str(tmp_path / "val.npz"),
                "--patience",
                "2",
                "--val-every",
                "1",
                "--checkpoint-dir",
                str(tmp_path / "ck"),
                "--json",
                "-o",
                str(tmp_path / "t.pb"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["stopped"] and summary["best"]["path"] == str(tmp_path / "ck" / "best.pb")
    spec = ge.load(tmp_path / "t.pb").training
    assert spec.early_stopping.patience == 2 and spec.validate_every == 1


KILLED_RUN = """
import os, signal, sys
import graphengine as ge
from tests.training.test_early_stopping import TRAIN, VAL, _model


class Kill(ge.Callback):
    def on_step(self, trainer, info):
        if info.step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no last checkpoint


g = _model(validate_every=2, early_stopping={"patience": 6, "restore_best": True})
ge.train(g, TRAIN, val=VAL, callbacks=[Kill()], checkpoint_dir=sys.argv[1],
         checkpoint_every=4, progress=False)
"""


def test_restore_best_survives_a_kill_and_a_resume(tmp_path):
    """SIGKILL after the best validation (step 20) and the checkpoint of step 24;
    the resumed run still knows the best value and step and, when it stops,
    puts back the parameters of step 20, as the uninterrupted run does."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    settings = {"validate_every": 2, "early_stopping": {"patience": 6, "restore_best": True}}
    weights = Weights()
    reference = _model(**settings)
    expected = ge.train(reference, TRAIN, val=VAL, callbacks=[weights], progress=False)
    assert expected.best["step"] == 20 and expected.steps == 32  # the curve this test needs
    assert float(reference.values["w"]) == weights.w[20] != weights.w[32]

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path / "ck"), "26"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (tmp_path / "ck").glob("ckpt-*.npz"))[-1] == "ckpt-000000024.npz"

    resumed = _model(**settings)
    result = ge.train(
        resumed,
        TRAIN,
        val=VAL,
        resume=tmp_path / "ck",
        checkpoint_dir=tmp_path / "ck",
        progress=False,
    )
    assert result.steps == 32 and result.stopped
    assert result.best == {**expected.best, "path": str(tmp_path / "ck" / "best.pb")}
    assert float(resumed.values["w"]) == weights.w[20]  # bit for bit
    assert float(ge.load(tmp_path / "ck" / "best.pb").values["w"]) == weights.w[20]
