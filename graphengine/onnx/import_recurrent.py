"""Import rules for ONNX's recurrent layers: LSTM, GRU and RNN, unrolled.

Each is unrolled at import into our ops, one name scope per time step
(``lstm/forward/t3/...``): a matmul of the whole sequence with the input weights
(W, one node for every step), then per step a matmul with the recurrence
weights (R), the gate activations and the state update.  The gradient graph is
then the ordinary gradients of those ops, readable step by step, with no
recurrent op or backward kernel of its own.  The sequence length must be
static (PyTorch exports a fixed one when the example input has it).

Semantics are ONNX's (schema versions 7, 14 and 22; 7, used at opsets 7-13,
lacks only ``layout``): gate order iofc (LSTM) and zrh
(GRU), biases Wb + Rb, peepholes P (LSTM), ``linear_before_reset`` (GRU, PyTorch
writes 1), ``direction`` forward, reverse or bidirectional, ``layout`` 0
(seq, batch, feature) or 1 (batch first), ``clip``.  Supported activations are
the defaults (Sigmoid, Tanh, Tanh); ``input_forget=1`` and ``sequence_lens``
with unequal lengths are refused.
"""

from __future__ import annotations

import numpy as np

from ..ops import api as ops
from .import_rules import NodeContext, rule

_DEFAULT_ACTIVATIONS = {
    "LSTM": ["Sigmoid", "Tanh", "Tanh"],
    "GRU": ["Sigmoid", "Tanh"],
    "RNN": ["Tanh"],
}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _check(ctx: NodeContext, x, seq: int, directions: int) -> None:
    activations = ctx.attr("activations", None)
    expected = _DEFAULT_ACTIVATIONS[ctx.op_type]
    if activations is not None:
        given = [a.lower() for a in activations]
        if given != [a.lower() for a in expected * directions][: len(given)] or len(given) not in (
            len(expected),
            len(expected) * directions,
        ):
            raise ctx.fail(
                f"activations {activations} are not supported; graphengine imports "
                f"the defaults {expected}"
            )
    if ctx.attr("input_forget", 0):
        raise ctx.fail("input_forget=1 (coupled input and forget gates) is not supported")
    if ctx.has(4):
        lengths = ctx.static(4)
        if lengths is None or np.any(lengths.reshape(-1) != seq):
            raise ctx.fail(
                f"sequence_lens must be known at import time and equal to the "
                f"sequence length {seq} for every batch entry (graphengine unrolls "
                "a fixed number of steps)"
            )


def _activate(ctx: NodeContext, v, kind: str):
    clip = ctx.attr("clip", None)
    if clip is not None:
        v = ops.clip(v, -float(clip), float(clip))
    return ops.sigmoid(v) if kind == "sigmoid" else ops.tanh(v)


def _direction(ctx: NodeContext, xs_proj, d: int, reverse: bool, h0, c0, hidden: int):
    """Unroll one direction; returns (outputs per step in time order, last h, last c)."""
    kind = ctx.op_type
    r = ops.transpose(ctx.input(2)[d])  # (H, gates * H)
    p = ctx.input(7)[d] if kind == "LSTM" and ctx.has(7) else None
    rb = None
    if ctx.has(3) and kind == "GRU":
        rb = ctx.input(3)[d][_GATES[kind] * hidden :]  # recurrence biases, kept apart
    seq = len(xs_proj)
    steps = range(seq - 1, -1, -1) if reverse else range(seq)
    h, c = h0, c0
    outputs: list = [None] * seq
    for t in steps:
        with ctx.graph.name_scope(f"t{t}"):
            gx = xs_proj[t]
            if kind == "LSTM":
                gates = gx + ops.matmul(h, r)
                i, o, f, g = ops.split(gates, 4, axis=-1)
                if p is not None:
                    pi, po, pf = ops.split(p, 3)
                    i, f = i + pi * c, f + pf * c
                i, f = _activate(ctx, i, "sigmoid"), _activate(ctx, f, "sigmoid")
                c = f * c + i * _activate(ctx, g, "tanh")
                if p is not None:
                    o = o + po * c
                h = _activate(ctx, o, "sigmoid") * ops.tanh(c)
            elif kind == "GRU":
                xz, xr, xh = ops.split(gx, 3, axis=-1)
                rz, rr, rh = ops.split(r, 3, axis=-1)
                bz = br = bh = None
                if rb is not None:
                    bz, br, bh = ops.split(rb, 3)
                hz, hr = ops.matmul(h, rz), ops.matmul(h, rr)
                if rb is not None:
                    hz, hr = hz + bz, hr + br
                z = _activate(ctx, xz + hz, "sigmoid")
                rt = _activate(ctx, xr + hr, "sigmoid")
                if ctx.attr("linear_before_reset", 0):
                    hh = ops.matmul(h, rh)
                    if bh is not None:
                        hh = hh + bh
                    candidate = _activate(ctx, xh + rt * hh, "tanh")
                else:
                    hh = ops.matmul(rt * h, rh)
                    if bh is not None:
                        hh = hh + bh
                    candidate = _activate(ctx, xh + hh, "tanh")
                h = (1.0 - z) * candidate + z * h
            else:  # RNN
                h = _activate(ctx, gx + ops.matmul(h, r), "tanh")
            outputs[t] = h
    return outputs, h, c


def _recurrent(ctx: NodeContext):
    kind = ctx.op_type
    x = ctx.input(0)
    if x.ndim != 3:
        raise ctx.fail(f"X must have rank 3, got shape {x.shape}")
    layout = ctx.attr("layout", 0)
    if layout:
        x = ops.transpose(x, (1, 0, 2))  # batch first -> (seq, batch, input)
    seq = x.shape[0]
    if not isinstance(seq, int):
        raise ctx.fail(
            f"the sequence length ({seq}) must be static: graphengine unrolls the "
            "recurrence at import; export the model with a fixed sequence length"
        )
    direction = ctx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.fail(f"direction {direction!r} is not forward, reverse or bidirectional")
    directions = 2 if direction == "bidirectional" else 1
    _check(ctx, x, seq, directions)
    hidden = int(ctx.attr("hidden_size", ctx.input(2).shape[-1]))
    gates = _GATES[kind]
    w = ctx.input(1)
    batch_zeros = ops.zeros_like(ops.sum(x, axis=(0, 2)))  # (batch,), x's dtype
    zeros = ops.broadcast_to(ops.expand_dims(batch_zeros, 1), (-1, hidden))

    def initial(index: int, d: int):
        if not ctx.has(index):
            return zeros
        value = ctx.input(index)
        if layout:
            value = ops.transpose(value, (1, 0, 2))
        return value[d]

    ys, hs, cs = [], [], []
    for d in range(directions):
        reverse = direction == "reverse" or d == 1
        with ctx.graph.name_scope("backward" if reverse else "forward"):
            proj = ops.matmul(x, ops.transpose(w[d]))  # (seq, batch, gates*H)
            if ctx.has(3):
                b = ctx.input(3)[d]
                if kind == "GRU":
                    proj = proj + b[: gates * hidden]
                else:
                    proj = proj + (b[: gates * hidden] + b[gates * hidden :])
            steps = [proj[t] for t in range(seq)]
            c0 = initial(6, d) if kind == "LSTM" else None
            outputs, h, c = _direction(ctx, steps, d, reverse, initial(5, d), c0, hidden)
            ys.append(ops.stack(outputs, axis=0))  # (seq, batch, H)
            hs.append(h)
            cs.append(c)
    y = ops.stack(ys, axis=1)  # (seq, dirs, batch, H)
    y_h = ops.stack(hs, axis=0)  # (dirs, batch, H)
    y_c = ops.stack(cs, axis=0) if kind == "LSTM" else None
    if layout:
        y = ops.transpose(y, (2, 0, 1, 3))  # (batch, seq, dirs, H)
        y_h = ops.transpose(y_h, (1, 0, 2))
        y_c = ops.transpose(y_c, (1, 0, 2)) if y_c is not None else None
    return (y, y_h, y_c) if kind == "LSTM" else (y, y_h)


rule("LSTM", versions=(7, 14, 22), static=(4,))(_recurrent)
rule("GRU", versions=(7, 14, 22), static=(4,))(_recurrent)
rule("RNN", versions=(7, 14, 22), static=(4,))(_recurrent)
