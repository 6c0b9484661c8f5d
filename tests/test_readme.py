"""The README's first-graph examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def first_graph_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## A first graph", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_first_graph_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = first_graph_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  our own README
    printed = capsys.readouterr().out
    assert "'loss': array(" in printed and "gradients/w" in printed
    assert (tmp_path / "affine.pb").exists() and (tmp_path / "affine_grad.pb").exists()
    assert (tmp_path / "affine_grad.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
