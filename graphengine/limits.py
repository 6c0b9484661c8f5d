"""Bounds on what a graph may ask for, checked before anything is allocated.

A file of a few bytes can declare a tensor of terabytes (``broadcast_to`` to
(10**6, 10**6)), a million axes, or a split into 10**9 pieces.  Shape
inference knows every result's size before anything runs, so
:func:`check_node_types` (called for every node built or loaded) refuses:

* a rank above :data:`MAX_RANK` (64, numpy's limit), for every shape made;
* a node with more than ``max_outputs`` outputs (``split`` sections ...),
  before its output types are built;
* a computed tensor whose known size passes ``max_tensor_bytes`` (default
  2 GiB each; parameters and constants hold their bytes in the file and are not
  counted).  A dim that is symbolic (the batch size) is not known until data
  is fed: once the feeds bind it, before any kernel runs, the plan checks
  every result again with the real shapes (:mod:`graphengine.run_budget`,
  once per distinct feed-shape signature) and refuses one over the budget.

The bounded ``.npz`` reader (:mod:`graphengine.npz_files`) also caps what the
compressed members of one file may inflate to together (``max_inflated_bytes``,
16 GiB): each member under the per-array budget, a thousand of them would
still be a zip bomb.  Uncompressed members are bounded by the file's real size.

The ONNX importer also bounds import-time constant folding
(``max_fold_bytes``: a larger result stays a node of the graph) and the
inlining of model-local functions (``max_inlined_nodes``).

Every bound can be changed, for the whole process or within a block::

    ge.set_limits(max_tensor_bytes=8 * 2**30)
    with ge.using_limits(max_tensor_bytes=2**34):
        ge.run(graph, "huge", feeds)

The command line takes ``graphengine --max-tensor-bytes N COMMAND ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from .errors import ShapeError

#: The largest rank of any tensor, as numpy's (numpy >= 2).
MAX_RANK = 64


class Limits(NamedTuple):
    """The bounds in force (see the module docstring); all in bytes or counts.

    An immutable record (a named tuple: a dataclass would cost a millisecond of
    ``import graphengine``); change the bounds with :func:`set_limits`.
    """

    max_tensor_bytes: int = 2**31
    max_inflated_bytes: int = 2**34
    max_outputs: int = 4096
    max_fold_bytes: int = 64 * 2**20
    max_inlined_nodes: int = 500_000


_current = Limits()


def get_limits() -> Limits:
    """The bounds in force."""
    return _current


def set_limits(**changes: int) -> Limits:
    """Change bounds for the whole process; returns the previous :class:`Limits`.

    >>> import graphengine as ge
    >>> old = ge.set_limits(max_tensor_bytes=2**20)
    >>> ge.get_limits().max_tensor_bytes
    1048576
    >>> _ = ge.set_limits(**old._asdict())
    """
    global _current
    for name, value in changes.items():
        if name not in Limits._fields:
            known = ", ".join(sorted(Limits._fields))
            raise ValueError(f"unknown limit {name!r}; the limits are {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"limit {name} must be a positive int, got {value!r}")
    previous = _current
    _current = _current._replace(**changes)
    return previous


@contextlib.contextmanager
def using_limits(**changes: int) -> Iterator[Limits]:
    """Change bounds within a ``with`` block (:func:`set_limits`), restored after it."""
    previous = set_limits(**changes)
    try:
        yield _current
    finally:
        set_limits(**previous._asdict())


def check_output_count(count: int, where: str) -> None:
    """Refuse a node with more outputs than ``max_outputs``, before building them."""
    bound = _current.max_outputs
    if count > bound:
        raise ShapeError(
            f"{where}: would have {count} outputs, more than the limit of "
            f"{bound}; raise it with ge.set_limits(max_outputs=...) if you mean it"
        )


def check_rank(rank: int, where: str) -> None:
    if rank > MAX_RANK:
        raise ShapeError(
            f"{where}: a result of rank {rank}; at most {MAX_RANK} axes are "
            "supported (numpy's limit)"
        )


def check_result_size(shape: Sequence[Any], itemsize: int, where: str) -> None:
    """Refuse a result whose known size passes ``max_tensor_bytes``.

    Dims that are not known ints are skipped (checked again once data is fed).
    """
    nbytes = itemsize
    for d in shape:
        if isinstance(d, int):
            nbytes *= d
    if nbytes > _current.max_tensor_bytes and 0 not in shape:
        raise ShapeError(
            f"{where}: a result of shape {format_dims(shape)} would take "
            f"{nbytes:,} bytes, over the limit of "
            f"{_current.max_tensor_bytes:,} bytes per tensor; raise it with "
            "ge.set_limits(max_tensor_bytes=...) (or graphengine "
            "--max-tensor-bytes) if you mean it"
        )


def format_dims(shape: Sequence[Any], limit: int = 8) -> str:
    """A shape for a one-line message: at most ``limit`` dims, then a count."""
    dims = ["?" if d is None else str(d) for d in shape]
    if len(dims) > limit:
        dims = dims[:limit] + [f"... ({len(shape)} dims in all)"]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
