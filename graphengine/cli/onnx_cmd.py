"""``graphengine import`` and ``graphengine export``: to and from ONNX.

    graphengine import model.onnx -o model.pb --freeze embedding
    graphengine export model.pb -o model.onnx --opset 18

``import`` turns an ONNX model into a graphengine model file: graph inputs
become placeholders, initializers trainable parameters (``--freeze NAME`` keeps
some fixed), Constant nodes constants.  ``export`` writes a model file's graph
(its marked outputs, or ``--output`` tensors) as an ONNX model that
onnxruntime can serve.  Both need the ONNX extra: ``pip install
'graphengine[onnx]'``.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import",
        help="convert an ONNX model into a graphengine model file",
        description="Import an ONNX model: inputs become placeholders, initializers "
        "trainable parameters, Constant nodes constants. Needs the ONNX extra "
        "(pip install 'graphengine[onnx]').",
    )
    parser.add_argument("file", help="the ONNX model (.onnx); external data must sit in its folder")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL.pb",
        help="the graphengine model file to write (.pbtxt for text)",
    )
    parser.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="NAME",
        help="import initializer NAME as a non-trainable parameter; repeatable",
    )
    parser.add_argument("--name", help="the graph's name (default: the ONNX graph's)")
    parser.set_defaults(func=run_import)

    parser = subparsers.add_parser(
        "export",
        help="convert a graphengine model file into an ONNX model",
        description="Export a model file's graph as an ONNX model that passes onnx's "
        "checker and runs in onnxruntime. Needs the ONNX extra "
        "(pip install 'graphengine[onnx]').",
    )
    parser.add_argument("file", help="model file (.pb, or .pbtxt for text)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX model to write"
    )
    parser.add_argument("--opset", type=int, help="ONNX opset to write, 13 or newer (default: 20)")
    parser.add_argument(
        "--fetch",
        action="append",
        default=[],
        metavar="NAME",
        help="tensor to export as a model output; repeatable; default: the graph's outputs",
    )
    parser.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from ..onnx import from_onnx, require_onnx
    from ..serialize import save

    require_onnx()  # before touching any file: say how to install the extra

    graph = from_onnx(args.file, freeze=args.freeze, name=args.name)
    save(graph, args.output)
    params = graph.parameters()
    trainable = sum(p.attrs["trainable"] for p in params)
    print(
        f"imported {args.file} -> {args.output}: {len(graph)} nodes, "
        f"{len(graph.placeholders())} inputs, {len(params)} parameters "
        f"({trainable} trainable), outputs {', '.join(graph.outputs)}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..onnx import require_onnx, to_onnx
    from ..serialize import load

    require_onnx()  # before touching any file: say how to install the extra

    graph = load(args.file)
    model = to_onnx(graph, args.output, opset=args.opset, outputs=args.fetch or None)
    print(
        f"exported {args.file} -> {args.output}: opset {model.opset_import[0].version}, "
        f"{len(model.graph.node)} ONNX nodes, outputs "
        f"{', '.join(o.name for o in model.graph.output)}"
    )
    return 0
