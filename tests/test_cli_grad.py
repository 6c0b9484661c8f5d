"""``graphengine grad`` and ``graphengine check`` from the command line."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main


@pytest.fixture
def affine_file(tmp_path):
    g = ge.Graph("affine")
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32))
    b = g.parameter("b", np.zeros(2, np.float32))
    with g.name_scope("layer1"):
        y = ge.tanh(x @ w + b)
    ge.mean(y * y, name="loss")
    path = tmp_path / "affine.pb"
    g.save(path)
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
    return path


def test_grad_writes_a_gradient_graph_that_runs(affine_file, tmp_path, capsys):
    out = tmp_path / "affine_grad.pb"
    assert main(["grad", str(affine_file), "--loss", "loss", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "d loss / d w  ->  gradients/w" in printed
    tg = ge.load(out)
    assert tg.gradient.grads == {"w": "gradients/w", "b": "gradients/b"}
    assert all(tg.node(n).derived_from for n in tg.gradient.nodes)
    xv = np.load(tmp_path / "x.npy")
    got = ge.run(tg, ["gradients/w"], {"x": xv})["gradients/w"]
    direct = ge.gradients(ge.load(affine_file), "loss")
    np.testing.assert_array_equal(got, ge.run(direct, "gradients/w", {"x": xv}))


def test_grad_with_chosen_wrt_and_unconnected_error(affine_file, tmp_path, capsys):
    out = tmp_path / "g.pb"
    assert main(["grad", str(affine_file), "--loss", "loss", "--wrt", "x", "-o", str(out)]) == 0
    assert list(ge.load(out).gradient.grads) == ["x"]
    g = ge.load(affine_file)
    g.parameter("lonely", np.ones(2, np.float32))
    g.save(affine_file)
    code = main(
        [
            "grad",
            str(affine_file),
            "--loss",
            "loss",
            "--wrt",
            "lonely",
            "--unconnected",
            "error",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "does not depend on 'lonely'" in err and err.count("\n") == 1


def test_grad_without_loss_says_how_to_name_it(affine_file, tmp_path, capsys):
    assert main(["grad", str(affine_file), "-o", str(tmp_path / "g.pb")]) == 1
    assert "--loss" in capsys.readouterr().err


def test_check_passes_and_fails(affine_file, tmp_path, capsys, monkeypatch):
    feed = f"x={tmp_path / 'x.npy'}"
    assert main(["check", str(affine_file), "--loss", "loss", "--feed", feed]) == 0
    out = capsys.readouterr().out
    assert "ok   w" in out and "ok   b" in out and "passed" in out
    # A wrong gradient rule must make the check fail with exit code 1.
    from graphengine.ops.registry import REGISTRY

    tanh = type(REGISTRY["tanh"])
    monkeypatch.setattr(tanh, "vjp", lambda self, node, dy: [dy * node.outputs[0]])
    assert main(["check", str(affine_file), "--loss", "loss", "--feed", feed]) == 1
    captured = capsys.readouterr()
    assert "FAIL w" in captured.out and "FAILED" in captured.err
