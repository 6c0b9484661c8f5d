"""docs/ops.md, the op reference, is generated from the registry and kept fresh."""

import subprocess
import sys
from pathlib import Path

import graphengine as ge

ROOT = Path(__file__).resolve().parents[1]


def test_op_reference_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_op_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_op_reference_lists_every_op():
    page = (ROOT / "docs" / "ops.md").read_text()
    missing = [name for name in ge.ops.REGISTRY if f"### `{name}`" not in page]
    assert not missing
