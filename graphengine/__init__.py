"""graphengine: static computation graphs you can see, save, diff and re-run.

``import graphengine`` loads only the graph builder and the op set (numpy and
nothing heavier).  The rest of the public API is imported on first use through
the module's ``__getattr__``: the executor and the gradient pass (NetworkX),
files (protobuf, pathlib), drawing, training, optimization passes and the ONNX
bridge.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from . import ops
from .errors import (
    ExecutionError,
    FeedError,
    FileFormatError,
    GradientError,
    GraphEngineError,
    GraphError,
    ShapeError,
    TrainingError,
    TrainingInterrupted,
)
from .graph import Graph, Tensor
from .limits import Limits, get_limits, set_limits, using_limits
from .ops.api import *  # noqa: F401,F403  the op functions: ge.exp, ge.matmul ...
from .ops.api import __all__ as _op_names

if TYPE_CHECKING:  # pragma: no cover - what the lazy names below resolve to
    from .executor import run
    from .gradcheck import gradcheck
    from .gradients import GradientWarning, gradients
    from .input_files import allowing_linked_data
    from .onnx import from_onnx, to_onnx
    from .passes import PassReport, optimize
    from .render import RenderError, render, to_dot
    from .serialize import load, save
    from .training import BestCheckpoint, Callback, EarlyStopping, Trainer, add_loss, train

__version__ = "0.1.0"

#: Public names imported on first use: name -> module that defines it.
_LAZY = {
    "run": "executor",
    "gradcheck": "gradcheck",
    "gradients": "gradients",
    "GradientWarning": "gradients",
    "from_onnx": "onnx",
    "to_onnx": "onnx",
    "optimize": "passes",
    "PassReport": "passes",
    "RenderError": "render",
    "render": "render",
    "to_dot": "render",
    "load": "serialize",
    "save": "serialize",
    "Trainer": "training",
    "train": "training",
    "add_loss": "training",
    "Callback": "training",
    "EarlyStopping": "training",
    "BestCheckpoint": "training",
    # pathlib (about 10 ms of import where site has not already loaded it)
    "allowing_linked_data": "input_files",
}

__all__ = [
    "Graph",
    "Tensor",
    "run",
    "ops",
    "nn",
    "gradients",
    "gradcheck",
    "GradientWarning",
    "GraphEngineError",
    "GraphError",
    "ShapeError",
    "FeedError",
    "FileFormatError",
    "GradientError",
    "ExecutionError",
    "TrainingError",
    "RenderError",
    "render",
    "to_dot",
    "load",
    "save",
    "train",
    "Trainer",
    "from_onnx",
    "to_onnx",
    "optimize",
    "PassReport",
    "TrainingInterrupted",
    "add_loss",
    "Callback",
    "EarlyStopping",
    "BestCheckpoint",
    "Limits",
    "get_limits",
    "set_limits",
    "using_limits",
    "allowing_linked_data",
    *_op_names,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The package's module type.  Importing submodule ``graphengine.gradients``
    makes Python set the package attribute ``gradients`` to that module; for the
    submodules whose name is also a public function (``gradients``, ``gradcheck``,
    ``render``) the function is kept instead, as an eager import would."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Layers (graph and ops only, so imported at once); after the graph module is whole.
from . import nn  # noqa: E402
