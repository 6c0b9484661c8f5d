"""Shape arithmetic with symbolic dims, done at import time.

Exporters write "flatten all but the batch" as ``Shape -> Gather -> Unsqueeze ->
Concat -> Reshape``.  With a symbolic batch dim ``N`` the shape is not a known
array, but it is still known symbolically: ``Shape(x)`` of x: (N, 3, 4) is
``[N, 3, 4]``.  Such values are kept as numpy object arrays whose elements are
ints, dim names (str), products of them written ``'2*N'`` (monomials: Mul and
exact Div keep them) or None (unknown), and the few ops that move shape
entries around are evaluated on them here.  ``Reshape`` and ``Expand`` accept
the result; anything else that needs such a value as a tensor is refused,
naming the value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import NodeProto, helper


def is_symbolic(value: Any) -> bool:
    """Whether ``value`` is a shape value with symbolic entries."""
    return isinstance(value, np.ndarray) and value.dtype == object


def symbolic_array(dims) -> np.ndarray:
    """An int64 array when every entry is known, else an object array."""
    dims = list(dims)
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return np.array(dims, dtype=np.int64)
    out = np.empty(len(dims), dtype=object)
    out[:] = [int(d) if isinstance(d, (int, np.integer)) else d for d in dims]
    return out


def _normalize(array: np.ndarray) -> np.ndarray:
    if array.dtype == object and all(isinstance(v, (int, np.integer)) for v in array.flat):
        return array.astype(np.int64)
    return array


def monomial(dim: Any) -> tuple[int, tuple[str, ...]] | None:
    """A dim as (coefficient, sorted symbol names): 6 is (6, ()), 'N' is (1, ('N',)),
    the product '2*N' (see :func:`dim_of`) is (2, ('N',)); None for an unknown dim."""
    if isinstance(dim, (int, np.integer)):
        return int(dim), ()
    if not isinstance(dim, str):
        return None
    coefficient, names = 1, []
    for part in dim.split("*"):
        if part.isdigit():
            coefficient *= int(part)
        else:
            names.append(part)
    return coefficient, tuple(sorted(names))


def dim_of(coefficient: int, names: tuple[str, ...]) -> int | str:
    """The dim of a monomial: an int, a symbol, or a product written '2*N*T'
    (graphengine's dim names never hold '*': the importer makes them valid)."""
    if not names:
        return coefficient
    return "*".join(([str(coefficient)] if coefficient != 1 else []) + sorted(names))


def times(a: Any, b: Any) -> int | str | None:
    """The product of two dims, symbolic ones included; None if either is unknown."""
    ma, mb = monomial(a), monomial(b)
    if ma is None or mb is None:
        return None
    return dim_of(ma[0] * mb[0], tuple(sorted(ma[1] + mb[1])))


def divided(a: Any, b: Any) -> int | str | None:
    """a / b where it divides exactly (coefficient and symbols), else None."""
    ma, mb = monomial(a), monomial(b)
    if ma is None or mb is None or mb[0] == 0 or ma[0] % mb[0]:
        return None
    names = list(ma[1])
    for name in mb[1]:
        if name not in names:
            return None
        names.remove(name)
    return dim_of(ma[0] // mb[0], tuple(names))


def _arithmetic(fn: Callable, neutral: int | None, left_neutral: bool) -> Callable:
    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
            return int(fn(int(a), int(b)))
        if neutral is not None and isinstance(b, (int, np.integer)) and b == neutral:
            return a
        if left_neutral and isinstance(a, (int, np.integer)) and a == neutral:
            return b
        return None  # a symbol combined with another value: unknown

    return np.frompyfunc(apply, 2, 1)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _symbolic(fn: Callable, exact: Callable) -> Callable:
    """``fn`` on ints, ``exact`` (a product or exact quotient) when a dim is symbolic."""

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
            return int(fn(int(a), int(b)))
        return exact(a, b)

    return np.frompyfunc(apply, 2, 1)


_ELEMENTWISE = {
    "Add": _arithmetic(operator.add, 0, True),
    "Sub": _arithmetic(operator.sub, 0, False),
    # Products and exact quotients of dims stay known ('2*N'): exporters compute
    # a head split's batch * heads so, and Reshape takes them apart again.
    "Mul": _symbolic(operator.mul, times),
    "Div": _symbolic(_trunc_div, divided),
}


def fold(node: NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """Evaluate ``node`` on shape values; None when the op is not one moved here."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    data = inputs[0] if inputs else None
    if op in ("Identity",) or (op == "Cast" and attrs.get("to") in (6, 7)):  # INT32, INT64
        out = data
    elif op == "Gather" and data.ndim == 1 and attrs.get("axis", 0) == 0:
        out = data[np.asarray(inputs[1], dtype=np.int64)]
    elif op == "Slice" and data.ndim == 1:
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1]
        out = data[slice(int(inputs[1][0]), int(inputs[2][0]), int(steps[0]))]
    elif op == "Concat" and attrs.get("axis", 0) in (0, -1):
        out = np.concatenate([np.asarray(v, dtype=object).reshape(-1) for v in inputs])
    elif op == "Unsqueeze":
        axes = attrs.get("axes") or [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
        out = np.expand_dims(data, tuple(axes))
    elif op == "Squeeze":
        axes = attrs.get("axes") or (
            [int(a) for a in np.asarray(inputs[1]).reshape(-1)] if len(inputs) > 1 else None
        )
        out = np.squeeze(data, None if axes is None else tuple(axes))
    elif op == "Reshape":
        out = data.reshape([int(d) for d in np.asarray(inputs[1]).reshape(-1)])
    elif op in _ELEMENTWISE:
        a, b = (np.asarray(v, dtype=object) for v in inputs)
        out = _ELEMENTWISE[op](a, b)
        out = np.asarray(out, dtype=object)
    else:
        return None
    if not isinstance(out, np.ndarray):  # indexing an object array gives a bare element
        out = np.asarray(out, dtype=object)
    return [_normalize(out)]
