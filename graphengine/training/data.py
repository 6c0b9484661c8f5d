"""Training data: ``.npz`` files, their check against placeholders, and batches.

A data set is a set of arrays with one example per row (axis 0), one array per
placeholder.  Arrays are found through a mapping ``{placeholder: array}``
(the spec's ``data_map``, ``--map x=images`` on the command line), or by the
placeholder's own name when the mapping names none or the data lack the
mapped array (so a dict keyed by placeholder names always fits).
Every array is checked against its placeholder before training starts: dtype
(equal, or cast from a dtype that converts exactly, such as uint8 to float32),
rank, every fixed dim after the first, and one example count for all arrays.

Batches follow a fresh permutation each epoch, drawn from
``numpy.random.default_rng([seed, epoch])``: the order depends only on the seed
and the epoch, so a resumed run sees the same batches.

**The last partial batch.**  When the example count is not a multiple of the
batch size, the last batch of an epoch is smaller (``drop_last=False``, the
default: every example is seen once per epoch), or is left out
(``drop_last=True``: every step sees exactly ``batch_size`` examples, and the
left-out examples differ from epoch to epoch).  A placeholder with a fixed
batch dim takes only full batches, so there the partial batch is always dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import TrainingError
from ..graph import Node
from ..npz_files import read_npz
from ..shapes import format_shape, match_dims


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read by the bounded reader
    (:mod:`graphengine.npz_files`: no unpickling, no allocation beyond what the
    file really holds or the size limit).

    Raises TrainingError when the file is missing, not a regular file, not an
    npz file, damaged or truncated, or holds object arrays.
    """
    return read_npz(path, "data file", TrainingError)


@dataclass
class Dataset:
    """Arrays checked against placeholders, by placeholder name; one row per example."""

    arrays: dict[str, np.ndarray]
    size: int
    source: str = "data"
    _fingerprint: str = field(default="", repr=False, compare=False)

    def fingerprint(self) -> str:
        """A short hash of the arrays (names, dtypes, shapes, bytes), kept in checkpoints;
        computed once."""
        if self._fingerprint:
            return self._fingerprint
        h = hashlib.sha256()
        for name in sorted(self.arrays):
            array = np.ascontiguousarray(self.arrays[name])
            h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            h.update(memoryview(array).cast("B"))
        self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def bind_data(
    arrays: Mapping[str, np.ndarray],
    placeholders: Sequence[Node],
    mapping: Mapping[str, str] | None = None,
    source: str = "data",
) -> Dataset:
    """Match ``arrays`` to ``placeholders`` and check them; TrainingError names the
    array and the placeholder of the first mismatch.

    >>> import graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> bind_data({"x": np.zeros((5, 2), np.float32)}, g.placeholders()).size
    5
    """
    mapping = dict(mapping or {})
    names = {n.name for n in placeholders}
    for ph in mapping:
        if ph not in names:
            raise TrainingError(
                f"--map {ph}={mapping[ph]}: the graph has no placeholder "
                f"{ph!r} that training feeds; those are "
                f"{', '.join(sorted(names)) or 'none'}"
            )
    bound: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[int, str]] = {}
    size_of: tuple[int, str] | None = None
    for node in placeholders:
        array_name = mapping.get(node.name, node.name)
        if array_name not in arrays and node.name in arrays:
            array_name = node.name  # arrays named as the placeholders always fit
        if array_name not in arrays:
            tried = " or ".join(dict.fromkeys(repr(n) for n in (array_name, node.name)))
            raise TrainingError(
                f"{source} has no array {tried} for placeholder '{node.name}' "
                f"{node.types[0]}; its arrays are {', '.join(sorted(arrays)) or 'none'}. "
                f"Rename the array, or map it with --map {node.name}=ARRAY"
            )
        array = _fit(np.asarray(arrays[array_name]), array_name, node, source, dims)
        if size_of is not None and array.shape[0] != size_of[0]:
            raise TrainingError(
                f"{source}: array {array_name!r} (placeholder '{node.name}') "
                f"has {array.shape[0]} examples, array {size_of[1]!r} has "
                f"{size_of[0]}; every array needs one row per example"
            )
        size_of = size_of or (array.shape[0], array_name)
        bound[node.name] = array
    if size_of is None:
        raise TrainingError(
            "the loss depends on no placeholder, so there is nothing to feed from the data"
        )
    if size_of[0] == 0:
        raise TrainingError(f"{source} has no examples (array {size_of[1]!r} is empty)")
    return Dataset(bound, size_of[0], source)


def _fit(
    array: np.ndarray, array_name: str, node: Node, source: str, dims: dict[str, tuple[int, str]]
) -> np.ndarray:
    declared = node.types[0]
    where = f"{source}: array {array_name!r} for placeholder '{node.name}'"
    if array.dtype != declared.dtype:
        if array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, declared.dtype, "safe"):
            raise TrainingError(
                f"{where} has dtype {array.dtype}, the placeholder is "
                f"{declared.dtype.name}, and {array.dtype} does not convert "
                f"to it exactly; store it as {declared.dtype.name}"
            )
        array = array.astype(declared.dtype)
    if array.ndim != len(declared.shape) or array.ndim == 0:
        raise TrainingError(
            f"{where} has shape {array.shape}, the placeholder has shape "
            f"{format_shape(declared.shape)}: ranks differ (the data needs "
            "the placeholder's rank, with examples along axis 0)"
        )
    # Axis 0 holds the examples; batches are checked against it when fed.
    bad = match_dims(declared.shape, array.shape, array_name, dims, first_axis=1)
    if bad is not None and bad.bound_by:
        raise TrainingError(
            f"{where} has {bad.expected}={bad.size} on axis {bad.axis}, but "
            f"array {bad.bound_by!r} has {bad.expected}={bad.bound_size}"
        )
    if bad is not None:
        raise TrainingError(
            f"{where} has shape {array.shape}, the placeholder needs "
            f"{format_shape(declared.shape)}: axis {bad.axis} is {bad.size}, "
            f"expected {bad.expected}"
        )
    return np.ascontiguousarray(array)


#: What training and evaluation accept as data: an .npz path, a dict of arrays, a Dataset.
DataLike = str | os.PathLike | Mapping[str, np.ndarray] | Dataset


def as_dataset(
    data: DataLike,
    placeholders: Sequence[Node],
    mapping: Mapping[str, str] | None = None,
    what: str = "data",
) -> Dataset:
    """Load ``data`` if it is a path, and check it against ``placeholders``
    (:func:`bind_data`); ``what`` names it in messages ("training data" ...)."""
    if isinstance(data, Dataset):
        arrays, source = data.arrays, data.source
    elif isinstance(data, Mapping):
        arrays, source = data, what
    else:
        arrays, source = load_npz(data), f"{what} '{data}'"
    return bind_data(arrays, placeholders, mapping, source)


def fixed_batch_size(placeholders: Sequence[Node]) -> int | None:
    """The batch size a placeholder fixes on axis 0, or None when all leave it free."""
    sizes = {
        n.types[0].shape[0]
        for n in placeholders
        if n.types[0].shape and isinstance(n.types[0].shape[0], int)
    }
    if len(sizes) > 1:
        raise TrainingError(
            "placeholders fix different batch sizes on axis 0: "
            + ", ".join(f"'{n.name}' {format_shape(n.types[0].shape)}" for n in placeholders)
        )
    return sizes.pop() if sizes else None


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The example order of ``epoch`` (0-based): a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def batch_bounds(
    size: int, batch_size: int, drop_last: bool, position: int = 0
) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch of ``size`` examples, from example
    ``position`` on (a resumed run starts mid-epoch).

    >>> batch_bounds(5, 2, drop_last=False)
    [(0, 2), (2, 4), (4, 5)]
    >>> batch_bounds(5, 2, drop_last=True)
    [(0, 2), (2, 4)]
    >>> batch_bounds(5, 2, drop_last=False, position=2)
    [(2, 4), (4, 5)]
    """
    stop = position + (size - position) // batch_size * batch_size if drop_last else size
    return [(start, min(start + batch_size, stop)) for start in range(position, stop, batch_size)]


class BatchFeeder:
    """Gathers batches of a data set into buffers reused from step to step."""

    def __init__(self, data: Dataset, batch_size: int) -> None:
        self.data = data
        # No batch holds more than every example: a batch size of 10**9 on 200
        # examples needs buffers of 200 rows.
        batch_size = min(batch_size, data.size)
        self._full = {
            name: np.empty((batch_size, *a.shape[1:]), a.dtype) for name, a in data.arrays.items()
        }

    def feeds(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of examples ``indices``.  Full batches share buffers: a feed is
        valid until the next call."""
        feeds = {}
        for name, array in self.data.arrays.items():
            buffer = self._full[name]
            if len(indices) == len(buffer):
                # mode="clip": the default "raise" would gather into a temporary
                # first; indices come from a permutation, so they are in range.
                feeds[name] = np.take(array, indices, axis=0, out=buffer, mode="clip")
            else:
                feeds[name] = np.take(array, indices, axis=0)
        return feeds


def iterate(
    data: Dataset, batch_size: int, *, drop_last: bool = False, order: np.ndarray | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``data`` in ``order`` (default: as stored), for evaluation."""
    order = np.arange(data.size) if order is None else order
    feeder = BatchFeeder(data, batch_size)
    for start, stop in batch_bounds(data.size, batch_size, drop_last):
        yield feeder.feeds(order[start:stop])
