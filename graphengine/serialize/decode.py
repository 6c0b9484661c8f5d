"""ModelProto -> Graph: every field decoded with the file and field named in
errors, then the validation pass (compiler.build_graph)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..compiler import NodeRecord, build_graph
from ..dtypes import as_dtype
from ..errors import FileFormatError, GraphEngineError, GraphError, ShapeError
from ..graph import Graph, check_name, parse_ref
from ..limits import MAX_RANK
from ..model import GradientInfo
from ..proto import graphengine_pb2 as pb
from ..training_spec import TrainingSpec
from .checksums import crc32
from .external import _DataFiles
from .tensors import _DTYPE_OF_ENUM
from .unknown import _extract_preserved_bytes
from .upgrade import needs_new_gradient, upgrade_node


class _Reader:
    """Turns a parsed ModelProto into a validated Graph; errors name the file and field."""

    def __init__(
        self,
        path: Path,
        owner: int | None = None,
        *,
        verify_data: bool = True,
        allow_linked_data: bool = False,
    ) -> None:
        self.path = path
        self.verify = verify_data
        self.data = _DataFiles(path, owner, verify=verify_data, allow_linked=allow_linked_data)

    @property
    def data_files(self) -> list[str]:
        return self.data.used

    def error(self, where: str, message: str) -> FileFormatError:
        return FileFormatError(f"'{self.path}': {where}: {message}")

    def graph(self, model: pb.ModelProto) -> Graph:
        self.opset = model.opset_version
        self.new_gradient = needs_new_gradient(
            [n.op_type for n in model.gradient.nodes], self.opset
        )
        try:
            records, values = self._records(model)
            graph = build_graph(model.graph.name, records, values)
            if self.new_gradient:
                graph = self._new_gradient(graph, model.gradient)
            elif model.HasField("gradient"):
                graph.gradient = self._gradient(graph, model.gradient)
            self._restore_outputs(graph, model.graph)
            self.data.verify_pending()  # tensors of the gradient section, if any
            if model.HasField("training"):
                graph.training = TrainingSpec.from_proto(model.training)
                graph.training.check_graph(graph)
        except FileFormatError:
            raise  # already names the file
        except GraphEngineError as exc:
            # Same type, with the file named, so the CLI's one line says where.
            raise type(exc)(f"'{self.path}': {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as exc:
            # An op's inference rule tripped over values no builder would pass.
            raise GraphError(
                f"'{self.path}': the graph failed validation: {type(exc).__name__}: {exc}"
            ) from exc
        graph.metadata = dict(sorted(model.metadata.items()))
        graph.record.unknown_fields = _extract_preserved_bytes(model)
        return graph

    # -- node records -----------------------------------------------------------
    def _records(self, model: pb.ModelProto) -> tuple[list[NodeRecord], dict[str, np.ndarray]]:
        """Node records in build order (by position, ties in file order) and parameter
        values.  Nothing is validated here beyond what decoding needs."""
        gp = model.graph
        ranked: list[tuple[int, NodeRecord]] = []
        values: dict[str, np.ndarray] = {}
        for i, info in enumerate(gp.placeholders):
            where = f"graph.placeholders[{i}] ({info.name!r})"
            attrs = {"dtype": self.dtype(info.dtype, where), "shape": self.shape(info.shape, where)}
            _check_optional_name(info.scope, f"scope of {where}")
            ranked.append(
                (info.position, NodeRecord(info.name, "placeholder", [], attrs, info.scope))
            )
        for i, param in enumerate(gp.parameters):
            where = f"graph.parameters[{i}] ({param.name!r})"
            if not param.HasField("value"):
                raise self.error(where, "has no value")
            value = self.tensor(param.value, f"{where}.value")
            values[param.name] = value
            attrs = {"dtype": value.dtype, "shape": value.shape, "trainable": param.trainable}
            _check_optional_name(param.scope, f"scope of {where}")
            ranked.append(
                (param.position, NodeRecord(param.name, "parameter", [], attrs, param.scope))
            )
        sections = [("graph.nodes", gp.nodes)]
        if not self.new_gradient:
            sections.append(("gradient.nodes", model.gradient.nodes))
        for section, nodes in sections:
            for i, node in enumerate(nodes):
                record = self.node(node, f"{section}[{i}] ({node.name!r})")
                ranked.append((node.position, upgrade_node(record, self.opset)))
        self.data.verify_pending()  # every tensor's checksum, in threads
        ranked.sort(key=lambda item: item[0])  # stable: ties keep file order
        return [record for _, record in ranked], values

    def node(self, node: pb.NodeProto, where: str) -> NodeRecord:
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            if attr.name in attrs:
                raise GraphError(f"{where}: attribute {attr.name!r} is given twice")
            attrs[attr.name] = self.attr(attr.value, f"{where} attribute {attr.name!r}")
        _check_optional_name(node.scope, f"scope of {where}")
        _check_optional_name(node.derived_from, f"derived_from of {where}")
        return NodeRecord(
            node.name, node.op_type, list(node.input), attrs, node.scope, node.derived_from
        )

    # -- values -----------------------------------------------------------------
    def attr(self, value: pb.AttrValue, where: str) -> Any:
        kind = value.WhichOneof("value")
        if kind is None:
            raise self.error(
                where,
                "has no value of a kind this graphengine knows (a newer "
                "format may have added one; upgrade graphengine)",
            )
        if kind in ("ints", "floats", "strs", "bools"):
            return tuple(getattr(value, kind).values)
        if kind == "tensor":
            return self.tensor(value.tensor, where)
        if kind == "shape":
            return self.shape(value.shape, where)
        if kind == "dtype":
            return self.dtype(value.dtype, where)
        return getattr(value, kind)

    def dtype(self, enum: int, where: str) -> np.dtype:
        name = _DTYPE_OF_ENUM.get(enum)
        if name is None:
            known = ", ".join(f"{v} ({d})" for v, d in _DTYPE_OF_ENUM.items())
            what = "no dtype" if enum == 0 else f"unknown dtype enum value {enum}"
            raise self.error(where, f"has {what}; known values are {known}")
        try:
            return as_dtype(name)
        except ShapeError as exc:  # bfloat16 without ml_dtypes
            raise self.error(where, str(exc)) from exc

    def shape(self, shape: pb.ShapeProto, where: str) -> tuple:
        if len(shape.dims) > MAX_RANK:
            raise self.error(
                where,
                f"has rank {len(shape.dims)}; at most {MAX_RANK} is supported (numpy's limit)",
            )
        dims: list[Any] = []
        for axis, dim in enumerate(shape.dims):
            kind = dim.WhichOneof("value")
            if kind == "size":
                if dim.size < 0:
                    raise self.error(where, f"axis {axis} has size {dim.size}; sizes are >= 0")
                dims.append(dim.size)
            elif kind == "symbol":
                dims.append(check_name(dim.symbol, f"dimension name on axis {axis} of {where}"))
            else:
                dims.append(None)
        return tuple(dims)

    def tensor(self, proto: pb.TensorProto, where: str) -> np.ndarray:
        """Decode a tensor, checking its declared size against the bytes present
        before allocating anything."""
        dtype = self.dtype(proto.dtype, where)
        dims = list(proto.dims)
        if len(dims) > MAX_RANK:
            raise self.error(where, f"has rank {len(dims)}; at most {MAX_RANK} is supported")
        if any(d < 0 for d in dims):
            raise self.error(where, f"has negative dims {_short(dims)}")
        count = math.prod(dims)  # exact Python int: absurd dims cannot overflow
        nbytes = count * dtype.itemsize
        if proto.HasField("external"):
            if proto.raw_data:
                raise self.error(where, "has both raw_data and external data; keep one")
            return self.data.read(proto.external, dtype, dims, where)
        if len(proto.raw_data) != nbytes:
            raise self.error(
                where,
                f"raw_data has {len(proto.raw_data)} bytes, but dims "
                f"{_short(dims)} of {dtype.name} need {nbytes}",
            )
        if self.verify:
            damaged = self._crc32_error(proto, where)
            if damaged is not None:
                raise damaged
        array = np.frombuffer(proto.raw_data, dtype=dtype.newbyteorder("<"), count=count)
        # protobuf's bytes are read-only, and parameter values must be writable.
        return array.reshape(dims).astype(dtype, copy=True)

    def _crc32_error(self, proto: pb.TensorProto, where: str) -> FileFormatError | None:
        """The error for an inline tensor whose bytes do not match its crc32, or None."""
        if proto.HasField("external") or not proto.HasField("crc32"):
            return None
        found = crc32(proto.raw_data)
        if found == proto.crc32:
            return None
        return self.error(
            where,
            f"its bytes do not match the recorded crc32 (the {len(proto.raw_data)} bytes "
            f"give {found:08x}, the file records {proto.crc32:08x}): the model file is "
            "damaged. Use an intact copy or save the graph again; "
            "ge.load(..., verify_data=False) reads it unchecked",
        )

    def damaged_inline_tensor(self, model: pb.ModelProto) -> FileFormatError | None:
        """The error for the first inline tensor whose bytes do not match its crc32
        (named as decoding names it), or None: it tells where a damaged file is damaged."""
        tensors = [
            (f"graph.parameters[{i}] ({p.name!r}).value", p.value)
            for i, p in enumerate(model.graph.parameters)
        ]
        for section, nodes in (
            ("graph.nodes", model.graph.nodes),
            ("gradient.nodes", model.gradient.nodes),
        ):
            for i, node in enumerate(nodes):
                for attr in node.attribute:
                    if attr.value.HasField("tensor"):
                        where = f"{section}[{i}] ({node.name!r}) attribute {attr.name!r}"
                        tensors.append((where, attr.value.tensor))
        for where, tensor in tensors:
            error = self._crc32_error(tensor, where)
            if error is not None:
                return error
        return None

    # -- after validation -------------------------------------------------------
    def _restore_outputs(self, graph: Graph, gp: pb.GraphProto) -> None:
        for i, ref in enumerate(gp.outputs):
            _require_tensor(graph, ref, f"graph.outputs[{i}]")
        graph.set_outputs(gp.outputs)

    def _new_gradient(self, graph: Graph, grad: pb.GradientGraphProto) -> Graph:
        """The gradient section of an older op set built again by the gradient pass."""
        from ..gradients import gradients

        warnings.warn(
            f"'{self.path}' has a gradient section of opset {self.opset} whose "
            "pooling gradient ops no longer exist; it was built again from its "
            "loss and wrt tensors (save the file to keep the new one)",
            stacklevel=5,
        )
        return gradients(
            graph,
            loss=grad.loss,
            wrt=[entry.wrt for entry in grad.grads],
            grad_ys="placeholder" if grad.seed else None,
        )

    def _gradient(self, graph: Graph, grad: pb.GradientGraphProto) -> GradientInfo:
        _require_tensor(graph, grad.loss, "gradient.loss")
        if grad.seed and (grad.seed not in graph or graph.node(grad.seed).op != "placeholder"):
            raise GraphError(f"gradient.seed names {grad.seed!r}, which is not a placeholder")
        grads: dict[str, str] = {}
        for i, entry in enumerate(grad.grads):
            _require_tensor(graph, entry.wrt, f"gradient.grads[{i}].wrt")
            _require_tensor(graph, entry.grad, f"gradient.grads[{i}].grad")
            if entry.wrt in grads:
                raise GraphError(f"gradient.grads[{i}]: wrt {entry.wrt!r} is listed twice")
            grads[entry.wrt] = entry.grad
        for i, ref in enumerate(grad.zero):
            _require_tensor(graph, ref, f"gradient.zero[{i}]")
        return GradientInfo(
            loss=grad.loss,
            grads=grads,
            nodes=tuple(node.name for node in grad.nodes),
            seed=grad.seed,
            zero=tuple(grad.zero),
        )


def _short(items: list, limit: int = 8) -> str:
    """A list for a one-line message: at most ``limit`` entries, then a count."""
    if len(items) <= limit:
        return str(items)
    return f"[{', '.join(map(str, items[:limit]))}, ... ({len(items)} in all)]"


def _check_optional_name(name: str, what: str) -> None:
    """Scopes and derived_from are "" or a well-formed name (GraphError otherwise)."""
    if name:
        check_name(name, what)


def _require_tensor(graph: Graph, ref: str, field: str) -> None:
    node, index = parse_ref(ref) if ref else ("", 0)
    if node not in graph or index >= len(graph.node(node).types):
        raise GraphError(f"{field} names {ref!r}, which is not a tensor of the graph")
