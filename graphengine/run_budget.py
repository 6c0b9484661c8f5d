"""The size budget at run time, once the feeds have bound the symbolic dims.

Shape inference refuses a result above ``max_tensor_bytes`` when the graph is
built, but only when its size is known then: ``(N, N)`` with a symbolic ``N``
is not.  When a plan first meets a shape signature (the shapes of its feeds and
parameters, see :func:`graphengine.memory_plan.shape_signature`),
:func:`check_bound_sizes` runs the inference rules again over the plan's steps
with the real input shapes, before any kernel runs, and refuses a result above
the budget.  Runs with a signature already seen cost nothing.

A dim that depends on input *values* rather than shapes (none of the built-in
ops has one; a rule may still leave a dim None) cannot be known before the
kernel runs; the results computed from it are not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ExecutionError, ShapeError
from .limits import format_dims, get_limits
from .shapes import TensorType


def check_bound_sizes(
    steps: Sequence[Any], values: Sequence[Any], feeds: Mapping[str, int]
) -> None:
    """Refuse the first step whose result, with the real input shapes, passes the budget.

    ``steps`` are the plan's steps (``node``, ``inputs`` and ``outputs`` slot
    numbers), ``values`` the run's slot list with the feeds, parameters and
    constants filled in, ``feeds`` the feed names and their slots (for the message).

    Raises ExecutionError naming the node, the shape, the bytes and the feeds.
    """
    bound = get_limits().max_tensor_bytes
    types: dict[int, TensorType] = {}
    for slot, value in enumerate(values):
        if value is not None:
            array = np.asarray(value) if not hasattr(value, "shape") else value
            types[slot] = TensorType(array.dtype, array.shape)
    for step in steps:
        node = step.node
        in_types = [types.get(slot) for slot in step.inputs]
        if any(t is None for t in in_types):
            continue  # downstream of a dim known only to the kernel
        try:
            out = node.opdef.infer(*in_types, **node.attrs)
        except (ShapeError, ValueError, TypeError, ArithmeticError):
            continue  # the kernel reports what is wrong, naming the node
        out = (out,) if isinstance(out, TensorType) else tuple(out)
        for slot, t in zip(step.outputs, out):
            if not t.is_static:
                continue
            nbytes = t.dtype.itemsize * int(np.prod(t.shape, dtype=object))
            if nbytes > bound:
                raise ExecutionError(_message(node, t, nbytes, bound, values, feeds))
            types[slot] = t


def _message(
    node: Any,
    t: TensorType,
    nbytes: int,
    bound: int,
    values: Sequence[Any],
    feeds: Mapping[str, int],
) -> str:
    shapes = ", ".join(
        f"'{name}' {format_dims(np.shape(values[slot]))}" for name, slot in feeds.items()
    )
    return (
        f"node '{node.name}' ({node.op}): with the shapes fed ({shapes or 'no feeds'}) "
        f"its result of shape {format_dims(t.shape)} would take {nbytes:,} bytes, "
        f"over the limit of {bound:,} bytes per tensor; nothing was allocated. Feed "
        "smaller inputs, or raise the limit with ge.set_limits(max_tensor_bytes=...) "
        "(or graphengine --max-tensor-bytes) if you mean it"
    )
