"""Graph -> ModelProto, deterministically: attributes in sorted order, tensors
through a _TensorWriter."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Graph, Node
from ..model import GradientInfo
from ..proto import graphengine_pb2 as pb
from ..training_spec import TrainingSpec
from .files import FORMAT_VERSION, OPSET_VERSION
from .tensors import _ENUM_OF_DTYPE, _TensorWriter


def _graph_to_model(graph: Graph, writer: _TensorWriter) -> pb.ModelProto:
    from .. import __version__

    model = pb.ModelProto(
        format_version_major=FORMAT_VERSION[0],
        format_version_minor=FORMAT_VERSION[1],
        opset_version=OPSET_VERSION,
        producer_name="graphengine",
        producer_version=__version__,
    )
    gradient_nodes = _gradient_node_names(graph)
    in_gradient = set(gradient_nodes)
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    out = model.graph
    out.name = graph.name
    for node in graph.nodes:
        if node.name in in_gradient:
            continue
        if node.op == "placeholder" and not node.derived_from:
            _encode_placeholder(node, position[node.name], out.placeholders.add())
        elif node.op == "parameter":
            _encode_parameter(graph, node, position[node.name], writer, out.parameters.add())
        else:
            _encode_node(node, position[node.name], writer, out.nodes.add())
    out.outputs.extend(graph.marked_outputs)
    if graph.gradient is not None:
        _encode_gradient(graph, gradient_nodes, position, writer, model.gradient)
    if graph.training is not None:
        if not isinstance(graph.training, TrainingSpec):
            raise GraphError(
                f"graph '{graph.name}': training must be a TrainingSpec, got "
                f"{type(graph.training).__name__}"
            )
        graph.training.check_graph(graph)
        model.training.CopyFrom(graph.training.to_proto())
    for key, value in graph.metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise GraphError(
                f"graph '{graph.name}': metadata {key!r}: keys and values must be strings"
            )
        model.metadata[key] = value
    return model


def _gradient_node_names(graph: Graph) -> tuple[str, ...]:
    """The nodes of the gradient section, checked against the graph."""
    info = graph.gradient
    if info is None:
        return ()
    seen = set()
    for name in info.nodes:
        if name not in graph or name in seen:
            problem = "is listed twice" if name in seen else "is not in the graph"
            raise GraphError(
                f"graph '{graph.name}': gradient node {name!r} {problem}; the "
                "gradient info no longer matches the graph"
            )
        if graph.node(name).op == "parameter":
            raise GraphError(
                f"graph '{graph.name}': gradient node {name!r} is a parameter; "
                "parameters belong to the forward graph"
            )
        seen.add(name)
    return tuple(info.nodes)


def _encode_placeholder(node: Node, position: int, out: pb.ValueInfo) -> None:
    out.name = node.name
    out.dtype = _ENUM_OF_DTYPE[node.attrs["dtype"].name]
    _encode_shape(node.attrs["shape"], out.shape)
    out.scope = node.scope
    out.position = position


def _encode_parameter(
    graph: Graph, node: Node, position: int, writer: _TensorWriter, out: pb.ParameterProto
) -> None:
    if node.name not in graph.values:
        raise GraphError(f"parameter '{node.name}' has no value in graph.values")
    value, declared = np.asarray(graph.values[node.name]), node.types[0]
    if value.dtype != declared.dtype or value.shape != declared.shape:
        # Refuse now: the file would not load.
        raise ShapeError(
            f"parameter '{node.name}': graph.values holds {value.dtype}"
            f"{value.shape}, but the parameter is declared {declared}; assign "
            f"an array of that type"
        )
    out.name = node.name
    writer.encode(graph.values[node.name], out.value)
    out.trainable = node.attrs["trainable"]
    out.scope = node.scope
    out.position = position


def _encode_node(node: Node, position: int, writer: _TensorWriter, out: pb.NodeProto) -> None:
    out.name = node.name
    out.op_type = node.op
    out.input.extend(node.inputs)
    kinds = {attr.name: attr.kind for attr in node.opdef.attrs}
    for name in sorted(node.attrs):
        value = node.attrs[name]
        if value is None:  # absent: the op's default (None) applies on load
            continue
        try:
            _encode_attr(kinds[name], value, writer, out.attribute.add(name=name).value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise GraphError(
                f"node '{node.name}' ({node.op}): attribute {name!r} = {value!r} "
                f"cannot be stored: {exc}"
            ) from exc
    out.scope = node.scope
    out.derived_from = node.derived_from
    out.position = position


def _encode_attr(kind: str, value: Any, writer: _TensorWriter, out: pb.AttrValue) -> None:
    """Store a canonical attribute value under the AttrValue member of its kind."""
    if kind == "int":
        out.i = value
    elif kind == "float":
        out.f = value
    elif kind == "str":
        out.s = value
    elif kind == "bool":
        out.b = value
    elif kind in ("ints", "floats", "strs", "bools"):
        values = getattr(out, kind)
        values.SetInParent()  # an empty list is still a value of this kind
        values.values.extend(value)
    elif kind == "tensor":
        writer.encode(value, out.tensor)
    elif kind == "shape":
        _encode_shape(value, out.shape)
    else:
        out.dtype = _ENUM_OF_DTYPE[value.name]


def _encode_shape(shape: tuple, out: pb.ShapeProto) -> None:
    out.SetInParent()  # a scalar's empty shape is still written
    for dim in shape:
        entry = out.dims.add()
        if isinstance(dim, str):
            entry.symbol = dim
        elif dim is not None:
            entry.size = dim


def _encode_gradient(
    graph: Graph,
    names: tuple[str, ...],
    position: dict[str, int],
    writer: _TensorWriter,
    out: pb.GradientGraphProto,
) -> None:
    info: GradientInfo = graph.gradient
    out.loss = info.loss
    out.seed = info.seed
    for wrt, grad in info.grads.items():
        out.grads.add(wrt=wrt, grad=grad)
    for name in names:
        _encode_node(graph.node(name), position[name], writer, out.nodes.add())
    out.zero.extend(info.zero)
