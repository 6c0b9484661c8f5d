"""``graphengine inspect``: summarize a model file.

    graphengine inspect model.pb
    graphengine inspect model.pbtxt --json

Shows the graph's name, the file's format and opset versions and producer, the
placeholders and outputs with their types (symbolic dims by name), the
parameters (count, elements, bytes), node counts by op and by name scope, the
metadata, and the gradient section and training spec when the file has them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..graph import Graph
from ..shapes import TensorType, format_shape

if TYPE_CHECKING:  # pragma: no cover
    from ..serialize import FileInfo


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarize a model file",
        description="Summarize a model file: versions, inputs, outputs, parameters, ops, "
        "scopes, gradient section and training spec.",
    )
    parser.add_argument("file", help="model file (.pb, or .pbtxt for text)")
    parser.add_argument(
        "--format", choices=("binary", "text"), help="file format (default: from the file name)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--params",
        action="store_true",
        help="print a table of the parameters (scope, name, shape, dtype, count, trainable)",
    )
    parser.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from ..serialize import load_with_info

    graph, info = load_with_info(args.file, args.format)
    if args.params:
        from ..summary import format_parameters, parameter_rows

        if args.json:
            print(json.dumps(parameter_rows(graph), indent=2))
        else:
            print(format_parameters(graph))
        return 0
    summary = summarize(graph, info)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def summarize(graph: Graph, info: FileInfo) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-ready dict."""
    params = graph.parameters()
    values = [graph.values[p.name] for p in params]
    nodes = graph.nodes
    return {
        "file": info.path,
        "graph": graph.name,
        "format_version": f"{info.format_version[0]}.{info.format_version[1]}",
        "opset_version": info.opset_version,
        "producer": {"name": info.producer_name, "version": info.producer_version},
        "external_data": list(info.data_files),
        "placeholders": [_tensor_entry(p.name, p.types[0]) for p in graph.placeholders()],
        "outputs": [_tensor_entry(ref, graph.tensor(ref).type) for ref in graph.outputs],
        "parameters": {
            "count": len(params),
            "trainable": len(graph.parameters(trainable=True)),
            "elements": int(sum(v.size for v in values)),
            "bytes": int(sum(v.nbytes for v in values)),
        },
        "nodes": {"count": len(nodes), "by_op": dict(sorted(Counter(n.op for n in nodes).items()))},
        "scopes": dict(sorted(Counter(n.scope for n in nodes if n.scope).items())),
        "metadata": dict(graph.metadata),
        "gradient": _gradient_entry(graph),
        "training": (dataclasses.asdict(graph.training) if graph.training is not None else None),
    }


def _tensor_entry(name: str, t: TensorType) -> dict[str, Any]:
    # Symbolic dims stay names; unknown dims become null.
    return {"name": name, "dtype": t.dtype.name, "shape": list(t.shape)}


def _gradient_entry(graph: Graph) -> dict[str, Any] | None:
    info = graph.gradient
    if info is None:
        return None
    return {
        "loss": info.loss,
        "seed": info.seed,
        "grads": dict(info.grads),
        "nodes": len(info.nodes),
        "zero": list(info.zero),
    }


def format_summary(s: dict[str, Any]) -> str:
    """The text form of :func:`summarize`'s dict."""
    producer = " ".join(v for v in s["producer"].values() if v) or "unknown"
    lines = [
        f"{s['file']}: graph '{s['graph']}'",
        f"  format {s['format_version']}, opset {s['opset_version']}, written by {producer}",
    ]
    if s["external_data"]:
        lines.append(f"  external data: {', '.join(s['external_data'])}")
    for title in ("placeholders", "outputs"):
        lines.append(f"  {title}: {len(s[title])}")
        width = max((len(e["name"]) for e in s[title]), default=0)
        lines += [
            f"    {e['name']:<{width}}  {e['dtype']}{format_shape(tuple(e['shape']))}"
            for e in s[title]
        ]
    p = s["parameters"]
    lines.append(
        f"  parameters: {p['count']} ({p['trainable']} trainable), {p['elements']} "
        f"values, {_format_bytes(p['bytes'])}"
    )
    lines.append(f"  nodes: {s['nodes']['count']}")
    lines += _counts(s["nodes"]["by_op"])
    if s["scopes"]:
        lines.append(f"  scopes: {len(s['scopes'])}")
        lines += _counts(s["scopes"], unit=" nodes")
    if s["metadata"]:
        lines.append("  metadata:")
        lines += [f"    {k}: {v}" for k, v in s["metadata"].items()]
    g = s["gradient"]
    if g is not None:
        seed = f"seed '{g['seed']}'" if g["seed"] else "scalar loss"
        lines.append(
            f"  gradient: loss '{g['loss']}' ({seed}), {len(g['grads'])} gradient(s), "
            f"{g['nodes']} nodes"
        )
        lines += [f"    d/d {wrt} -> {grad}" for wrt, grad in g["grads"].items()]
        if g["zero"]:
            lines.append(f"    zero (loss does not depend on): {', '.join(g['zero'])}")
    t = s["training"]
    if t is not None:
        opt, sch = t["optimizer"], t["schedule"]
        lines.append(
            f"  training: loss '{t['loss']}', {opt['name']} lr {opt['learning_rate']:g}, "
            f"schedule {sch['kind']}, batch {t['batch_size']}, epochs {t['epochs']}, "
            f"seed {t['seed']}, metrics {', '.join(t['metrics'])}"
        )
    return "\n".join(lines)


def _counts(counts: dict[str, int], unit: str = "") -> list[str]:
    width = max((len(k) for k in counts), default=0)
    return [f"    {k:<{width}}  {n}{unit}" for k, n in counts.items()]


def _format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
