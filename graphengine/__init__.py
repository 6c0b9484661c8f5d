"""graphengine: static computation graphs you can see, save, diff and re-run."""

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
)
from .executor import run
from .gradcheck import gradcheck
from .gradients import GradientWarning, gradients
from .graph import Graph, Tensor
from .onnx import from_onnx, to_onnx  # lazy: onnx is imported only when they are called
from .ops.api import *  # noqa: F401,F403  the op functions: ge.exp, ge.matmul ...
from .ops.api import __all__ as _op_names
from .render import RenderError, render, to_dot
from .serialize import load, save
from .training import Trainer, train

__version__ = "0.1.0"

__all__ = ["Graph", "Tensor", "run", "ops", "gradients", "gradcheck", "GradientWarning",
           "GraphEngineError", "GraphError", "ShapeError", "FeedError", "FileFormatError",
           "GradientError", "ExecutionError", "TrainingError", "RenderError", "render", "to_dot",
           "load", "save", "train", "Trainer", "from_onnx", "to_onnx",
           *_op_names]
