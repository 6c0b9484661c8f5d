"""The errors of the ONNX bridge.

Each derives from :class:`graphengine.GraphEngineError`, so the CLI prints them
as one line and ``except ge.GraphEngineError`` catches them.

Every refusal while importing is an :class:`OnnxConversionError` naming the
node, tensor or file at fault.  Those about files (the model file, or an
external data file it names: missing, outside the model's folder, hard-linked,
overlapping, truncated, a FIFO ...) are :class:`OnnxFileError`, which is also a
:class:`graphengine.FileFormatError`: that is what they were before, and what
``ge.load`` raises for our own files, so code catching either keeps working.
OnnxConversionError itself is not a FileFormatError: an op with no import
rule, or an op of ours with no ONNX form on export, is no damage to a file.
"""

from __future__ import annotations

from ..errors import FileFormatError, GraphEngineError

#: How to get the optional dependencies, quoted by every message that needs them.
INSTALL_HINT = "pip install 'graphengine[onnx]'"


class OnnxUnavailableError(GraphEngineError):
    """The ``onnx`` package (or ``onnxruntime``, where it is needed) is not installed.

    The core of graphengine works without them; the ONNX bridge says how to get
    them: ``pip install 'graphengine[onnx]'``.
    """


class OnnxConversionError(GraphEngineError):
    """A model cannot be converted: an ONNX op, dtype or attribute that graphengine
    does not support on import, a file or external data that cannot be read, or
    an op of ours with no ONNX form on export.  The message names the node,
    tensor or file (and lists every unsupported op at once)."""


class OnnxFileError(OnnxConversionError, FileFormatError):
    """An ONNX model file, or an external data file it names, cannot be read or is
    refused (missing, not a regular file, outside the model's folder, with more
    than one hard link or another owner, too short, overlapping another tensor's
    bytes, not matching its checksum).  Both an :class:`OnnxConversionError` and a
    :class:`graphengine.FileFormatError`; the message names the tensor and file."""
