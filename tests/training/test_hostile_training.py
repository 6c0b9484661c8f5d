"""Hostile settings and surroundings of ``graphengine train``: labels a class loss
would misread, output paths that cannot be written (a folder, a FIFO, a link, a
read-only place), a damaged or hostile metrics log, a full disk during a
checkpoint or the final save, non-finite parameters, and kills in the middle of
checkpoint writes.  Each gives one of our errors (the CLI: one line, exit 1)
naming what to change, before the training it would waste, and loses nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main
from graphengine.errors import TrainingError
from graphengine.training import Trainer, evaluate
from graphengine.training import checkpoint as ckpt_io
from graphengine.training import metrics as metrics_io

from ..train_models import assert_bitwise_equal, classifier, classifier_data

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from gallery import build_text_rnn, build_transformer_encoder  # noqa: E402


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (opening a FIFO blocks until a writer comes)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def files(tmp_path) -> Path:
    """A model without a loss (logits out of an MLP), and its data."""
    g = ge.Graph("mlp")
    x = g.placeholder("x", (None, 4))
    with g.name_scope("hidden"):
        h = ge.relu(ge.matmul(x, g.parameter("w", shape=(4, 8))))
    with g.name_scope("out"):
        logits = ge.matmul(h, g.parameter("w", shape=(8, 3)))
    g.mark_output(logits)
    ge.save(g, tmp_path / "mlp.pb")
    data = classifier_data(48)
    np.savez(tmp_path / "train.npz", **data)
    np.savez(tmp_path / "val.npz", **classifier_data(24, seed=1))
    return tmp_path


def _train(files: Path, *extra: str) -> int:
    return main(
        [
            "train",
            str(files / "mlp.pb"),
            "--loss",
            "cross_entropy",
            "--predictions",
            "out/matmul",
            "--labels",
            "y",
            "--epochs",
            "2",
            "--quiet",
            *extra,
        ]
    )


# -- labels a class loss would misread -------------------------------------------------

LABELS = {
    "fractional floats": (lambda y: y.astype(np.float32) + 0.5, "hold 0.5 at example"),
    "nan": (lambda y: np.where(np.arange(len(y)) == 5, np.nan, y).astype(np.float32), "nan"),
    "negative": (lambda y: y - 1, "hold -1 at example"),
    "the class count": (lambda y: np.where(np.arange(len(y)) == 9, 3, y), "hold 3 at example 9"),
}


@pytest.mark.parametrize("where", ["--data", "--val", "eval"])
@pytest.mark.parametrize("change", list(LABELS), ids=list(LABELS))
def test_labels_a_class_loss_would_misread_are_refused_before_training(
    files, capsys, where, change
):
    make, fragment = LABELS[change]
    data = classifier_data(48, seed=2)
    data["y"] = make(data["y"])
    if change == "fractional floats":
        fragment = f"hold {data['y'][0].item()!r} at example 0"
    np.savez(files / "bad.npz", **data)
    if where == "eval":
        code = main(
            ["eval", str(files / "mlp.pb"), "--data", str(files / "bad.npz")]
            + ["--loss", "cross_entropy", "--predictions", "out/matmul", "--labels", "y"]
        )
    elif where == "--val":
        code = _train(
            files, "--data", str(files / "train.npz"), "--val", str(files / "bad.npz"),
            "-o", str(files / "t.pb"),
        )  # fmt: skip
    else:
        code = _train(files, "--data", str(files / "bad.npz"), "-o", str(files / "t.pb"))
    err = _one_line_error(capsys, code)
    if where == "--val" and data["y"].dtype.kind == "f":
        # The training labels made an int64 placeholder: float labels do not fit it.
        fragment = "float32 does not convert to it exactly; store it as int64"
    else:
        assert "class labels must be" in err and "placeholder 'y'" in err
    assert fragment in err
    assert not (files / "t.pb").exists()


def test_whole_float_labels_and_bool_labels_still_train(files, capsys):
    for name, y in [("floats", classifier_data(48)["y"].astype(np.float64)), ("bools", None)]:
        data = classifier_data(48)
        data["y"] = y if y is not None else data["y"] > 0
        np.savez(files / f"{name}.npz", **data)
        assert _train(files, "--data", str(files / f"{name}.npz"), "-o", str(files / "t.pb")) == 0


def test_a_realistic_model_with_its_own_loss_refuses_out_of_range_labels():
    g = build_text_rnn()
    rng = np.random.default_rng(0)
    data = {"tokens": rng.integers(0, 20, (32, 5)), "labels": rng.integers(0, 3, 32)}
    data["labels"][17] = 7
    with pytest.raises(TrainingError, match="hold 7 at example 17; class labels must be from 0"):
        Trainer(g, data, progress=False)


@pytest.mark.parametrize("problem", ["length", "rank"])
def test_labels_of_the_wrong_length_or_rank_are_refused(files, capsys, problem):
    data = classifier_data(48)
    data["y"] = data["y"][:40] if problem == "length" else data["y"][:, None, None]
    np.savez(files / "bad.npz", **data)
    err = _one_line_error(capsys, _train(files, "--data", str(files / "bad.npz"), "-o", "t.pb"))
    assert ("has 40 examples" if problem == "length" else "labels 'y'") in err


# -- output paths -----------------------------------------------------------------------


def _folder(path: Path) -> None:
    path.mkdir(parents=True)


def _file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file, not a folder")


OUTPUTS = {
    "-o is a folder": ("out/t.pb", [], lambda f: _folder(f / "out/t.pb"), "is a folder; give -o"),
    "--best is a folder": (
        "t.pb",
        ["--checkpoint-dir", "ckpt"],
        lambda f: _folder(f / "ckpt/best.pb"),
        "is a folder; give --best",
    ),
    "--best under a file": (
        "t.pb",
        ["--best", "a-file/best.pb"],
        lambda f: _file(f / "a-file"),
        "cannot write best model",
    ),
    "--checkpoint-dir is a file": (
        "t.pb",
        ["--checkpoint-dir", "ckpt"],
        lambda f: _file(f / "ckpt"),
        "is a file; give --checkpoint-dir a folder",
    ),
    "--log is a folder": (
        "t.pb",
        ["--log", "log.jsonl"],
        lambda f: _folder(f / "log.jsonl"),
        "metrics log",
    ),
}


@pytest.mark.parametrize("case", list(OUTPUTS), ids=list(OUTPUTS))
def test_an_output_path_that_cannot_be_written_is_refused_before_training(
    files, capsys, monkeypatch, case
):
    output, extra, prepare, fragment = OUTPUTS[case]
    prepare(files)
    monkeypatch.chdir(files)
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    with deadline(60):
        code = _train(files, "--data", "train.npz", "--val", "val.npz", "-o", output, *extra)
    err = _one_line_error(capsys, code)
    assert fragment in err
    after = sorted(p.relative_to(files) for p in files.rglob("*") if p.name != ".lock")
    assert not [p for p in after if p not in before and p.suffix in (".npz", ".pb")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling symlink"])
def test_a_fifo_or_link_at_the_best_model_path_is_replaced_not_followed(files, kind):
    ckpt = files / "ckpt"
    ckpt.mkdir()
    best = ckpt / "best.pb"
    precious = files / "precious.txt"
    precious.write_text("keep me")
    if kind == "fifo":
        os.mkfifo(best)
    else:
        best.symlink_to(precious if kind == "symlink" else files / "missing" / "x.pb")
    with deadline(60):
        code = _train(
            files, "--data", str(files / "train.npz"), "--val", str(files / "val.npz"),
            "-o", str(files / "t.pb"), "--checkpoint-dir", str(ckpt),
        )  # fmt: skip
    assert code == 0
    assert best.is_file() and not best.is_symlink()
    assert ge.load(best).metadata["best_step"]
    assert precious.read_text() == "keep me"


def test_a_read_only_place_for_the_log_is_refused_at_the_start(files, monkeypatch):
    log = files / "ro" / "metrics.jsonl"
    real_open = os.open

    def read_only(path, flags, *args):
        if Path(path) == log and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(TrainingError, match="cannot write the metrics log .*Read-only file sys"):
        ge.train(classifier(), classifier_data(48), log=log, progress=False)


# -- the metrics log ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["--log", "checkpoint folder", "plot"])
def test_a_fifo_as_the_metrics_log_is_refused_without_blocking(files, capsys, where):
    ckpt = files / "ckpt"
    ckpt.mkdir()
    log = ckpt / "metrics.jsonl"
    os.mkfifo(log)
    with deadline(60):
        if where == "plot":
            code = main(["plot", str(log), "-o", str(files / "p.png")])
        else:
            extra = ["--log", str(log)] if where == "--log" else ["--checkpoint-dir", str(ckpt)]
            code = _train(files, "--data", str(files / "train.npz"), "-o", "t.pb", *extra)
    err = _one_line_error(capsys, code)
    assert "FIFO" in err and "metrics log" in err


def test_a_huge_line_without_newline_is_kept_unread_and_not_glued_to(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_io, "MAX_LINE_BYTES", 1000)
    log = tmp_path / "metrics.jsonl"
    huge = b'{"step": 3, "x": "' + b"A" * 5000  # no closing quote, no newline
    log.write_bytes(b'{"step": 1}\n{"step": Infinity}\n' + b"[" * 100_000 + b"\n" + huge)
    reader = metrics_io.MetricsLog(log)
    assert reader.records() == [{"step": 1}, {"step": float("inf")}]
    assert list(reader.lines())[-1] is None  # too long: never read whole
    reader.truncate_after(0)  # drops {"step": 1}, keeps what it cannot read
    reader.append({"step": 2})
    lines = log.read_bytes().split(b"\n")
    assert lines[0] == b'{"step": Infinity}' and lines[2] == huge and lines[3] == b'{"step": 2}'


def test_plot_reports_a_non_utf8_line_in_one_line(tmp_path, capsys):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1, "train_loss": 1.0}\n\xff\xfe\n')
    err = _one_line_error(capsys, main(["plot", str(log), "-o", str(tmp_path / "p.png")]))
    assert "metrics.jsonl:2: not a JSON record" in err


# -- a full disk ---------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fill_disk_after(monkeypatch, checkpoints: int) -> None:
    """Let ``checkpoints`` checkpoint writes through, then fail each one midway."""
    real = ckpt_io.atomic_file
    written = []

    @contextlib.contextmanager
    def atomic_file(path, pause_before_rename=0.0):
        with real(path, pause_before_rename) as f:
            written.append(path)
            yield f if len(written) <= checkpoints else _FullDisk(f, 1000)

    monkeypatch.setattr(ckpt_io, "atomic_file", atomic_file)


def test_a_full_disk_during_a_checkpoint_loses_nothing_and_resumes_exactly(tmp_path, monkeypatch):
    g, data = build_transformer_encoder(), _tokens(64, 30, 6, 4)
    settings = dict(epochs=3, batch_size=16, optimizer="adam", learning_rate=0.01)
    reference = build_transformer_encoder()
    ge.train(reference, data, progress=False, **settings)
    ckpt = tmp_path / "ckpt"
    _fill_disk_after(monkeypatch, 2)
    with pytest.raises(TrainingError) as info:
        ge.train(g, data, checkpoint_dir=ckpt, checkpoint_every=2, progress=False, **settings)
    message = str(info.value)
    assert "cannot write checkpoint" in message and "No space left on device" in message
    assert "ckpt-000000004.npz', is intact" in message and f"--resume {ckpt}" in message
    assert [p.name for p in ckpt.iterdir() if p.name.endswith("tmp")] == []
    kept = ckpt_io.list_checkpoints(ckpt)
    assert [p.name for p in kept] == ["ckpt-000000002.npz", "ckpt-000000004.npz"]
    assert [ckpt_io.read_checkpoint(p).step for p in kept] == [2, 4]
    monkeypatch.undo()  # space freed
    resumed = build_transformer_encoder()
    ge.train(resumed, data, checkpoint_dir=ckpt, resume=ckpt, progress=False, **settings)
    assert_bitwise_equal(dict(resumed.values), dict(reference.values))


@pytest.mark.parametrize("checkpoints", [True, False])
def test_a_full_disk_at_the_final_save_says_where_the_training_is(
    files, capsys, monkeypatch, checkpoints
):
    import graphengine.serialize as serialize

    real_save = serialize.save

    def save(graph, path, **kw):
        if Path(path).name == "t.pb":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(graph, path, **kw)

    monkeypatch.setattr(serialize, "save", save)
    extra = ["--checkpoint-dir", str(files / "ckpt")] if checkpoints else []
    code = _train(files, "--data", str(files / "train.npz"), "-o", str(files / "t.pb"), *extra)
    err = _one_line_error(capsys, code)
    assert "cannot write the trained model" in err and "No space left" in err
    if checkpoints:
        assert ckpt_io.latest_checkpoint(files / "ckpt").name in err and "--resume" in err
        monkeypatch.undo()
        code = _train(
            files, "--data", str(files / "train.npz"), "-o", str(files / "t.pb"),
            "--checkpoint-dir", str(files / "ckpt"), "--resume", str(files / "ckpt"),
        )  # fmt: skip
        assert code == 0 and ge.load(files / "t.pb")
    else:
        fallback = Path(err.split("written to '")[1].split("'")[0])
        assert ge.load(fallback).values.keys() == ge.load(files / "mlp.pb").values.keys()
        fallback.unlink()


# -- non-finite parameters and losses -----------------------------------------------------


def test_parameters_that_turn_nan_under_a_finite_loss_are_never_checkpointed(tmp_path):
    g = ge.Graph()
    x = g.placeholder("x", (None, 2))
    w = g.parameter("w", np.array([[1.0], [-1.0]], np.float32))
    # sqrt'(0) * abs'(0) = inf * sign(0) = inf * 0: a nan gradient while the loss
    # is 0 (PyTorch's too; relu's gradient gives an exact 0 there instead).
    g.set_training(ge.mean(ge.sqrt(ge.abs(ge.matmul(x, w)))), batch_size=4, epochs=3)
    with pytest.raises(TrainingError, match="parameter 'w' holds inf or nan after step 1"):
        ge.train(g, {"x": np.ones((4, 2), np.float32)}, checkpoint_dir=tmp_path, progress=False)
    assert ckpt_io.list_checkpoints(tmp_path) == []


def test_a_checkpoint_holding_nan_parameters_is_refused_on_resume(tmp_path, monkeypatch):
    Trainer(classifier(), classifier_data(48), checkpoint_dir=tmp_path, progress=False).fit()
    ckpt = ckpt_io.read_checkpoint(ckpt_io.latest_checkpoint(tmp_path))
    ckpt.params["out/w"] = np.full_like(ckpt.params["out/w"], np.nan)
    # Written past the writer's own check, as a damaged or edited file would be.
    monkeypatch.setattr(ckpt_io, "_refuse_non_finite", lambda folder, ckpt: None)
    ckpt_io.write_checkpoint(tmp_path / "bad", ckpt, keep=0)
    with pytest.raises(TrainingError, match="parameter 'out/w' holds inf or nan"):
        ge.train(classifier(), classifier_data(48), resume=tmp_path / "bad", progress=False)


def test_a_nan_loss_names_the_step_and_leaves_a_checkpoint_that_resumes(tmp_path):
    data = _tokens(64, 30, 6, 4)
    settings = dict(batch_size=16, optimizer="sgd", progress=False)
    with pytest.raises(TrainingError) as info:
        ge.train(
            build_transformer_encoder(), data, checkpoint_dir=tmp_path, epochs=50,
            learning_rate=1e4, **settings,
        )  # fmt: skip
    message = str(info.value)
    assert "the loss is nan at step" in message and "Lower the learning rate" in message
    kept = message.split("the last checkpoint, '")[1].split("'")[0]
    assert Path(kept) == ckpt_io.latest_checkpoint(tmp_path)
    ckpt = ckpt_io.read_checkpoint(kept)
    assert all(np.isfinite(v).all() for v in ckpt.params.values())
    step = int(message.split("at step ")[1].split(" ")[0])
    assert ckpt.step < step  # the step that failed was not applied
    # With a sane rate, the run continues from the kept checkpoint.
    result = ge.train(
        build_transformer_encoder(), data, checkpoint_dir=tmp_path, resume=tmp_path,
        epochs=ckpt.epoch + 1, learning_rate=1e-3, **settings,
    )  # fmt: skip
    assert result.steps > ckpt.step


# -- kills in the middle of checkpoint writes ---------------------------------------------


def _tokens(n: int, vocab: int, steps: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"tokens": rng.integers(0, vocab, (n, steps)), "labels": rng.integers(0, classes, n)}


_KILLED_RUN = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {examples!r})
import graphengine as ge
from gallery import build_text_rnn

real, writes = np.savez, [0]
def savez(f, **arrays):  # the checkpoint write number kill_at dies halfway
    writes[0] += 1
    if writes[0] == {kill_at}:
        real(f, **dict(list(arrays.items())[: len(arrays) // 2]))
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    real(f, **arrays)
np.savez = savez
rng = np.random.default_rng(0)
data = {{"tokens": rng.integers(0, 20, (40, 5)), "labels": rng.integers(0, 3, 40)}}
g = build_text_rnn()
ge.train(g, data, checkpoint_dir={ckpt!r}, checkpoint_every=2, resume={resume},
         epochs=3, batch_size=8, progress=False)
ge.save(g, {out!r})
"""


@pytest.mark.parametrize("kill_at", [2, 5])
def test_sigkill_halfway_through_a_checkpoint_write_then_resume_is_bit_identical(tmp_path, kill_at):
    examples = str(Path(__file__).resolve().parents[2] / "examples")
    ckpt, env = tmp_path / "ckpt", {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(out: str, kill: int, resume: bool):
        script = _KILLED_RUN.format(
            examples=examples, ckpt=str(ckpt if out != "reference" else tmp_path / "ref"),
            resume=repr(str(ckpt)) if resume else None, kill_at=kill,
            out=str(tmp_path / f"{out}.pb"),
        )  # fmt: skip
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)

    assert run("reference", -1, False).returncode == 0
    killed = run("killed", kill_at, False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert any(ckpt.glob(".ckpt-*.tmp"))  # the half-written file never became a checkpoint
    resumed = run("resumed", -1, True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert not any(ckpt.glob(".ckpt-*.tmp"))
    assert_bitwise_equal(
        dict(ge.load(tmp_path / "resumed.pb").values),
        dict(ge.load(tmp_path / "reference.pb").values),
    )


def test_the_log_of_a_killed_and_resumed_run_is_that_of_an_uninterrupted_one(tmp_path):
    data = classifier_data(48)
    reference = tmp_path / "reference.jsonl"
    ge.train(classifier(), data, log=reference, progress=False)
    ckpt = tmp_path / "ckpt"
    from .test_damaged_checkpoints import StopAt

    log = ckpt / "metrics.jsonl"
    ge.train(
        classifier(), data, checkpoint_dir=ckpt, log=log, callbacks=[StopAt(5)], progress=False
    )
    ge.train(classifier(), data, checkpoint_dir=ckpt, log=log, resume=ckpt, progress=False)

    def strip(path: Path) -> list[dict]:
        out = []
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out.append({k: v for k, v in record.items() if "second" not in k})
        return out

    assert strip(log) == strip(reference)


# -- outputs that would destroy inputs -----------------------------------------------------


def test_a_model_file_given_as_the_log_is_never_appended_to(files, capsys):
    model = (files / "mlp.pb").read_bytes()
    code = _train(files, "--data", str(files / "train.npz"), "-o", str(files / "t.pb"),
                  "--log", str(files / "mlp.pb"))  # fmt: skip
    err = _one_line_error(capsys, code)
    assert "is not a JSON-lines log" in err
    assert (files / "mlp.pb").read_bytes() == model


@pytest.mark.parametrize("flag", ["-o", "--best"])
def test_an_output_that_is_the_data_file_is_refused(files, capsys, flag):
    data = (files / "val.npz").read_bytes()
    extra = ["-o", str(files / "val.npz")] if flag == "-o" else ["-o", str(files / "t.pb")]
    extra += ["--best", str(files / "val.npz")] if flag == "--best" else []
    code = _train(files, "--data", str(files / "train.npz"), "--val", str(files / "val.npz"),
                  *extra)  # fmt: skip
    err = _one_line_error(capsys, code)
    assert f"{flag} '{files / 'val.npz'}' is the --val file" in err
    assert (files / "val.npz").read_bytes() == data


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "-1"])
def test_eval_refuses_a_batch_size_below_one(files, capsys, size):
    code = main(
        ["eval", str(files / "mlp.pb"), "--data", str(files / "train.npz"), "--batch-size", size]
        + ["--loss", "cross_entropy", "--predictions", "out/matmul", "--labels", "y"]
    )
    assert "--batch-size must be >= 1" in _one_line_error(capsys, code)
    with pytest.raises(TrainingError, match="batch_size must be an int >= 1"):
        evaluate(classifier(), classifier_data(8), batch_size=int(size))


@pytest.mark.parametrize("option", ["--map", "--val-map"])
def test_a_map_naming_no_array_is_refused_rather_than_falling_back(files, capsys, option):
    # Without the check, a typo fed 'x' from the array named 'x', silently.
    code = _train(files, "--data", str(files / "train.npz"), "--val", str(files / "val.npz"),
                  "-o", str(files / "t.pb"), option, "x=imagse")  # fmt: skip
    err = _one_line_error(capsys, code)
    assert f"{option} x=imagse:" in err and "has no array 'imagse'" in err


@pytest.mark.skipif(ckpt_io.fcntl is None, reason="needs flock")
def test_a_file_system_without_locks_is_not_taken_for_a_rival_run(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(ckpt_io.fcntl, "flock", no_locks)
    with pytest.raises(TrainingError, match="does not support locks") as info:
        ge.train(classifier(), classifier_data(48), checkpoint_dir=tmp_path, progress=False)
    assert "in use by another" not in str(info.value)


# -- links planted in a checkpoint folder ---------------------------------------------------


@pytest.mark.parametrize("planted", [".lock symlink", ".lock hard link", "metrics.jsonl symlink"])
def test_a_link_planted_in_a_checkpoint_folder_never_writes_through(tmp_path, planted):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    precious = tmp_path / "precious.jsonl"
    precious.write_text('{"step": 1, "mine": true}\n')
    name = planted.split()[0]
    if planted.endswith("symlink"):
        (ckpt / name).symlink_to(precious)
    else:
        os.link(precious, ckpt / name)
    with pytest.raises(TrainingError, match="symbolic link|not a file of its own"):
        ge.train(
            classifier(), classifier_data(48), checkpoint_dir=ckpt, log=ckpt / "metrics.jsonl",
            progress=False,
        )  # fmt: skip
    assert precious.read_text() == '{"step": 1, "mine": true}\n'  # not truncated, not appended


def test_a_full_disk_when_best_pb_is_written_names_the_checkpoint_and_resumes(
    tmp_path, monkeypatch
):
    import graphengine.serialize as serialize

    data, val = classifier_data(48), classifier_data(24, seed=1)
    reference = classifier()
    ge.train(reference, data, val=val, progress=False)
    real_save, saves = serialize.save, []

    def save(graph, path, **kw):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(graph, path, **kw)

    monkeypatch.setattr(serialize, "save", save)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TrainingError) as info:
        ge.train(classifier(), data, val=val, checkpoint_dir=ckpt, progress=False)
    message = str(info.value)
    assert "cannot write best model" in message and "No space left on device" in message
    assert "ckpt-000000003.npz', is intact" in message and f"--resume {ckpt}" in message
    monkeypatch.undo()
    resumed = classifier()
    ge.train(resumed, data, val=val, checkpoint_dir=ckpt, resume=ckpt, progress=False)
    assert_bitwise_equal(dict(resumed.values), dict(reference.values))


@pytest.mark.slow
def test_sigkill_at_random_moments_of_a_transformer_run_then_resume_is_bit_identical(tmp_path):
    """``graphengine train`` of the gallery's transformer layer, killed at random
    moments (checkpoints every 3 steps) and resumed until it ends: the model is
    the uninterrupted run's, bit for bit."""
    import random
    import time

    ge.save(build_transformer_encoder(), tmp_path / "m.pb")
    np.savez(tmp_path / "train.npz", **_tokens(256, 30, 6, 4))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "graphengine", "train", str(tmp_path / "m.pb")]
    command += ["--data", str(tmp_path / "train.npz"), "--epochs", "25", "--batch-size", "8"]
    command += ["--quiet", "--checkpoint-every", "3", "--optimizer", "adam", "--lr", "0.01"]
    start = time.perf_counter()
    subprocess.run([*command, "-o", str(tmp_path / "reference.pb")], env=env, check=True)
    # Kill moments scale with the uninterrupted run's time, so that the first run
    # is killed on a fast machine as on a slow one; after 40 kills the last run
    # is left to finish.
    whole = time.perf_counter() - start
    ckpt, r, kills = tmp_path / "ckpt", random.Random(7), 0
    while True:
        resume = ["--resume", str(ckpt)] if ckpt_io.list_checkpoints(ckpt) else []
        run = [*command, "-o", str(tmp_path / "out.pb"), "--checkpoint-dir", str(ckpt), *resume]
        process = subprocess.Popen(run, env=env, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=r.uniform(0.2, 0.75) * whole if kills < 40 else None)
            break
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        time.sleep(0.01)
    assert process.returncode == 0 and kills > 0
    assert_bitwise_equal(
        dict(ge.load(tmp_path / "out.pb").values), dict(ge.load(tmp_path / "reference.pb").values)
    )
