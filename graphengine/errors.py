"""The exception types of graphengine.

Every error that a user can cause derives from :class:`GraphEngineError`, so one
``except ge.GraphEngineError`` catches them all.  Each subclass names a stage:
building or validating a graph, inferring shapes, feeding data, reading a file,
differentiating, executing, training.  Messages say what went wrong, where (the
node, input or field), what was seen and what was expected, and how to fix it.
"""

from __future__ import annotations

from typing import Any


class GraphEngineError(Exception):
    """Base class of every error graphengine raises on bad input."""


class GraphError(GraphEngineError):
    """The structure of a graph is invalid: a cycle, a dangling input, a duplicate
    or malformed name, an unknown op, or an attribute of the wrong type."""


class ShapeError(GraphEngineError):
    """Shapes or dtypes of an op's operands do not fit together.  Raised when the
    op is built (by shape inference), not when it runs."""


class FeedError(GraphEngineError):
    """A value fed to a placeholder has the wrong shape or dtype, a required feed
    is missing, a feed names no placeholder, or a fetch names no tensor."""


class FileFormatError(GraphEngineError):
    """A model file cannot be read: truncated, corrupt, of another format, from a
    newer major version, or declaring tensors that do not fit their data."""


class GradientError(GraphEngineError):
    """The gradient graph cannot be built: a missing gradient rule, a wrt tensor
    that the loss does not depend on, or a non-scalar loss without a seed."""


class ExecutionError(GraphEngineError):
    """A kernel failed while running; the message names the node and the shapes
    of its inputs, and the numpy error is chained as ``__cause__``."""


class TrainingError(GraphEngineError):
    """Training cannot start or cannot go on: bad data, a non-finite loss, a
    checkpoint that belongs to another graph."""


class TrainingInterrupted(TrainingError):
    """Training was stopped by Ctrl-C after a whole step.  ``checkpoint`` is the
    checkpoint written at that step (None when there was nowhere to write it)
    and ``step`` the number of updates done."""

    def __init__(self, message: str, checkpoint: Any = None, step: int = 0) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


class RenderError(GraphEngineError):
    """A drawing cannot be made: Graphviz's ``dot`` is missing or failed, the output
    format is unknown, or the view needs a loss that the graph does not name."""
