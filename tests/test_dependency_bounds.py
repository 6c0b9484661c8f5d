"""The lower bounds in pyproject.toml are tested, not guessed: this slow test
installs exactly the lowest admitted version of every runtime and test
dependency in a fresh virtual environment and runs a core part of the suite
there (the protobuf bound is also checked alone in test_proto_fresh.py)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Enough to exercise numpy, networkx, protobuf and graphviz through our code.
SUBSET = [
    "tests/test_graph.py",
    "tests/test_compiler.py",
    "tests/test_gradients.py",
    "tests/test_serialize.py",
    "tests/test_render.py",
    "tests/ops/test_elementwise.py",
]


def lowest_pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", requirement)
        assert match, f"{requirement!r} has no lower bound of the form name>=X"
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


@pytest.mark.slow
def test_suite_passes_at_the_lower_bounds(tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *lowest_pins()],
        capture_output=True,
        text=True,
        check=False,
    )
    if install.returncode != 0:
        if "No matching distribution" in install.stderr or "Could not" in install.stderr:
            pytest.skip(f"cannot reach a package index: {install.stderr.strip()[-200:]}")
        pytest.fail(install.stderr)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
