"""`import graphengine` and `graphengine --help` load only what they need.

Each check runs in a fresh interpreter, so modules imported by other tests
cannot hide an eager import.
"""

import json
import os
import subprocess
import sys

import pytest

HEAVY = [
    "networkx",
    "onnx",
    "onnxruntime",
    "graphviz",
    "google.protobuf",
    "graphengine.training",
    "graphengine.serialize",
    "graphengine.gradients",
    "graphengine.onnx",
    "graphengine.passes",
    "graphengine.render",
]


def _loaded_after(code: str) -> list[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def _heavy(modules: list[str], allowed=()) -> list[str]:
    return [name for name in HEAVY if name in modules and name not in allowed]


def test_import_graphengine_loads_no_heavy_module():
    modules = _loaded_after("import graphengine as ge\nge.Graph('g')")
    assert not _heavy(modules), f"`import graphengine` imported {_heavy(modules)}"


def test_building_a_graph_loads_no_heavy_module():
    modules = _loaded_after(
        "import numpy as np, graphengine as ge\n"
        "g = ge.Graph()\nx = g.placeholder('x', (None, 3))\n"
        "w = g.parameter('w', np.ones((3, 2), np.float32))\n"
        "y = ge.mean(ge.relu(x @ w))"
    )
    assert not _heavy(modules), f"building a graph imported {_heavy(modules)}"


def test_cli_parser_loads_no_heavy_module():
    # graphengine --help builds this parser; rendering is light (no graphviz module).
    modules = _loaded_after("from graphengine.cli.main import build_parser\nbuild_parser()")
    found = _heavy(modules, allowed=("graphengine.render",))
    assert not found, f"building the CLI parser imported {found}"


@pytest.mark.parametrize(
    "name, module",
    [
        ("run", "graphengine.executor"),
        ("load", "graphengine.serialize"),
        ("gradients", "graphengine.gradients"),
        ("optimize", "graphengine.passes"),
        ("train", "graphengine.training"),
    ],
)
def test_lazy_names_resolve_on_use(name, module):
    modules = _loaded_after(f"import graphengine as ge\nassert callable(ge.{name})")
    assert module in modules


def test_submodule_import_keeps_the_public_function():
    # Importing graphengine.gradients (the module) must not replace ge.gradients
    # (the function), as an eager `from .gradients import gradients` would not.
    import graphengine as ge
    import graphengine.gradcheck  # noqa: F401
    import graphengine.gradients  # noqa: F401
    import graphengine.render  # noqa: F401

    for name in ("gradients", "gradcheck", "render"):
        assert callable(getattr(ge, name)), name
    assert "load" in dir(ge)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ge.nonexistent  # noqa: B018
