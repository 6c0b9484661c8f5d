"""The examples in docstrings run as written (STYLE.md: every public function has
one); each module's doctests are one test."""

import doctest
import importlib
import pkgutil

import pytest

import graphengine

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(graphengine.__path__, "graphengine.")
    if not m.name.endswith(("_pb2", "__main__"))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.startswith(("graphengine.onnx", "graphengine.onnx_backend")):
        pytest.importorskip("onnx")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
