"""The ONNX bridge is an optional extra: without onnx the core works, and the
ONNX functions and commands say how to install it.  Runs in subprocesses in
which ``onnx`` and ``onnxruntime`` cannot be imported, so it needs neither."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_without_onnx(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['onnx'] = None\nsys.modules['onnxruntime'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_core_works_and_onnx_functions_say_how_to_install_the_extra():
    result = run_without_onnx("""
        import numpy as np
        import graphengine as ge
        g = ge.Graph()
        x = g.placeholder("x", (None, 2))
        y = ge.relu(x * 2.0)
        assert ge.run(g, y, {"x": np.ones((1, 2), np.float32)}).tolist() == [[2.0, 2.0]]
        for call in (lambda: ge.to_onnx(g), lambda: ge.from_onnx("m.onnx")):
            try:
                call()
            except ge.GraphEngineError as exc:
                assert type(exc).__name__ == "OnnxUnavailableError", exc
                assert "pip install 'graphengine[onnx]'" in str(exc), exc
            else:
                raise AssertionError("no error without onnx")
        try:
            import graphengine.onnx_backend
        except ge.GraphEngineError as exc:
            assert "graphengine[onnx]" in str(exc)
        else:
            raise AssertionError("the backend imported without onnx")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_commands_say_how_to_install_the_extra(tmp_path):
    for command in (["import", "m.onnx", "-o", "m.pb"], ["export", "m.pb", "-o", "m.onnx"]):
        result = run_without_onnx(f"""
            from graphengine.cli.main import main
            raise SystemExit(main({command!r}))
        """)
        assert result.returncode == 1, result.stderr
        assert "pip install 'graphengine[onnx]'" in result.stderr
        assert "Traceback" not in result.stderr
