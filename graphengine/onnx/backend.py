"""graphengine as an ONNX backend (``onnx.backend.base.Backend``).

It lets ONNX's own conformance suite (``onnx.backend.test.BackendTest``) judge
our forward semantics: :meth:`GraphEngineBackend.prepare` imports a model with
:func:`graphengine.onnx.importer.import_model` and returns a
:class:`GraphEngineRep` that runs it with the numpy executor.

It runs on the CPU only and never raises ONNX's "backend is not supposed to
implement it" exception: a model it cannot import fails with an
:class:`~graphengine.onnx.errors.OnnxConversionError` that says why.

>>> import numpy as np, onnx.helper as oh
>>> from graphengine.onnx.backend import GraphEngineBackend
>>> node = oh.make_node("Relu", ["x"], ["y"])
>>> GraphEngineBackend.run_node(node, [np.array([-1.0, 2.0], np.float32)])[0].tolist()
[0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from ..errors import FeedError
from ..executor import run
from .errors import OnnxConversionError
from .importer import (
    ImportResult,
    check_supported,
    import_model,
    model_opset,
    static_inputs,
    upgrade_opset,
)
from .tensor_types import NUMPY_TO_ONNX


class GraphEngineRep(BackendRep):
    """A model imported once and ready to run many times.

    graphengine needs shapes, axes, pads and the like at import time.  A model
    that takes them as graph inputs (as many conformance cases do) is imported
    when it runs, with those inputs bound to the values given, once per
    distinct set of values.
    """

    def __init__(self, model: ModelProto) -> None:
        self.model = model
        self.input_names = [
            v.name
            for v in model.graph.input
            if v.name not in {t.name for t in model.graph.initializer}
        ]
        self.bound = static_inputs(model)
        self._imports: dict[tuple, ImportResult] = {}
        if not self.bound:
            self._imports[()] = import_model(model)

    def _import(self, feeds: dict[str, np.ndarray]) -> ImportResult:
        key = tuple((n, feeds[n].dtype.str, feeds[n].shape, feeds[n].tobytes()) for n in self.bound)
        result = self._imports.get(key)
        if result is None:
            result = import_model(self.model, bind={n: feeds[n] for n in self.bound})
            self._imports[key] = result
        return result

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run the model on ``inputs``: a list in the order of the model's (non
        initializer) inputs, a dict by ONNX input name, or one array.  Returns the
        outputs as a named tuple in the model's output order."""
        names = self.input_names
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(names))
            if unknown:
                raise FeedError(
                    f"the model has no input {unknown[0]!r}; its inputs are "
                    f"{', '.join(names) or 'none'}"
                )
            pairs = list(inputs.items())
        else:
            if isinstance(inputs, np.ndarray) or np.isscalar(inputs):
                inputs = [inputs]
            if len(inputs) != len(names):
                raise FeedError(
                    f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}"
                )
            pairs = list(zip(names, inputs))
        # The conformance runner passes some inputs as numpy scalars: make every
        # input an array, keeping its dtype (the executor checks it exactly).
        given = {name: np.asarray(value) for name, value in pairs}
        missing = [n for n in names if n not in given]
        if missing:
            raise FeedError(f"missing model input(s) {', '.join(missing)}")
        result = self._import(given)
        feeds = {
            result.inputs[name]: value for name, value in given.items() if name in result.inputs
        }
        fetched = run(result.graph, result.outputs, feeds)
        values = [fetched[ref] for ref in result.outputs]
        return namedtupledict("Outputs", result.output_names)(*values)


class GraphEngineBackend(Backend):
    """The ONNX backend API over graphengine's importer and numpy executor."""

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        """Whether the model's ops and dtypes are all importable."""
        try:
            model = upgrade_opset(model)
            check_supported(model, model_opset(model))
        except OnnxConversionError:
            return False
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> GraphEngineRep:
        """Import ``model`` (raises OnnxConversionError when it cannot be)."""
        if not cls.supports_device(device):
            raise OnnxConversionError(f"graphengine runs on the CPU only, not on {device!r}")
        model = upgrade_opset(model)
        check_supported(model, model_opset(model))
        return GraphEngineRep(model)

    @classmethod
    def run_model(
        cls, model: ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run one node on ``inputs`` (a list in the node's input order, or a dict
        by input name), by wrapping it in a model of the newest opset (or
        ``opset_version=``)."""
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        names = [n for n in node.input if n]
        if isinstance(inputs, dict):
            arrays = [np.asarray(inputs[n]) for n in names]
        else:
            arrays = [np.asarray(v) for v in inputs]
        graph_inputs = [
            helper.make_tensor_value_info(n, _elem_type(a.dtype), a.shape)
            for n, a in zip(names, arrays)
        ]
        if outputs_info is not None:
            graph_outputs = [
                helper.make_tensor_value_info(n, _elem_type(np.dtype(dtype)), shape)
                for n, (dtype, shape) in zip(node.output, outputs_info)
            ]
        else:
            graph_outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        model = helper.make_model(
            helper.make_graph([node], "run_node", graph_inputs, graph_outputs),
            opset_imports=[helper.make_opsetid("", opset)],
        )
        if outputs_info is None:
            model = onnx.shape_inference.infer_shapes(model)
            inferred = {v.name: v for v in model.graph.value_info}
            for out in model.graph.output:
                if out.name in inferred:
                    out.CopyFrom(inferred[out.name])
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only the CPU."""
        return device.split(":")[0].upper() == "CPU"


def _elem_type(dtype: np.dtype) -> int:
    try:
        return NUMPY_TO_ONNX[np.dtype(dtype).name]
    except KeyError:
        raise OnnxConversionError(
            f"dtype {np.dtype(dtype).name} is not supported by graphengine"
        ) from None


prepare = GraphEngineBackend.prepare
run_model = GraphEngineBackend.run_model
run_node = GraphEngineBackend.run_node
supports_device = GraphEngineBackend.supports_device
