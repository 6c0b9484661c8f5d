"""graphengine/ops/api.pyi, the type stub of the generated op functions, is
fresh, and type checkers see ``ge.exp`` and friends through it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_api_stub_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_api_stub.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stub_lists_every_public_op_function():
    import graphengine as ge

    stub = (ROOT / "graphengine" / "ops" / "api.pyi").read_text()
    for name in ge.ops.api.__all__:
        assert f"\ndef {name}(" in stub, name


SNIPPET = """
import graphengine as ge
g = ge.Graph()
x = g.placeholder("x", (None, 3))
y: ge.Tensor = ge.exp(x) * 2.0 + ge.sum(x, axis=1, keepdims=True)
pieces: list[ge.Tensor] = ge.split(x, 3, axis=1)
out, mean, var = ge.batch_norm(x, y, y, y, y, return_stats=True)
one: ge.Tensor = ge.batch_norm(x, y, y, y, y)
kept: ge.Tensor = ge.dropout(x, 0.5)
loss: ge.Tensor = ge.softmax_cross_entropy(x, y)
reveal_type(ge.matmul)
ge.exp(x, axis=0)
"""


@pytest.mark.slow
def test_a_type_checker_sees_the_op_functions(tmp_path):
    pytest.importorskip("mypy")
    script = tmp_path / "use_ops.py"
    script.write_text(SNIPPET)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            str(script),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    out = result.stdout
    assert "def (a: graphengine.graph.Tensor" in out and "-> graphengine.graph.Tensor" in out, out
    # The one error is the bad keyword: the stub knows exp's parameters.
    assert 'Unexpected keyword argument "axis" for "exp"' in out, out
    assert "Found 1 error" in out, out
