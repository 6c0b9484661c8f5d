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


#: Standard-library modules that ``import graphengine`` does without (numpy does
#: not import them either): records are named tuples or plain classes, not
#: dataclasses, whose generated methods cost about a millisecond each at import;
#: file handling (pathlib: ~10 ms where site has not loaded it already), the
#: CLI's argparse and the compressors wait for their use.
NOT_AT_IMPORT = [
    "dataclasses",
    "copy",
    "zlib",
    "pathlib",
    "argparse",
    "json",
    "zipfile",
    "graphengine.cli",
    "graphengine.input_files",
]


def test_import_graphengine_skips_stdlib_modules_it_does_not_need():
    # Blocked rather than looked up in sys.modules: site may have imported some
    # (an editable install's finder imports pathlib), and the ImportError's
    # traceback names the module that asked.
    script = (
        f"import sys, numpy\nfor m in {NOT_AT_IMPORT!r}:\n    sys.modules[m] = None\n"
        "import graphengine"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"`import graphengine` imported a blocked module:\n{out.stderr}"


def test_building_a_graph_loads_no_heavy_module():
    modules = _loaded_after(
        "import numpy as np, graphengine as ge\n"
        "g = ge.Graph()\nx = g.placeholder('x', (None, 3))\n"
        "w = g.parameter('w', np.ones((3, 2), np.float32))\n"
        "y = ge.mean(ge.relu(x @ w))"
    )
    assert not _heavy(modules), f"building a graph imported {_heavy(modules)}"


def test_cli_parser_loads_no_heavy_module():
    # The parser with every command's options; rendering is light (no graphviz module).
    modules = _loaded_after("from graphengine.cli.main import build_parser\nbuild_parser()")
    found = _heavy(modules, allowed=("graphengine.render",))
    assert not found, f"building the CLI parser imported {found}"


#: What ``graphengine --help`` must not import: the commands' implementations
#: (each command module is imported only when its command runs).
NOT_FOR_HELP = [
    *HEAVY,
    "graphengine.cli.grad_cmd",
    "graphengine.cli.inspect_cmd",
    "graphengine.cli.onnx_cmd",
    "graphengine.cli.optimize_cmd",
    "graphengine.cli.plot_cmd",
    "graphengine.cli.render_cmd",
    "graphengine.cli.run_cmd",
    "graphengine.cli.train_cmd",
    "graphengine.executor",
    "graphengine.compiler",
    "graphengine.npz_files",
    "graphengine.training_spec",
    "subprocess",
    "zipfile",
]


def test_cli_help_imports_no_command_module():
    modules = _loaded_after(
        "import contextlib, sys\nfrom graphengine.cli.main import main\n"
        "sys.argv = ['graphengine', '--help']\n"
        "with contextlib.suppress(SystemExit):\n    main()"
    )
    found = [name for name in NOT_FOR_HELP if name in modules]
    assert not found, f"`graphengine --help` imported {found}"


def test_cli_help_lists_every_command_with_its_modules_help_line():
    # --help lists the commands from the table in cli/main.py without importing
    # their modules; the listing must be the one their modules' parsers give.
    from graphengine.cli.main import build_parser

    assert build_parser(commands=[]).format_help() == build_parser().format_help()


def test_a_command_imports_its_module_only():
    modules = _loaded_after(
        "import contextlib, sys\nfrom graphengine.cli.main import main\n"
        "sys.argv = ['graphengine', 'grad', '--help']\n"
        "with contextlib.suppress(SystemExit):\n    main()"
    )
    assert "graphengine.cli.grad_cmd" in modules
    assert "graphengine.cli.train_cmd" not in modules


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
