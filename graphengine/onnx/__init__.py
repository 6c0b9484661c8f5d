"""The ONNX bridge: import ONNX models as graphs and export graphs as ONNX models.

``onnx`` (and ``onnxruntime``, for serving and the tests) are an optional extra:
``pip install 'graphengine[onnx]'``.  This module imports neither until a
function is called, so ``import graphengine`` works without them.

* :func:`from_onnx` turns an ONNX model (a path, bytes or ``onnx.ModelProto``)
  into a :class:`~graphengine.Graph`: graph inputs become placeholders,
  initializers parameters, Constant nodes constants.
* :func:`to_onnx` turns a graph into an ``onnx.ModelProto`` that passes
  ``onnx.checker.check_model(full_check=True)``.
* :mod:`graphengine.onnx.backend` implements ``onnx.backend.base.Backend``, so
  ONNX's own conformance tests can judge our forward semantics.

How each ONNX op maps to ours, and where the semantics differ, is written in the
import rules (``import_elementwise``, ``import_reduce``, ``import_shape``,
``import_linalg``, ``import_nn``, ``import_loss``, ``import_symbolic``) and the
export rules (``export_ops``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..graph import require_graph
from .errors import INSTALL_HINT, OnnxConversionError, OnnxFileError, OnnxUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from ..graph import Graph

#: ONNX opsets (default domain) the importer reads and the exporter writes: from
#: this one to the newest that the installed ``onnx`` defines.
MIN_OPSET = 13
#: The opset :func:`to_onnx` writes by default: the first with ``Gelu``, which
#: onnxruntime supports from 1.16.
DEFAULT_OPSET = 20


def require_onnx() -> Any:
    """Import and return the ``onnx`` module, or raise OnnxUnavailableError saying
    how to install it."""
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailableError(
            f"the ONNX bridge needs the 'onnx' package, which is not installed; install "
            f"the extra with: {INSTALL_HINT}"
        ) from None
    return onnx


def from_onnx(
    model: str | os.PathLike | bytes | onnx.ModelProto,
    *,
    freeze: Iterable[str] = (),
    name: str | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Graph:
    """Import an ONNX model as a graph.

    Args:
        model: a path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
        freeze: names of initializers to import as non-trainable parameters
            (initializers are trainable by default; non-float ones never are).
        name: the graph's name (default: the ONNX graph's name).
        base_dir: where external data files live, for a ModelProto or bytes
            (a path's own folder otherwise).  Files must stay inside it.

    Returns:
        A graph whose placeholders are the model's inputs (``dim_param`` dims
        become symbolic dims), whose parameters are its initializers and whose
        marked outputs are its outputs, in order.  Every ONNX value that became
        a node of its own is named after that value.

    Raises:
        OnnxUnavailableError: onnx is not installed.
        OnnxConversionError: every refusal, naming the node, tensor or file: the
            model uses ops, dtypes or attributes we cannot import (unsupported
            ops are all listed, with counts and opsets, before anything is
            built), or a file cannot be read.
        OnnxFileError: (an OnnxConversionError and a FileFormatError) the model
            file or an external data file cannot be read or breaks a rule
            (outside the model's folder, hard-linked, truncated, overlapping).

    >>> import onnx.helper as oh, numpy as np, graphengine as ge
    >>> x = oh.make_tensor_value_info("x", 1, ["N", 2])
    >>> y = oh.make_tensor_value_info("y", 1, ["N", 2])
    >>> m = oh.make_model(oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
    ...                   opset_imports=[oh.make_opsetid("", 17)])
    >>> g = ge.from_onnx(m)
    >>> ge.run(g, "y", {"x": np.array([[-1.0, 2.0]], np.float32)}).tolist()
    [[0.0, 2.0]]
    """
    require_onnx()
    from .importer import import_model

    return import_model(model, freeze=freeze, name=name, base_dir=base_dir).graph


def to_onnx(
    graph: Graph,
    path: str | os.PathLike | None = None,
    *,
    opset: int | None = None,
    outputs: Iterable[str] | None = None,
    check: bool = True,
) -> onnx.ModelProto:
    """Export a graph as an ONNX model.

    Args:
        graph: the graph to export.
        path: where to write the model (atomically); None only returns it.
        opset: the ONNX opset (default :data:`DEFAULT_OPSET`, 20; any from 13 to
            the newest the installed onnx defines).
        outputs: the tensors to export as model outputs (default
            ``graph.outputs``); only the nodes they need are exported.
        check: run ``onnx.checker.check_model(full_check=True)`` on the result.

    Placeholders become graph inputs (symbolic dims become ``dim_param``),
    parameters become initializers (non-trainable ones are listed in the
    metadata key ``graphengine.frozen``), constants become Constant nodes, and
    each other node becomes one ONNX node or a small composition of them.

    Raises:
        OnnxUnavailableError: onnx is not installed.
        OnnxConversionError: a node has no ONNX form (the message names it).

    >>> import graphengine as ge
    >>> g = ge.Graph("demo")
    >>> x = g.placeholder("x", (None, 2))
    >>> g.mark_output(ge.relu(x, name="y"))
    >>> [n.op_type for n in ge.to_onnx(g).graph.node]
    ['Relu']
    """
    require_graph(graph, "ge.to_onnx")
    require_onnx()
    from .exporter import export_graph

    return export_graph(graph, path, opset=opset, outputs=outputs, check=check)


__all__ = [
    "DEFAULT_OPSET",
    "INSTALL_HINT",
    "MIN_OPSET",
    "OnnxConversionError",
    "OnnxFileError",
    "OnnxUnavailableError",
    "from_onnx",
    "require_onnx",
    "to_onnx",
]
