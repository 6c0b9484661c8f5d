"""The errors of the ONNX bridge.

Both derive from :class:`graphengine.GraphEngineError`, so the CLI prints them
as one line and ``except ge.GraphEngineError`` catches them.
"""

from __future__ import annotations

from ..errors import GraphEngineError

#: How to get the optional dependencies, quoted by every message that needs them.
INSTALL_HINT = "pip install 'graphengine[onnx]'"


class OnnxUnavailableError(GraphEngineError):
    """The ``onnx`` package (or ``onnxruntime``, where it is needed) is not installed.

    The core of graphengine works without them; the ONNX bridge says how to get
    them: ``pip install 'graphengine[onnx]'``.
    """


class OnnxConversionError(GraphEngineError):
    """A model cannot be converted: an ONNX op, dtype or attribute that graphengine
    does not support on import, or an op of ours with no ONNX form on export.
    The message names the node (and lists every unsupported op at once)."""
