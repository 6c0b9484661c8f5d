"""Realistic models (tests/realistic_models.py) through the whole pipeline:
gradients against finite differences in float64, the optimizer's passes, save and
load in both file forms, training from the command line with checkpoints and a
bit-identical resume, drawing, ONNX export and import, and damaged checkpoints.

The default run keeps one or two models per check; the rest are marked slow."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main as graphengine

from .realistic_models import MODELS

FAST = ("conv1d", "unet")


def _params(fast=FAST):
    return [pytest.param(name, marks=() if name in fast else pytest.mark.slow) for name in MODELS]


def _gradient_fetches(tg: ge.Graph) -> list[str]:
    return ["loss", *tg.gradient.grads.values()]


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", _params())
def test_gradients_match_finite_differences(name, training):
    graph, data = MODELS[name]()
    feeds = {k: v[:3] for k, v in data.items()}
    result = ge.gradcheck(graph, "loss", None, feeds, training=training, atol=1e-6, rtol=1e-4)
    assert result.ok, str(result)
    assert len(result.checks) == len(graph.parameters(trainable=True))


@pytest.mark.parametrize("name", _params(FAST + ("resnet", "transformer")))
def test_optimize_keeps_losses_and_gradients(name, tmp_path):
    graph, data = MODELS[name]()
    tg = ge.gradients(graph, "loss")
    optimized, report = ge.optimize(tg)
    assert [r.name for r in report.records] == ["dce", "fold", "cse", "simplify", "cse", "fuse"]
    forward, _ = ge.optimize(graph)
    fetches = _gradient_fetches(tg)
    for training in (False, True):
        expected = ge.run(tg, fetches, data, training=training, seed=3)
        got = ge.run(optimized, fetches, data, training=training, seed=3)
        for key in fetches:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
        outputs = ge.run(graph, graph.outputs, data, training=training, seed=3)
        got = ge.run(forward, graph.outputs, data, training=training, seed=3)
        for key in graph.outputs:
            np.testing.assert_allclose(got[key], outputs[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # The optimized forward graph differentiates like the original, and the
    # optimized gradient graph saves and loads to the same results.
    again = ge.gradients(forward, "loss")
    expected = ge.run(tg, fetches, data, training=True, seed=3)
    got = ge.run(again, fetches, data, training=True, seed=3)
    for key in fetches:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    optimized.save(tmp_path / "optimized.pb")
    loaded = ge.load(tmp_path / "optimized.pb")
    a = ge.run(optimized, fetches, data, training=True, seed=3)
    b = ge.run(loaded, fetches, data, training=True, seed=3)
    for key in fetches:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("suffix", [".pb", ".pbtxt"])
@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip_is_exact(name, suffix, tmp_path):
    graph, data = MODELS[name]()
    tg = ge.gradients(graph, "loss")
    tg.save(tmp_path / f"model{suffix}")
    loaded = ge.load(tmp_path / f"model{suffix}")
    loaded.save(tmp_path / f"again{suffix}")
    assert (tmp_path / f"model{suffix}").read_bytes() == (tmp_path / f"again{suffix}").read_bytes()
    assert [n.name for n in loaded.nodes] == [n.name for n in tg.nodes]
    for key, value in tg.values.items():
        assert loaded.values[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.values[key], value, err_msg=key)
    fetches = _gradient_fetches(tg)
    a = ge.run(tg, fetches, data, training=True, seed=1)
    b = ge.run(loaded, fetches, data, training=True, seed=1)
    for key in fetches:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _saved_for_training(name: str, folder: Path) -> tuple[Path, Path]:
    graph, data = MODELS[name]()
    graph.set_training("loss", optimizer="adam", learning_rate=0.01, batch_size=4, epochs=3)
    graph.save(folder / "model.pb")
    np.savez(folder / "data.npz", **data)
    return folder / "model.pb", folder / "data.npz"


def _train(model: Path, data: Path, out: Path, *options: str) -> None:
    argv = ["train", str(model), "--data", str(data), "-o", str(out), "-q", *options]
    assert graphengine(argv) == 0


def _epoch_losses(log: Path) -> list[float]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [row["train_loss"] for row in rows if row.get("kind") == "epoch"]


@pytest.mark.parametrize("name", _params(("unet",)))
def test_cli_training_resumes_bit_identical(name, tmp_path):
    model, data = _saved_for_training(name, tmp_path)
    full = tmp_path / "full"
    _train(
        model,
        data,
        tmp_path / "full.pb",
        "--checkpoint-dir",
        str(full),
        "--checkpoint-every",
        "2",
        "--keep",
        "100",
        "--log",
        str(tmp_path / "log.jsonl"),
    )
    losses = _epoch_losses(tmp_path / "log.jsonl")
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    checkpoints = sorted(full.glob("ckpt-*.npz"))
    assert len(checkpoints) >= 3
    # Resume from a checkpoint in the middle of the run, in a folder of its own.
    part = tmp_path / "part"
    part.mkdir()
    middle = checkpoints[len(checkpoints) // 2 - 1]
    (part / middle.name).write_bytes(middle.read_bytes())
    _train(
        model, data, tmp_path / "resumed.pb", "--resume", str(part), "--checkpoint-dir", str(part)
    )
    a, b = ge.load(tmp_path / "full.pb"), ge.load(tmp_path / "resumed.pb")
    assert sorted(a.values) == sorted(b.values)
    for key in a.values:
        np.testing.assert_array_equal(a.values[key], b.values[key], err_msg=key)
    trained = ge.load(tmp_path / "full.pb")
    assert not all(np.array_equal(trained.values[k], v) for k, v in ge.load(model).values.items())


@pytest.mark.parametrize("name", list(MODELS))
def test_render_and_optimize_commands(name, tmp_path):
    graph, _ = MODELS[name]()
    graph.save(tmp_path / "model.pb")
    for view in ("forward", "gradient", "both"):
        out = tmp_path / f"{view}.dot"
        argv = ["render", str(tmp_path / "model.pb"), "-o", str(out), "--view", view]
        assert graphengine([*argv, "--loss", "loss"]) == 0
        assert out.read_text().startswith("digraph")
    out = tmp_path / "optimized.pb"
    assert graphengine(["optimize", str(tmp_path / "model.pb"), "-o", str(out), "--report"]) == 0
    assert ge.load(out).outputs == graph.outputs


def test_render_values_and_gradients_of_every_tensor(tmp_path):
    """``render --feed ... --grad`` differentiates every forward tensor.  In the
    transformer, dropout's mask ``encoder/attention/dropout:1`` and the next
    dropout ``encoder/attention/dropout_1`` both named their gradient
    ``gradients/encoder/attention/dropout_1``: a GraphError, nothing drawn."""
    graph, data = MODELS["transformer"]()
    graph.save(tmp_path / "model.pb")
    np.savez(tmp_path / "data.npz", **data)
    feeds = [arg for k in data for arg in ("--feed", f"{k}={tmp_path / 'data.npz'}:{k}")]
    out = tmp_path / "values.dot"
    argv = ["render", str(tmp_path / "model.pb"), "-o", str(out), "--view", "both"]
    assert graphengine([*argv, "--loss", "loss", *feeds, "--grad"]) == 0
    assert out.read_text().startswith("digraph")
    mask, second = "encoder/attention/dropout:1", "encoder/attention/dropout_1"
    tg = ge.gradients(graph, "loss", wrt=[mask, second])
    names = tg.gradient.grads
    assert names[second] == "gradients/encoder/attention/dropout_1"
    assert names[mask] != names[second]
    got = ge.run(tg, [names[mask], names[second]], data, training=True, seed=0)
    assert not got[names[mask]].any()  # the mask is not differentiable: zeros
    assert got[names[second]].any()


@pytest.mark.parametrize("name", _params(tuple(set(MODELS) - {"gru"})))
def test_onnx_export_import_runs_the_same(name, tmp_path):
    pytest.importorskip("onnx")
    graph, data = MODELS[name]()
    model = ge.to_onnx(graph)
    back = ge.from_onnx(model)
    expected = ge.run(graph, graph.outputs, data)
    got = ge.run(back, back.outputs, data)
    assert back.outputs == graph.outputs
    for key in graph.outputs:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: data[i.name] for i in session.get_inputs()}
    served = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for key in graph.outputs:
        np.testing.assert_allclose(served[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("view", ["forward", "gradient", "both"])
def test_long_rnn_drawing_stays_within_the_budget(view):
    """A 60-step, 2-layer GRU: collapsing each step to a box kept the units under
    the budget but drew 795 edges (every parameter feeds every step), which
    Graphviz 2.43 did not lay out within the 60 s timeout; the automatic collapse
    now bounds edges too."""
    from graphengine.render import RenderWarning, to_dot
    from graphengine.render.selection import EDGES_PER_UNIT, NODE_BUDGET

    graph, _ = MODELS["gru"](steps=60, hidden=4)
    with pytest.warns(RenderWarning, match="more than the budget"):
        text = to_dot(graph, view=view, loss="loss")
    edges = {line.split(" [")[0].strip() for line in text.splitlines() if " -> " in line}
    assert len(edges) <= EDGES_PER_UNIT * NODE_BUDGET, len(edges)
    assert "box rnn" in text, "the recurrent scopes were collapsed into boxes"


@pytest.mark.slow
def test_long_rnn_renders_with_dot(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    graph, _ = MODELS["gru"](steps=60, hidden=4)
    graph.save(tmp_path / "gru.pb")
    for view in ("forward", "gradient"):
        out = tmp_path / f"{view}.svg"
        argv = ["render", str(tmp_path / "gru.pb"), "-o", str(out), "--view", view]
        assert graphengine([*argv, "--loss", "loss"]) == 0
        assert "<svg" in out.read_text()


def _swapped(checkpoint: Path, source: Path) -> bytes | None:
    """``checkpoint`` with its first parameter that has a same-shaped parameter in
    ``source`` replaced by that one (the header, and its crc32s, left as they are)."""
    with np.load(checkpoint) as mine, np.load(source) as theirs:
        arrays = {k: mine[k] for k in mine.files}
        foreign = {theirs[k].shape: theirs[k] for k in theirs.files if k.startswith("param.")}
    swap = [k for k in arrays if k.startswith("param.") and arrays[k].shape in foreign]
    if not swap:
        return None
    arrays[swap[0]] = foreign[arrays[swap[0]].shape]
    path = checkpoint.with_suffix(".swap.npz")
    np.savez(path, **arrays)
    return path.read_bytes()


def _damaged_cases(checkpoints: list[Path], foreign: Path) -> dict[str, bytes]:
    """Truncations and byte flips of the newest checkpoint, and one parameter
    swapped for another of the same shape from a different model's checkpoint or
    from an older checkpoint of the run."""
    newest = checkpoints[-1]
    raw = newest.read_bytes()
    cases = {"half": raw[: len(raw) // 2], "tail": raw[:-7], "empty": b""}
    with zipfile.ZipFile(newest) as z:
        infos = [i for i in z.infolist() if i.filename.startswith("param.")]
    for info in infos[:3]:
        # Flip a byte inside the member's data (past its local header and the
        # .npy header), so only the checkpoint's own checks can notice.
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        flipped = bytearray(raw)
        flipped[start + info.compress_size - 1] ^= 0x40
        cases[f"flip-{info.filename}"] = bytes(flipped)
    for case, source in (("swap-other-model", foreign), ("swap-older", checkpoints[0])):
        blob = _swapped(newest, source)
        if blob is not None:
            cases[case] = blob
    assert "swap-older" in cases
    return cases


@pytest.mark.parametrize("name", _params(("conv1d",)))
def test_damaged_checkpoints_give_our_errors(name, tmp_path, capsys):
    model, data = _saved_for_training(name, tmp_path)
    _train(model, data, tmp_path / "trained.pb", "--checkpoint-dir", str(tmp_path / "ck"))
    other = "resnet" if name != "resnet" else "separable"
    (tmp_path / "other").mkdir()
    other_model, other_data = _saved_for_training(other, tmp_path / "other")
    _train(
        other_model,
        other_data,
        tmp_path / "other.pb",
        "--checkpoint-dir",
        str(tmp_path / "other" / "ck"),
    )
    checkpoints = sorted((tmp_path / "ck").glob("ckpt-*.npz"))
    newest = checkpoints[-1]
    foreign = sorted((tmp_path / "other" / "ck").glob("ckpt-*.npz"))[-1]
    cases = _damaged_cases(checkpoints, foreign)
    cases["other model"] = foreign.read_bytes()
    for case, blob in cases.items():
        folder = tmp_path / f"damaged-{case.replace(' ', '-')}"
        folder.mkdir()
        (folder / newest.name).write_bytes(blob)
        capsys.readouterr()
        argv = [
            "train",
            str(model),
            "--data",
            str(data),
            "-o",
            str(folder / "out.pb"),
            "--resume",
            str(folder),
            "--checkpoint-dir",
            str(folder),
            "-q",
        ]
        assert graphengine(argv) == 1, case
        err = capsys.readouterr().err
        assert "Traceback" not in err, (case, err)
        assert "TrainingError" in err.strip().splitlines()[-1], (case, err)
        assert not (folder / "out.pb").exists(), case
