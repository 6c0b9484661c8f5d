"""Export rules: each of our ops as ONNX nodes.

Most ops have an ONNX twin.  The others are compositions, chosen so that a
round trip (ours -> ONNX -> ours) gives the same values bit for bit where our
importer maps them back to the same kernels:

* ``square`` is ``Mul(x, x)``; ``not_equal`` is ``Not(Equal)``; integer
  ``divide`` (true division, float64) casts to double first;
* ``gelu`` is ``Gelu`` (with its ``approximate``) from opset 20 and its formula
  below that (with ``Erf`` for the exact form);
* ``sum``/``mean``/``max``/``min`` over ``axis=()`` are ``Identity`` (ONNX would
  reduce over every axis);
* ``slice`` is ``Slice`` then ``Squeeze`` (int indices) and ``Unsqueeze``
  (``None``); ``stack`` is ``Unsqueeze`` + ``Concat``; ``one_hot`` is an
  ``Equal`` against a constant range (ONNX's OneHot counts negative indices from
  the end, ours gives zeros for them);
* ``layer_norm`` is ``LayerNormalization`` from opset 17 and its formula below;
* ``dropout`` and ``batch_norm`` are written in their inference form (ONNX
  models are served, not trained); ``training_flag`` is the constant 0;
* ``softmax_cross_entropy`` is ``SoftmaxCrossEntropyLoss`` for integer labels
  (classes moved to axis 1 when needed), a composition for probability targets
  and for integer labels with ``out_of_range="zero"`` (their one-hot as targets);
  ``mean_squared_error`` is ``Sub``, ``Mul`` and a reduction.

Gradient helpers ``broadcast_like``, ``sum_like`` (when its axes are known),
``reshape_like`` and ``zeros_like`` are exported too; the other backward
kernels (``conv2d_backprop_*``, ``conv_backprop_*``, ``*_pool_grad``,
``slice_grad``, ``take_grad``, ``resize_grad``, ``split_like``) are refused by name.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ..dtypes import is_float
from ..graph import Node
from ..shapes import normalize_axes, normalize_axis
from .export_rules import INT64_MAX, Emitter, rule
from .tensor_types import to_onnx_dtype

# -- elementwise ---------------------------------------------------------------------

_SAME_NAME = {
    "add": "Add",
    "subtract": "Sub",
    "multiply": "Mul",
    "power": "Pow",
    "maximum": "Max",
    "minimum": "Min",
    "add_n": "Sum",
    "negative": "Neg",
    "abs": "Abs",
    "sign": "Sign",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "sin": "Sin",
    "cos": "Cos",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "erf": "Erf",
    "softplus": "Softplus",
    "where": "Where",
    "equal": "Equal",
    "greater": "Greater",
    "greater_equal": "GreaterOrEqual",
    "less": "Less",
    "less_equal": "LessOrEqual",
    "logical_and": "And",
    "logical_or": "Or",
    "logical_not": "Not",
    "identity": "Identity",
    "stop_gradient": "Identity",
    "matmul": "MatMul",
}


def _same(ex: Emitter, node: Node) -> None:
    ex.emit1(node, _SAME_NAME[node.op], ex.inputs(node), ex.output(node))


for _op in _SAME_NAME:
    rule(_op)(_same)


@rule("divide")
def _divide(ex: Emitter, node: Node) -> None:
    x, y = ex.inputs(node)
    if not is_float(ex.graph.tensor(node.inputs[0]).dtype):
        # Our integer division is true division in float64.
        x = ex.emit1(node, "Cast", [x], to=to_onnx_dtype(np.float64))
        y = ex.emit1(node, "Cast", [y], to=to_onnx_dtype(np.float64))
    ex.emit1(node, "Div", [x, y], ex.output(node))


@rule("square")
def _square(ex: Emitter, node: Node) -> None:
    x = ex.input(node, 0)
    ex.emit1(node, "Mul", [x, x], ex.output(node))


@rule("not_equal")
def _not_equal(ex: Emitter, node: Node) -> None:
    eq = ex.emit1(node, "Equal", ex.inputs(node))
    ex.emit1(node, "Not", [eq], ex.output(node))


@rule("leaky_relu", "elu")
def _alpha(ex: Emitter, node: Node) -> None:
    op_type = {"leaky_relu": "LeakyRelu", "elu": "Elu"}[node.op]
    ex.emit1(node, op_type, ex.inputs(node), ex.output(node), alpha=node.attrs["alpha"])


@rule("gelu")
def _gelu(ex: Emitter, node: Node) -> None:
    x = ex.input(node, 0)
    approximate = node.attrs["approximate"]
    if ex.opset >= 20:
        ex.emit1(node, "Gelu", [x], ex.output(node), approximate=approximate)
        return
    dtype = ex.graph.tensor(node.inputs[0]).dtype

    def c(v):
        return ex.const(node, v, dtype)

    if approximate == "none":
        # x * (erf(x / sqrt(2)) + 1) * 0.5
        e = ex.emit1(node, "Erf", [ex.emit1(node, "Mul", [x, c(1.0 / np.sqrt(2.0))])])
        cdf = ex.emit1(node, "Mul", [ex.emit1(node, "Add", [e, c(1.0)]), c(0.5)])
        ex.emit1(node, "Mul", [x, cdf], ex.output(node))
        return

    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))), in the kernel's order.
    cube = ex.emit1(node, "Pow", [x, c(3.0)])
    inner = ex.emit1(node, "Add", [x, ex.emit1(node, "Mul", [c(0.044715), cube])])
    t = ex.emit1(node, "Tanh", [ex.emit1(node, "Mul", [c(np.sqrt(2.0 / np.pi)), inner])])
    half_x = ex.emit1(node, "Mul", [x, c(0.5)])
    ex.emit1(node, "Mul", [half_x, ex.emit1(node, "Add", [c(1.0), t])], ex.output(node))


@rule("clip")
def _clip(ex: Emitter, node: Node) -> None:
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    bounds = [
        ex.const(node, dtype.type(v), base=b) if v is not None else ""
        for b, v in (("min", node.attrs["a_min"]), ("max", node.attrs["a_max"]))
    ]
    while bounds and not bounds[-1]:
        bounds.pop()
    ex.emit1(node, "Clip", [ex.input(node, 0), *bounds], ex.output(node))


@rule("cast")
def _cast(ex: Emitter, node: Node) -> None:
    ex.emit1(node, "Cast", ex.inputs(node), ex.output(node), to=to_onnx_dtype(node.attrs["dtype"]))


# -- reductions ------------------------------------------------------------------------

_REDUCE = {
    "sum": ("ReduceSum", 13),
    "mean": ("ReduceMean", 18),
    "max": ("ReduceMax", 18),
    "min": ("ReduceMin", 18),
}


@rule(*_REDUCE)
def _reduce(ex: Emitter, node: Node) -> None:
    op_type, since = _REDUCE[node.op]
    x = ex.input(node, 0)
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axes = normalize_axes(node.attrs["axis"], rank)
    if not axes:  # ONNX reads no axes as "every axis"
        ex.emit1(node, "Identity", [x], ex.output(node))
        return
    ex.axes(
        node, op_type, since, list(axes), x, ex.output(node), keepdims=int(node.attrs["keepdims"])
    )


@rule("argmax")
def _argmax(ex: Emitter, node: Node) -> None:
    x = ex.input(node, 0)
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axis, keepdims = node.attrs["axis"], node.attrs["keepdims"]
    if axis is not None:
        ex.emit1(
            node,
            "ArgMax",
            [x],
            ex.output(node),
            axis=normalize_axis(axis, rank),
            keepdims=int(keepdims),
        )
        return
    flat = ex.emit1(node, "Reshape", [x, ex.ints(node, [-1], "shape")])
    if not keepdims:
        ex.emit1(node, "ArgMax", [flat], ex.output(node), axis=0, keepdims=0)
        return
    index = ex.emit1(node, "ArgMax", [flat], axis=0, keepdims=0)
    ex.emit1(node, "Reshape", [index, ex.ints(node, [1] * rank, "shape")], ex.output(node))


# -- gradient helpers ---------------------------------------------------------------------


@rule("zeros_like")
def _zeros_like(ex: Emitter, node: Node) -> None:
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    shape = ex.emit1(node, "Shape", [ex.input(node, 0)])
    ex.emit1(
        node,
        "ConstantOfShape",
        [shape],
        ex.output(node),
        value=numpy_helper.from_array(np.zeros(1, dtype)),
    )


@rule("broadcast_like")
def _broadcast_like(ex: Emitter, node: Node) -> None:
    x, like = ex.inputs(node)
    like_rank = ex.graph.tensor(node.inputs[1]).ndim
    axes = node.attrs["axes"]
    if axes is not None:
        x = ex.axes(node, "Unsqueeze", 13, list(normalize_axes(axes, like_rank)), x)
    if not node.attrs["mean"]:
        ex.emit1(node, "Expand", [x, ex.emit1(node, "Shape", [like])], ex.output(node))
        return
    out = ex.emit1(node, "Expand", [x, ex.emit1(node, "Shape", [like])])
    ex.emit1(node, "Div", [out, _count(ex, node, like, x)], ex.output(node))


@rule("sum_like")
def _sum_like(ex: Emitter, node: Node) -> None:
    x, like = ex.inputs(node)
    x_type, like_type = (ex.graph.tensor(r).type for r in node.inputs)
    axes = node.attrs["axes"]
    if axes is not None:
        out = ex.axes(
            node,
            "ReduceSum",
            13,
            list(normalize_axes(axes, x_type.rank)),
            x,
            None if node.attrs["mean"] else ex.output(node),
            keepdims=0,
        )
    else:
        lead = x_type.rank - like_type.rank
        axes = list(range(lead))
        for i, d in enumerate(like_type.shape):
            e = x_type.shape[lead + i]
            if d == 1 and e != 1:
                if not isinstance(e, int):
                    raise ex.fail(
                        node,
                        "cannot tell at export time which axes to sum: "
                        f"axis {lead + i} is symbolic ({e}) against 1",
                    )
                axes.append(lead + i)
        summed = ex.axes(node, "ReduceSum", 13, axes, x, keepdims=1) if axes else x
        out = ex.emit1(
            node,
            "Reshape",
            [summed, ex.emit1(node, "Shape", [like])],
            None if node.attrs["mean"] else ex.output(node),
        )
    if node.attrs["mean"]:
        ex.emit1(node, "Div", [out, _count(ex, node, x, like)], ex.output(node))


def _count(ex: Emitter, node: Node, big: str, small: str) -> str:
    """Size(big) / Size(small) at run time, as the output's dtype."""
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    sizes = [ex.emit1(node, "Size", [t]) for t in (big, small)]
    ratio = ex.emit1(node, "Div", sizes)
    return ex.emit1(node, "Cast", [ratio], to=to_onnx_dtype(dtype))


@rule("reshape_like")
def _reshape_like(ex: Emitter, node: Node) -> None:
    x, like = ex.inputs(node)
    ex.emit1(node, "Reshape", [x, ex.emit1(node, "Shape", [like])], ex.output(node))


@rule("training_flag")
def _training_flag(ex: Emitter, node: Node) -> None:
    # An exported model is served, so it runs in inference mode.
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    ex.const(node, np.zeros((), dtype), output=ex.output(node))


# -- shape ---------------------------------------------------------------------------------


@rule("reshape")
def _reshape(ex: Emitter, node: Node) -> None:
    newshape = list(node.attrs["newshape"])
    # ONNX reads 0 as "copy the input's dim" unless allowzero is set.
    allowzero = 1 if 0 in newshape else None
    if allowzero and ex.opset < 14:
        raise ex.fail(node, "a size of 0 in newshape needs opset 14 or later (allowzero)")
    ex.emit1(
        node,
        "Reshape",
        [ex.input(node, 0), ex.ints(node, newshape, "shape")],
        ex.output(node),
        allowzero=allowzero,
    )


@rule("transpose")
def _transpose(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axes = node.attrs["axes"]
    perm = list(reversed(range(rank))) if axes is None else [normalize_axis(a, rank) for a in axes]
    ex.emit1(node, "Transpose", ex.inputs(node), ex.output(node), perm=perm)


@rule("expand_dims")
def _expand_dims(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.name).ndim
    ex.axes(
        node,
        "Unsqueeze",
        13,
        list(normalize_axes(node.attrs["axis"], rank)),
        ex.input(node, 0),
        ex.output(node),
    )


@rule("squeeze")
def _squeeze(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axes = list(normalize_axes(node.attrs["axis"], rank))
    if not axes:
        ex.emit1(node, "Identity", ex.inputs(node), ex.output(node))
        return
    ex.axes(node, "Squeeze", 13, axes, ex.input(node, 0), ex.output(node))


@rule("broadcast_to")
def _broadcast_to(ex: Emitter, node: Node) -> None:
    # ONNX's Expand broadcasts both ways, so a 1 keeps the input's size, as our -1.
    shape = [1 if d == -1 else d for d in node.attrs["shape"]]
    ex.emit1(node, "Expand", [ex.input(node, 0), ex.ints(node, shape, "shape")], ex.output(node))


@rule("concatenate")
def _concatenate(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.inputs[0]).ndim
    ex.emit1(
        node,
        "Concat",
        ex.inputs(node),
        ex.output(node),
        axis=normalize_axis(node.attrs["axis"], rank),
    )


@rule("stack")
def _stack(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.name).ndim
    axis = normalize_axis(node.attrs["axis"], rank)
    pieces = [ex.axes(node, "Unsqueeze", 13, [axis], x) for x in ex.inputs(node)]
    ex.emit1(node, "Concat", pieces, ex.output(node), axis=axis)


@rule("split")
def _split(ex: Emitter, node: Node) -> None:
    x = ex.input(node, 0)
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axis = normalize_axis(node.attrs["axis"], rank)
    outputs = [ex.output(node, k) for k in range(len(node.types))]
    sections = node.attrs["sections"]
    if sections is not None:
        extra = {"num_outputs": sections} if ex.opset >= 18 else {}
        ex.emit(node, "Split", [x], outputs, axis=axis, **extra)
        return
    # Split at indices: one Slice per piece, which works whatever the axis size.
    bounds = [0, *node.attrs["indices"], INT64_MAX]
    for k, out in enumerate(outputs):
        start, end = bounds[k], bounds[k + 1]
        ex.emit1(
            node,
            "Slice",
            [
                x,
                ex.ints(node, [start], "starts"),
                ex.ints(node, [end], "ends"),
                ex.ints(node, [axis], "axes"),
            ],
            out,
        )


@rule("slice")
def _slice(ex: Emitter, node: Node) -> None:
    attrs = node.attrs
    x = ex.input(node, 0)
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axes = [normalize_axis(a, rank) for a in attrs["axes"]]
    starts, ends, steps = list(attrs["starts"]), list(attrs["stops"]), list(attrs["steps"])
    index_axes = [normalize_axis(a, rank) for a in attrs["index_axes"]]
    for a, i in zip(index_axes, attrs["indices"]):
        axes.append(a)
        starts.append(i)
        ends.append(i + 1 if i != -1 else INT64_MAX)
        steps.append(1)
    final = [bool(axes), bool(index_axes), bool(attrs["new_axes"])]
    out = x

    def target(step: int) -> str | None:
        return ex.output(node) if not any(final[step + 1 :]) else None

    if axes:
        out = ex.emit1(
            node,
            "Slice",
            [
                out,
                ex.ints(node, starts, "starts"),
                ex.ints(node, ends, "ends"),
                ex.ints(node, axes, "axes"),
                ex.ints(node, steps, "steps"),
            ],
            target(0),
        )
    if index_axes:
        out = ex.axes(node, "Squeeze", 13, sorted(index_axes), out, target(1))
    if attrs["new_axes"]:
        result_rank = ex.graph.tensor(node.name).ndim
        out = ex.axes(
            node,
            "Unsqueeze",
            13,
            list(normalize_axes(attrs["new_axes"], result_rank)),
            out,
            target(2),
        )
    if not any(final):
        ex.emit1(node, "Identity", [x], ex.output(node))


@rule("take")
def _take(ex: Emitter, node: Node) -> None:
    a, indices = ex.inputs(node)
    axis = node.attrs["axis"]
    if axis is None:
        a = ex.emit1(node, "Reshape", [a, ex.ints(node, [-1], "shape")])
        axis = 0
    rank = ex.graph.tensor(node.inputs[0]).ndim if node.attrs["axis"] is not None else 1
    ex.emit1(node, "Gather", [a, indices], ex.output(node), axis=normalize_axis(axis, rank))


@rule("gather_elements")
def _gather_elements(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axis = normalize_axis(node.attrs["axis"], rank)
    ex.emit1(node, "GatherElements", ex.inputs(node), ex.output(node), axis=axis)


#: The first opset whose ScatterElements has each reduction.
_SCATTER_REDUCTION_OPSET = {"none": 13, "add": 16, "mul": 16, "max": 18, "min": 18}


@rule("scatter_elements")
def _scatter_elements(ex: Emitter, node: Node) -> None:
    rank = ex.graph.tensor(node.inputs[0]).ndim
    axis = normalize_axis(node.attrs["axis"], rank)
    reduction = node.attrs["reduction"]
    needed = _SCATTER_REDUCTION_OPSET[reduction]
    if ex.opset < needed:
        raise ex.fail(
            node, f"reduction {reduction!r} needs opset {needed} or later (exporting at {ex.opset})"
        )
    extra = {"reduction": reduction} if reduction != "none" else {}
    ex.emit1(node, "ScatterElements", ex.inputs(node), ex.output(node), axis=axis, **extra)


@rule("diagonal")
def _diagonal(ex: Emitter, node: Node) -> None:
    # ONNX has no Diagonal; Einsum's repeated letter is one ("abcb->acb").
    rank = ex.graph.tensor(node.inputs[0]).ndim
    a1 = normalize_axis(node.attrs["axis1"], rank)
    a2 = normalize_axis(node.attrs["axis2"], rank)
    letters = [chr(ord("a") + i) for i in range(rank)]
    letters[a2] = letters[a1]
    rest = "".join(c for i, c in enumerate(letters) if i not in (a1, a2))
    equation = f"{''.join(letters)}->{rest}{letters[a1]}"
    ex.emit1(node, "Einsum", ex.inputs(node), ex.output(node), equation=equation)


@rule("one_hot")
def _one_hot(ex: Emitter, node: Node) -> None:
    depth, axis, dtype = node.attrs["depth"], node.attrs["axis"], node.attrs["dtype"]
    _emit_one_hot(ex, node, 0, depth, axis, dtype, ex.output(node))


def _emit_one_hot(
    ex: Emitter, node: Node, input_index: int, depth: int, axis: int, dtype, output: str | None
) -> str:
    """one_hot of ``node``'s input ``input_index`` as Equal against a range, Cast."""
    indices = ex.input(node, input_index)
    index_type = ex.graph.tensor(node.inputs[input_index]).type
    at = normalize_axis(axis, index_type.rank + 1)
    positions = np.arange(depth, dtype=index_type.dtype).reshape(
        (depth,) + (1,) * (index_type.rank - at)
    )
    expanded = ex.axes(node, "Unsqueeze", 13, [at], indices)
    hit = ex.emit1(node, "Equal", [expanded, ex.const(node, positions, base="positions")])
    return ex.emit1(node, "Cast", [hit], output, to=to_onnx_dtype(dtype))


@rule("pad")
def _pad(ex: Emitter, node: Node) -> None:
    widths = list(node.attrs["pad_width"])
    pads = widths[::2] + widths[1::2]
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    value = ex.const(node, dtype.type(node.attrs["constant_values"]), base="value")
    ex.emit1(
        node,
        "Pad",
        [ex.input(node, 0), ex.ints(node, pads, "pads"), value],
        ex.output(node),
        mode="constant",
    )


# -- nn -------------------------------------------------------------------------------------


@rule("softmax", "log_softmax")
def _softmax(ex: Emitter, node: Node) -> None:
    op_type = "Softmax" if node.op == "softmax" else "LogSoftmax"
    ex.emit1(node, op_type, ex.inputs(node), ex.output(node), axis=node.attrs["axis"])


def _window_attrs(node: Node) -> dict:
    return {
        "strides": list(node.attrs["stride"]),
        "pads": list(node.attrs["padding"]),
        "dilations": list(node.attrs["dilation"]),
    }


@rule("conv2d", "conv")
def _conv(ex: Emitter, node: Node) -> None:
    w_shape = ex.graph.tensor(node.inputs[1]).shape
    ex.emit1(
        node,
        "Conv",
        ex.inputs(node),
        ex.output(node),
        kernel_shape=list(w_shape[2:]),
        group=node.attrs["groups"],
        **_window_attrs(node),
    )


@rule("conv_transpose2d", "conv_transpose")
def _conv_transpose(ex: Emitter, node: Node) -> None:
    w_shape = ex.graph.tensor(node.inputs[1]).shape
    ex.emit1(
        node,
        "ConvTranspose",
        ex.inputs(node),
        ex.output(node),
        kernel_shape=list(w_shape[2:]),
        group=node.attrs["groups"],
        output_padding=list(node.attrs["output_padding"]),
        **_window_attrs(node),
    )


def _is_read(graph, ref: str) -> bool:
    """Whether any node or graph output reads tensor ``ref``."""
    return ref in graph.outputs or any(ref in n.inputs for n in graph.nodes)


def _pool_attrs(node: Node) -> dict:
    return {
        "kernel_shape": list(node.attrs["kernel_size"]),
        "ceil_mode": int(node.attrs["ceil_mode"]),
        **_window_attrs(node),
    }


@rule("max_pool")
def _max_pool(ex: Emitter, node: Node) -> None:
    outputs = [ex.output(node)]
    if _is_read(ex.graph, ex.output(node, 1)):
        outputs.append(ex.output(node, 1))  # ONNX's Indices: row-major, flat, int64
    ex.emit(node, "MaxPool", ex.inputs(node), outputs, **_pool_attrs(node))


@rule("avg_pool")
def _avg_pool(ex: Emitter, node: Node) -> None:
    attrs = _pool_attrs(node)
    if ex.opset < 19:  # AveragePool has dilations from opset 19 on
        if any(d != 1 for d in attrs.pop("dilations")):
            raise ex.fail(
                node,
                f"a dilated AveragePool needs opset 19 or newer, not "
                f"{ex.opset}; export with opset=19",
            )
    ex.emit1(
        node,
        "AveragePool",
        ex.inputs(node),
        ex.output(node),
        count_include_pad=int(node.attrs["count_include_pad"]),
        **attrs,
    )


@rule("dropout")
def _dropout(ex: Emitter, node: Node) -> None:
    dtype = ex.graph.tensor(node.inputs[0]).dtype
    ratio = ex.const(node, dtype.type(node.attrs["rate"]), base="ratio")
    mask = ex.fresh(node, "mask")
    ex.emit(
        node,
        "Dropout",
        [ex.input(node, 0), ratio],
        [ex.output(node), mask],
        seed=node.attrs["seed"],
    )
    # ONNX's mask is bool; ours has x's dtype (ones in an inference run).
    ex.emit1(node, "Cast", [mask], ex.output(node, 1), to=to_onnx_dtype(dtype))


@rule("batch_norm")
def _batch_norm(ex: Emitter, node: Node) -> None:
    x, gamma, beta, mean, var = ex.inputs(node)
    ex.emit1(
        node,
        "BatchNormalization",
        [x, gamma, beta, mean, var],
        ex.output(node),
        epsilon=node.attrs["epsilon"],
        momentum=node.attrs["momentum"],
    )
    # Inference form: the statistics used are the running ones.
    ex.emit1(node, "Identity", [mean], ex.output(node, 1))
    ex.emit1(node, "Identity", [var], ex.output(node, 2))


@rule("layer_norm")
def _layer_norm(ex: Emitter, node: Node) -> None:
    x, scale, bias = ex.inputs(node)
    x_type = ex.graph.tensor(node.inputs[0]).type
    axis = normalize_axis(node.attrs["axis"], x_type.rank)
    epsilon = node.attrs["epsilon"]
    outputs = [ex.output(node, k) for k in range(3)]
    half = x_type.dtype == np.float16
    if ex.opset >= 17:
        if half:  # stash_type=1 gives float32 statistics: ours are float16
            stats = ex.emit(
                node,
                "LayerNormalization",
                [x, scale, bias],
                [outputs[0], ex.fresh(node, "mean"), ex.fresh(node, "inv_std")],
                axis=axis,
                epsilon=epsilon,
            )
            for k in (1, 2):
                ex.emit1(node, "Cast", [stats[k]], outputs[k], to=to_onnx_dtype(np.float16))
            return
        ex.emit(node, "LayerNormalization", [x, scale, bias], outputs, axis=axis, epsilon=epsilon)
        return
    # Before opset 17: the kernel's formula, in its order (float16 in float32).
    compute = np.dtype(np.float32) if half else x_type.dtype
    if half:
        x, scale, bias = (
            ex.emit1(node, "Cast", [v], to=to_onnx_dtype(compute)) for v in (x, scale, bias)
        )
    axes = list(range(axis, x_type.rank))
    ends = [None if half else o for o in outputs]
    mean = ex.axes(node, "ReduceMean", 18, axes, x, ends[1], keepdims=1)
    centred = ex.emit1(node, "Sub", [x, mean])
    var = ex.axes(
        node, "ReduceMean", 18, axes, ex.emit1(node, "Mul", [centred, centred]), keepdims=1
    )
    std = ex.emit1(node, "Sqrt", [ex.emit1(node, "Add", [var, ex.const(node, epsilon, compute)])])
    inv_std = ex.emit1(node, "Div", [ex.const(node, 1.0, compute), std], ends[2])
    xhat = ex.emit1(node, "Mul", [centred, inv_std])
    y = ex.emit1(node, "Add", [ex.emit1(node, "Mul", [xhat, scale]), bias], ends[0])
    if half:
        for value, out in zip((y, mean, inv_std), outputs):
            ex.emit1(node, "Cast", [value], out, to=to_onnx_dtype(np.float16))


@rule("instance_norm")
def _instance_norm(ex: Emitter, node: Node) -> None:
    ex.emit1(
        node,
        "InstanceNormalization",
        ex.inputs(node),
        ex.output(node),
        epsilon=node.attrs["epsilon"],
    )


# -- losses ----------------------------------------------------------------------------------


def _reduce_all(ex: Emitter, node: Node, op_type: str, x: str, output: str) -> str:
    return ex.emit1(node, op_type, [x], output, keepdims=0)


@rule("softmax_cross_entropy")
def _softmax_cross_entropy(ex: Emitter, node: Node) -> None:
    logits, labels = ex.inputs(node)
    logits_type, labels_type = (ex.graph.tensor(r).type for r in node.inputs)
    rank = logits_type.rank
    axis = normalize_axis(node.attrs["axis"], rank)
    reduction = node.attrs["reduction"]
    loss_out, logp_out = ex.output(node, 0), ex.output(node, 1)
    if labels_type.dtype.kind != "f" and node.attrs["out_of_range"] == "zero":
        # SoftmaxCrossEntropyLoss has no such rule (its ignore_index is one value):
        # the one-hot targets, whose out-of-range rows are zeros, as targets.
        labels = _emit_one_hot(ex, node, 1, logits_type.shape[axis], axis, logits_type.dtype, None)
        labels_type = logits_type
    if labels_type.dtype.kind == "f":
        logp = ex.emit1(node, "LogSoftmax", [logits], logp_out, axis=axis)
        product = ex.emit1(node, "Mul", [labels, logp])
        summed = ex.axes(node, "ReduceSum", 13, [axis], product, keepdims=0)
        if reduction == "none":
            ex.emit1(node, "Neg", [summed], loss_out)
            return
        op_type = "ReduceMean" if reduction == "mean" else "ReduceSum"
        total = _reduce_all(ex, node, op_type, summed, None)
        ex.emit1(node, "Neg", [total], loss_out)
        return
    # Integer labels: ONNX's op wants classes on axis 1 of (N, C, d1, ...).
    if rank == 1:
        scores = ex.axes(node, "Unsqueeze", 13, [0], logits)
        labels = ex.axes(node, "Unsqueeze", 13, [0], labels)
        loss, logp = ex.emit(
            node, "SoftmaxCrossEntropyLoss", [scores, labels], 2, reduction=reduction
        )
        ex.axes(node, "Squeeze", 13, [0], logp, logp_out)
        if reduction == "none":
            ex.axes(node, "Squeeze", 13, [0], loss, loss_out)
        else:
            ex.emit1(node, "Identity", [loss], loss_out)
        return
    if axis == 1:
        ex.emit(
            node,
            "SoftmaxCrossEntropyLoss",
            [logits, labels],
            [loss_out, logp_out],
            reduction=reduction,
        )
        return
    others = [i for i in range(rank) if i != axis]
    perm = [others[0], axis, *others[1:]]
    inverse = sorted(range(rank), key=perm.__getitem__)
    moved = ex.emit1(node, "Transpose", [logits], perm=perm)
    loss, logp = ex.emit(
        node,
        "SoftmaxCrossEntropyLoss",
        [moved, labels],
        [loss_out, ex.fresh(node, "log_prob")],
        reduction=reduction,
    )
    ex.emit1(node, "Transpose", [logp], logp_out, perm=inverse)


@rule("mean_squared_error")
def _mean_squared_error(ex: Emitter, node: Node) -> None:
    diff = ex.emit1(node, "Sub", ex.inputs(node))
    reduction = node.attrs["reduction"]
    if reduction == "none":
        ex.emit1(node, "Mul", [diff, diff], ex.output(node))
        return
    square = ex.emit1(node, "Mul", [diff, diff])
    _reduce_all(
        ex, node, "ReduceMean" if reduction == "mean" else "ReduceSum", square, ex.output(node)
    )


# -- fused ops (graphengine.ops.fused, made by ge.optimize) --------------------------------


@rule("dense")
def _dense(ex: Emitter, node: Node) -> None:
    activation = node.attrs["activation"]
    out = ex.output(node)
    total = ex.emit1(node, "Gemm", ex.inputs(node), out if activation == "none" else None)
    if activation != "none":
        ex.emit1(node, _SAME_NAME[activation], [total], out)


@rule("elementwise_chain")
def _elementwise_chain(ex: Emitter, node: Node) -> None:
    value, ops = ex.input(node, 0), node.attrs["ops"]
    for k, op in enumerate(ops):
        out = ex.output(node) if k == len(ops) - 1 else None
        if op == "square":
            value = ex.emit1(node, "Mul", [value, value], out)
        else:
            value = ex.emit1(node, _SAME_NAME[op], [value], out)


# -- resize ------------------------------------------------------------------------------------


@rule("resize")
def _resize(ex: Emitter, node: Node) -> None:
    """Resize with scales when they determine every size (floor(size * scale)),
    else with sizes when every scale is size / input size."""
    attrs = node.attrs
    x_type = ex.graph.tensor(node.inputs[0]).type
    sizes, scales = attrs["sizes"], attrs["scales"]
    # ONNX computes floor(size * scale) in double from float32 scales.
    by_scales = all(
        s == -1 or (isinstance(d, int) and s == int(np.floor(d * float(np.float32(sc)))))
        for s, d, sc in zip(sizes, x_type.shape, scales)
    )
    by_sizes = all(
        s != -1 and isinstance(d, int) and np.isclose(sc, s / d)
        for s, d, sc in zip(sizes, x_type.shape, scales)
    )
    coordinate_mode = attrs["coordinate_transformation_mode"]
    if attrs["antialias"] and ex.opset < 18:
        raise ex.fail(node, f"antialias needs opset 18 or newer (exporting at {ex.opset})")
    if coordinate_mode == "half_pixel_symmetric" and ex.opset < 19:
        raise ex.fail(
            node, f"half_pixel_symmetric needs opset 19 or newer (exporting at {ex.opset})"
        )
    roi = ""
    if coordinate_mode == "tf_crop_and_resize":
        roi = ex.const(
            node,
            np.asarray(attrs["roi"] or [0.0] * x_type.rank + [1.0] * x_type.rank, np.float32),
            base="roi",
        )
    if by_scales:
        inputs = [
            ex.input(node, 0),
            roi,
            ex.const(node, np.asarray(scales, np.float32), base="scales"),
        ]
    elif by_sizes:
        inputs = [ex.input(node, 0), roi, "", ex.ints(node, sizes, "sizes")]
    else:
        raise ex.fail(
            node,
            f"sizes {list(sizes)} and scales {list(scales)} are not ONNX's: "
            "ONNX derives one from the other",
        )
    extra = {"antialias": int(attrs["antialias"])} if ex.opset >= 18 else {}
    ex.emit1(
        node,
        "Resize",
        inputs,
        ex.output(node),
        mode=attrs["mode"],
        coordinate_transformation_mode=coordinate_mode,
        nearest_mode=attrs["nearest_mode"],
        cubic_coeff_a=attrs["cubic_coeff_a"],
        exclude_outside=int(attrs["exclude_outside"]),
        extrapolation_value=attrs["extrapolation_value"],
        **extra,
    )
