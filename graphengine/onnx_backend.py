"""graphengine as an ONNX backend: see :mod:`graphengine.onnx.backend`.

Importing this module needs the ``onnx`` package (``pip install 'graphengine[onnx]'``).
"""

from __future__ import annotations

from .onnx import require_onnx

require_onnx()

from .onnx.backend import (
    GraphEngineBackend,
    GraphEngineRep,
    prepare,
    run_model,
    run_node,
    supports_device,
)

__all__ = [
    "GraphEngineBackend",
    "GraphEngineRep",
    "prepare",
    "run_model",
    "run_node",
    "supports_device",
]
