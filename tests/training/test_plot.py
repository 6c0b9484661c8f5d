"""graphengine plot: curves from a real training log."""

import json

import numpy as np
import pytest

from graphengine.cli.main import main
from graphengine.cli.plot_cmd import read_records, series

from ..train_models import classifier, classifier_data


def test_plot_draws_the_log_of_a_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    classifier().save(tmp_path / "m.pb")
    np.savez(tmp_path / "d.npz", **classifier_data(96))
    assert (
        main(
            [
                "train",
                str(tmp_path / "m.pb"),
                "--data",
                str(tmp_path / "d.npz"),
                "--val",
                str(tmp_path / "d.npz"),
                "--log-every",
                "2",
                "--val-every",
                "3",
                "-q",
                "--log",
                str(tmp_path / "log.jsonl"),
                "-o",
                str(tmp_path / "t.pb"),
            ]
        )
        == 0
    )
    records = read_records(tmp_path / "log.jsonl")
    kinds = {r["kind"] for r in records}
    assert kinds == {"step", "validation", "epoch"}
    curves = series(records)
    steps, _ = curves["loss"]
    assert steps == list(range(2, 19, 2))  # every 2 of 18 steps
    assert curves["val_loss"][0] == [3, 6, 9, 12, 15, 18]  # every 3, and each epoch's end
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "log.jsonl"), "-o", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(
            ["plot", str(tmp_path / "log.jsonl"), "--keys", "val_f1", "-o", str(tmp_path / "x.png")]
        )
        == 1
    )
    assert "the log has no 'val_f1'" in capsys.readouterr().err


def test_a_log_line_that_is_not_json_is_named(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "train_loss": 1.0}) + "\n{bad\n")
    assert main(["plot", str(tmp_path / "log.jsonl"), "-o", str(tmp_path / "x.png")]) == 1
    assert "log.jsonl:2: not a JSON record" in capsys.readouterr().err
