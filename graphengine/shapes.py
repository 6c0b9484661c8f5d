"""Shapes with symbolic dimensions, tensor types and numpy broadcasting.

A dimension is an ``int`` (known size), a ``str`` (a symbolic size such as the
batch dimension ``"N"``, bound to a number when data is fed) or ``None`` (not
known until run time, e.g. the result of broadcasting two different symbols).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .dtypes import as_dtype
from .errors import ShapeError
from .limits import MAX_RANK

Dim = int | str | None
Shape = tuple[Dim, ...]


def format_dim(dim: Dim) -> str:
    return "?" if dim is None else str(dim)


def format_shape(shape: Shape) -> str:
    """``(N, 3)`` style text for messages and drawings."""
    inner = ", ".join(format_dim(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class TensorType:
    """The static type of a tensor: a dtype and a shape of :data:`Dim` values.

    ``label`` names the tensor in error messages (``'x'``); it takes no part in
    comparisons.  Inference rules receive labelled input types.  Immutable.
    """

    # Written out rather than a frozen dataclass, whose generated methods cost
    # over a millisecond of ``import graphengine``; the behaviour is the same.
    dtype: np.dtype
    shape: Shape
    label: str

    def __init__(self, dtype: Any, shape: Iterable[Dim], label: str = "") -> None:
        object.__setattr__(self, "dtype", as_dtype(dtype))
        object.__setattr__(self, "shape", shape if type(shape) is tuple else tuple(shape))
        object.__setattr__(self, "label", label)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: a TensorType is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a TensorType is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not TensorType:
            return NotImplemented
        return self.dtype == other.dtype and self.shape == other.shape

    def __hash__(self) -> int:
        return hash((self.dtype, self.shape))

    def __repr__(self) -> str:
        return f"TensorType(dtype={self.dtype!r}, shape={self.shape!r})"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return all(isinstance(d, int) for d in self.shape)

    def with_dtype(self, dtype: Any) -> TensorType:
        return TensorType(as_dtype(dtype), self.shape)

    def with_shape(self, shape: Iterable[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def named(self, fallback: str) -> str:
        """How messages refer to this tensor: its label, else ``fallback``."""
        return self.label or fallback

    def __str__(self) -> str:
        return f"{self.dtype.name}{format_shape(self.shape)}"


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    """Broadcast two dimensions as numpy does; raise ValueError when they cannot."""
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"{a} and {b}")
    # A symbol against a size > 1: the symbol must equal it at run time.
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Broadcast shapes with numpy's rules, symbolic dims included.

    Raises ValueError with the conflicting sizes; callers wrap it in a ShapeError
    that names the op.

    >>> broadcast_shapes(("N", 3), (3,))
    ('N', 3)
    """
    if all(s == shapes[0] for s in shapes[1:]) and shapes:
        return tuple(shapes[0])  # equal shapes, the common case, need no work
    if not shapes:
        return ()
    rank = max(len(s) for s in shapes)
    # Padding with 1s never changes a dim, so each shape only meets the trailing
    # dims it has (the same result as padding every shape to the full rank).
    first = shapes[0]
    result: list[Dim] = [1] * (rank - len(first))
    result.extend(first)
    for shape in shapes[1:]:
        offset = rank - len(shape)
        for i, d in enumerate(shape):
            result[offset + i] = broadcast_dims(result[offset + i], d)
    return tuple(result)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Map a possibly negative axis into ``range(rank)``; raise ShapeError if out of range."""
    if not -rank <= axis < max(rank, 1) or (rank == 0 and axis not in (0, -1)):
        raise ShapeError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank if rank else 0


def normalize_axes(axis: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """Axes of a reduction as a sorted tuple; ``None`` means every axis.

    Raises ShapeError for a rank above MAX_RANK (64) before looking at the axes,
    so 10**5 axes cost nothing."""
    if rank > MAX_RANK:
        raise ShapeError(
            f"a result of rank {rank}; at most {MAX_RANK} axes are supported (numpy's limit)"
        )
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = sorted({normalize_axis(int(a), rank) for a in axes})
    if len(out) != len(axes):
        raise ShapeError(f"axis {tuple(axes)} repeats an axis")
    return tuple(out)


class DimMismatch(NamedTuple):
    """Where a runtime shape breaks its declared dims (see :func:`match_dims`).

    ``expected`` is the declared dim; for a symbolic one, ``bound_size`` is the
    size an earlier array bound it to and ``bound_by`` that array's name.
    """

    axis: int
    size: int
    expected: Dim
    bound_size: int | None = None
    bound_by: str = ""


def match_dims(
    declared: Shape,
    actual: Sequence[int],
    owner: str,
    bound: dict[str, tuple[int, str]],
    first_axis: int = 0,
) -> DimMismatch | None:
    """Check a runtime shape against declared dims of the same rank, from axis
    ``first_axis`` on: a known dim must equal its size, and a symbolic dim takes
    one size across every array checked with the same ``bound`` (which records
    each symbol's size and the ``owner`` that bound it first).  Returns the first
    mismatch, or None.  Feeds and training data are both checked with it."""
    for axis in range(first_axis, len(declared)):
        dim, size = declared[axis], actual[axis]
        if isinstance(dim, int):
            if dim != size:
                return DimMismatch(axis, size, dim)
        elif isinstance(dim, str):
            if dim in bound and bound[dim][0] != size:
                return DimMismatch(axis, size, dim, *bound[dim])
            bound.setdefault(dim, (size, owner))
    return None
