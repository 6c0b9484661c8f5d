"""``graphengine inspect`` and ``graphengine run``: output, feeds, and one-line errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def x_value():
    return np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


def _expected(graph, x):
    return ge.run(graph, list(graph.outputs), {"x": x})


# -- inspect --------------------------------------------------------------------------


def test_inspect_prints_a_summary(model_file, capsys):
    assert main(["inspect", str(model_file)]) == 0
    out = capsys.readouterr().out
    for fragment in [
        "graph 'model_grad'",
        "format 1.1, opset 2, written by graphengine",
        "x  float32(N, 3)",
        "parameters: 2 (1 trainable), 4 values, 16 bytes",
        "layer1",
        "gradient: loss 'sum' (scalar loss), 1 gradient(s)",
        "d/d layer1/w -> gradients/layer1/w",
        "training: loss 'sum', adam lr 0.001",
        "author: tests",
    ]:
        assert fragment in out, fragment


def test_inspect_json_is_complete_and_machine_readable(model_graph, model_file, capsys):
    assert main(["inspect", str(model_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["graph"] == "model_grad" and summary["format_version"] == "1.1"
    assert summary["placeholders"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3]}]
    assert [o["name"] for o in summary["outputs"]] == model_graph.outputs
    assert summary["parameters"] == {"count": 2, "trainable": 1, "elements": 4, "bytes": 16}
    assert summary["nodes"]["count"] == len(model_graph)
    assert sum(summary["nodes"]["by_op"].values()) == len(model_graph)
    assert summary["nodes"]["by_op"]["placeholder"] == 1
    assert summary["scopes"]["layer1"] == sum(n.scope == "layer1" for n in model_graph.nodes)
    assert summary["gradient"]["grads"] == model_graph.gradient.grads
    assert summary["training"]["optimizer"]["name"] == "adam"
    assert summary["training"]["data_map"] == {"x": "inputs"}


def test_inspect_text_file_with_external_data(model_graph, tmp_path, capsys):
    path = tmp_path / "m.pbtxt"
    ge.save(model_graph, path, external_data_threshold=4)
    assert main(["inspect", str(path), "--json"]) == 0
    [data] = json.loads(capsys.readouterr().out)["external_data"]
    assert re.fullmatch(r"m\.pbtxt\.[0-9a-f]{12}\.data", data) and (tmp_path / data).is_file()


# -- run --------------------------------------------------------------------------------


def test_run_prints_the_outputs(model_graph, model_file, tmp_path, x_value, capsys):
    np.save(tmp_path / "x.npy", x_value)
    assert main(["run", str(model_file), "--feed", f"x={tmp_path / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    for name, value in _expected(model_graph, x_value).items():
        assert f"{name}: {value.dtype}{value.shape}" in out
        assert np.array2string(value, max_line_width=100).splitlines()[0] in out


@pytest.mark.parametrize("feed", ["npz-member", "npz-by-name", "feed-npz"])
def test_run_saves_results_to_npz(model_graph, model_file, tmp_path, x_value, capsys, feed):
    np.savez(tmp_path / "data.npz", inputs=x_value, x=x_value, other=np.zeros(1))
    data = tmp_path / "data.npz"
    args = {
        "npz-member": ["--feed", f"x={data}:inputs"],
        "npz-by-name": ["--feed", f"x={data}"],
        "feed-npz": ["--feed-npz", str(tmp_path / "x-only.npz")],
    }[feed]
    np.savez(tmp_path / "x-only.npz", x=x_value)
    out = tmp_path / "out.npz"
    fetches = ["--fetch", "layer1/tanh", "--fetch", "gradients/layer1/w"]
    assert main(["run", str(model_file), *args, *fetches, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    expected = ge.run(model_graph, ["layer1/tanh", "gradients/layer1/w"], {"x": x_value})
    with np.load(out) as got:
        assert sorted(got.files) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_run_summarizes_large_arrays(tmp_path, capsys):
    g = ge.Graph("big")
    g.mark_output(ge.exp(g.placeholder("x", (50, 50))))
    ge.save(g, tmp_path / "big.pb")
    x = np.zeros((50, 50), np.float32)
    x[0, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "big.pb"), "--feed", f"x={tmp_path / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    assert "exp: float32(50, 50)" in out and "min 1, max 1, mean 1, 1 non-finite" in out
    assert len(out.splitlines()) < 12


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (
            None,
            ["--feed", "x=missing.npy"],
            "FeedError: --feed 'x=missing.npy': file 'missing.npy' does not exist",
        ),
        (
            "garbage",
            ["--feed", "x=bad.npy"],
            "FileFormatError: --feed 'x=bad.npy': 'bad.npy' is not a .npy or .npz file",
        ),
        (
            "truncated",
            ["--feed", "x=bad.npy"],
            "FileFormatError: --feed 'x=bad.npy': file 'bad.npy' is truncated: "
            "its header says (2, 3)",
        ),
        (
            "npz",
            ["--feed", "x=data.npz:nope"],
            "FeedError: --feed 'x=data.npz:nope': 'data.npz' has no array 'nope'; it has 'x'",
        ),
        ("npz", ["--feed", "x"], "CommandError: --feed 'x': expected NAME=FILE.npy"),
        ("npz", ["--feed-npz", "x.npy"], "FeedError: --feed-npz 'x.npy': file 'x.npy' does not"),
        (
            "npz",
            ["--feed", "x=data.npz", "--fetch", "nope"],
            "FeedError: graph 'model_grad' has no tensor 'nope'",
        ),
        ("npz", [], "FeedError: missing feed for placeholder(s) 'x'"),
        ("wrong dtype", ["--feed", "x=bad.npy"], "FeedError: feed 'x' has dtype float64"),
    ],
)
def test_run_errors_are_one_line(
    model_file, tmp_path, monkeypatch, capsys, x_value, setup, args, message
):
    monkeypatch.chdir(tmp_path)
    if setup == "garbage":
        Path("bad.npy").write_bytes(b"not numpy at all")
    elif setup == "truncated":
        np.save("bad.npy", x_value)
        Path("bad.npy").write_bytes(Path("bad.npy").read_bytes()[:-5])
    elif setup == "wrong dtype":
        np.save("bad.npy", x_value.astype(np.float64))
    elif setup == "npz":
        np.savez("data.npz", x=x_value)
    assert main(["run", str(model_file), *args]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("graphengine run: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_bad_model_files_are_one_line_errors(tmp_path, capsys, command):
    (tmp_path / "bad.pb").write_bytes(b"\x08\x02garbage")
    for path, fragment in [
        (tmp_path / "bad.pb", "FileFormatError"),
        (tmp_path / "none.pb", "does not exist|No such file"),
    ]:
        assert main([command, str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"graphengine {command}: ")
        assert any(f in err for f in fragment.split("|"))


# -- a real process ------------------------------------------------------------------------


def test_commands_in_a_subprocess(model_graph, model_file, tmp_path, x_value):
    np.save(tmp_path / "x.npy", x_value)

    def graphengine(*args):
        return subprocess.run(
            [sys.executable, "-m", "graphengine", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )

    inspected = graphengine("inspect", model_file, "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["graph"] == "model_grad"
    out = tmp_path / "out.npz"
    ran = graphengine("run", model_file, "--feed", f"x={tmp_path / 'x.npy'}", "-o", out)
    assert ran.returncode == 0, ran.stderr
    with np.load(out) as got:
        for name, value in _expected(model_graph, x_value).items():
            np.testing.assert_array_equal(got[name], value)
    failed = graphengine("run", tmp_path / "missing.pb")
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    # `graphengine inspect m.pb --params | head -1`: the table is far larger than
    # a pipe's buffer, so the command is still writing when the reader closes.
    g = ge.Graph("many")
    for i in range(3000):
        g.parameter(f"block{i}/weight", np.zeros(2, np.float32))
    g.save(tmp_path / "many.pb")
    process = subprocess.Popen(
        [sys.executable, "-m", "graphengine", "inspect", str(tmp_path / "many.pb"), "--params"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"graph 'many'")
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, error
    assert error == ""  # no traceback, no "Broken pipe" message
