"""Graph -> ONNX model.

:func:`export_graph` keeps the nodes the outputs need, then writes:

* placeholders as graph inputs (int dims as ``dim_value``, symbolic ones as
  ``dim_param``);
* parameters as initializers, bit for bit; the names of non-trainable ones go
  in the metadata key ``graphengine.frozen`` so that an import freezes them again;
* constants as Constant nodes;
* every other node through its rule in :mod:`graphengine.onnx.export_ops`.

ONNX value names are our tensor references (``layer1/matmul``, ``split:1``), and
each ONNX node computing a node's output is named after that node, so an error
from onnx's checker or from onnxruntime points at our node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

from ..compiler import prune_to
from ..graph import Graph
from . import (
    DEFAULT_OPSET,
    MIN_OPSET,
    export_ops,  # noqa: F401  (fills the table)
)
from .errors import OnnxConversionError
from .export_rules import RULES, Emitter
from .importer import FROZEN_KEY
from .tensor_types import value_info


def export_graph(
    graph: Graph,
    path: str | os.PathLike | None = None,
    *,
    opset: int | None = None,
    outputs: Iterable[str] | None = None,
    check: bool = True,
) -> onnx.ModelProto:
    """Export ``graph``; see :func:`graphengine.to_onnx`."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise OnnxConversionError(
            f"cannot export to opset {opset}: graphengine writes opsets {MIN_OPSET} to {newest}"
        )
    refs = [graph.tensor(o).name for o in (graph.outputs if outputs is None else outputs)]
    if not refs:
        raise OnnxConversionError(
            f"graph '{graph.name}' has no outputs to export; mark some "
            "with graph.mark_output(...) or pass outputs=[...]"
        )
    nodes = prune_to(graph, refs)
    unsupported = sorted(
        {
            n.op
            for n in nodes
            if n.op not in RULES and n.op not in ("placeholder", "parameter", "constant")
        }
    )
    if unsupported:
        names = "; ".join(
            f"{op}: " + ", ".join(f"'{n.name}'" for n in nodes if n.op == op) for op in unsupported
        )
        raise OnnxConversionError(
            f"these ops have no ONNX form in graphengine's exporter: {names}. Export the "
            "forward graph (backward kernels are not exported)"
        )

    ex = Emitter(graph, opset)
    inputs, initializers, frozen = [], [], []
    for node in nodes:
        if node.op == "placeholder":
            inputs.append(value_info(node.name, node.types[0]))
        elif node.op == "parameter":
            initializers.append(numpy_helper.from_array(graph.values[node.name], node.name))
            if not node.attrs["trainable"]:
                frozen.append(node.name)
        elif node.op == "constant":
            ex.const(node, node.attrs["value"], output=node.name)
        else:
            RULES[node.op](ex, node)

    sources = {n.name for n in nodes if n.op in ("placeholder", "parameter")}
    output_infos = []
    for ref in dict.fromkeys(refs):
        name = ref
        if ref in sources:
            # A graph output must be computed by a node: pass inputs through.
            name = f"{ref}/output"
            ex.nodes.append(helper.make_node("Identity", [ref], [name], name=name))
        output_infos.append(value_info(name, graph.tensor(ref).type))

    model = helper.make_model(
        helper.make_graph(ex.nodes, graph.name, inputs, output_infos, initializers),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="graphengine",
        producer_version=_version(),
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    metadata = dict(graph.metadata)
    metadata.pop(FROZEN_KEY, None)
    if frozen:
        metadata[FROZEN_KEY] = ",".join(frozen)
    helper.set_model_props(model, {k: str(v) for k, v in sorted(metadata.items())})
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise OnnxConversionError(
                f"the exported model fails onnx's checker (a bug in graphengine's exporter; "
                f"pass check=False to inspect the model): {exc}"
            ) from None
    if path is not None:
        from ..serialize import atomic_file

        with atomic_file(Path(path)) as out:
            out.write(model.SerializeToString())
    return model


def _version() -> str:
    from .. import __version__

    return __version__
