"""``graphengine run``: run a model file on arrays from .npy/.npz files.

    graphengine run model.pb --feed x=x.npy --fetch y
    graphengine run model.pb --feed x=data.npz:inputs --feed-npz rest.npz -o out.npz

Feeds: ``--feed NAME=FILE.npy``; ``--feed NAME=FILE.npz:ARRAY`` (one array of an
archive); ``--feed NAME=FILE.npz`` (its array called NAME); ``--feed-npz
FILE.npz`` feeds each array to the placeholder of the same name.  A ``--feed``
wins over ``--feed-npz`` for the same name.  Without ``--fetch`` the graph's
outputs are fetched.  Results are printed (small arrays whole, large ones as a
summary) or, with ``-o``, saved to an .npz file written atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FeedError, FileFormatError
from ..input_files import open_input
from ..npz_files import npz_names, read_npy, read_npz
from .main import CommandError

#: Arrays up to this many elements are printed whole.
PRINT_LIMIT = 1000


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a model file on data from .npy/.npz files",
        description="Run a model file: feed placeholders from .npy/.npz files, print the "
        "fetched tensors or save them to an .npz file.",
    )
    parser.add_argument("file", help="model file (.pb, or .pbtxt for text)")
    parser.add_argument(
        "--format", choices=("binary", "text"), help="file format (default: from the file name)"
    )
    add_feed_arguments(parser)
    parser.add_argument(
        "--fetch",
        action="append",
        default=[],
        metavar="NAME",
        help="tensor to compute ('node' or 'node:k'); repeatable; default: the graph's outputs",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.npz",
        help="save the results to this .npz file instead of printing them",
    )
    parser.set_defaults(func=run_run)


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--feed`` and ``--feed-npz``, shared by every command that runs a graph."""
    parser.add_argument(
        "--feed",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="feed placeholder NAME from FILE.npy, FILE.npz:ARRAY, or FILE.npz "
        "(its array NAME); repeatable",
    )
    parser.add_argument(
        "--feed-npz",
        action="append",
        default=[],
        metavar="FILE.npz",
        help="feed every array of FILE.npz to the placeholder of its name; repeatable",
    )


def run_run(args: argparse.Namespace) -> int:
    from ..executor import run
    from ..serialize import load

    graph = load(args.file, args.format)
    feeds = read_feeds(args.feed, args.feed_npz)
    fetches = args.fetch or graph.outputs
    if not fetches:
        raise CommandError(
            f"graph '{graph.name}' marks no outputs and every tensor is "
            "consumed; name the tensors to compute with --fetch NAME"
        )
    results = run(graph, list(fetches), feeds)
    if args.output:
        save_npz(args.output, results)
        print(f"wrote {args.output} ({len(results)} array(s))")
    else:
        print("\n".join(format_result(name, value) for name, value in results.items()))
    return 0


# -- feeds ------------------------------------------------------------------------


def read_feeds(feed_items: list[str], npz_files: list[str]) -> dict[str, np.ndarray]:
    """Arrays for ``--feed`` and ``--feed-npz`` arguments, by placeholder name.

    Raises CommandError for a malformed argument, FeedError for a missing file or
    array, FileFormatError for a file that is not a readable .npy/.npz.
    """
    feeds: dict[str, np.ndarray] = {}
    for path in npz_files:
        feeds.update(_read_npz(path, None, f"--feed-npz {path!r}"))
    for item in feed_items:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise CommandError(
                f"--feed {item!r}: expected NAME=FILE.npy, NAME=FILE.npz or NAME=FILE.npz:ARRAY"
            )
        feeds[name] = _read_feed(name, source, f"--feed {item!r}")
    return feeds


def _read_feed(name: str, source: str, what: str) -> np.ndarray:
    file, sep, array = source.rpartition(":")
    if sep and file.lower().endswith(".npz"):
        return _read_npz(file, array, what)[array]
    if source.lower().endswith(".npz"):
        return _read_npz(source, name, what)[name]
    return _load(source, what)


def _read_npz(path: str, member: str | None, what: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz archive, or only ``member``; FeedError if it is absent.

    Read by the bounded reader (graphengine.npz_files): headers checked against
    the bytes present, sizes against the limit, never a pickle.
    """
    _check_exists(path, what)
    arrays = read_npz(path, f"{what}: file", FileFormatError, only=member)
    if member is not None and member not in arrays:
        names = npz_names(path, f"{what}: file", FileFormatError)
        raise FeedError(
            f"{what}: '{path}' has no array {member!r}; it has "
            f"{', '.join(map(repr, names)) or 'none'}"
        )
    return arrays


def _load(path: str, what: str) -> Any:
    """One .npy array, or the arrays of an .npz; our errors, naming the file."""
    _check_exists(path, what)
    with open_input(path, f"{what}: file", FileFormatError) as f:
        magic = f.read(6)
    if magic.startswith(b"PK"):
        return read_npz(path, f"{what}: file", FileFormatError)
    if magic != b"\x93NUMPY":
        # np.load would take anything else for a pickle and say so, which misleads.
        raise FileFormatError(
            f"{what}: '{path}' is not a .npy or .npz file (it does not "
            "start with the NumPy or zip signature)"
        )
    return read_npy(path, f"{what}: file", FileFormatError)


def _check_exists(path: str, what: str) -> None:
    if not os.path.lexists(path):
        raise FeedError(f"{what}: file '{path}' does not exist")


# -- results ------------------------------------------------------------------------


def save_npz(path: str, results: dict[str, np.ndarray]) -> None:
    """Save fetched arrays to ``path`` (an .npz, keyed by tensor name) atomically."""
    from ..serialize import atomic_file

    with atomic_file(Path(path)) as out:
        np.savez(out, **results)


def format_result(name: str, value: np.ndarray) -> str:
    """``name: dtype(shape)`` and the values, or a summary for a large array."""
    value = np.asarray(value)
    header = f"{name}: {value.dtype.name}{value.shape}"
    if value.size <= PRINT_LIMIT:
        body = np.array2string(value, threshold=PRINT_LIMIT, max_line_width=100)
        return f"{header}\n{_indent(body)}"
    return f"{header}\n  {_statistics(value)}\n{_indent(np.array2string(value, edgeitems=2))}"


def _statistics(value: np.ndarray) -> str:
    if value.dtype == np.bool_:
        return f"{int(value.sum())} of {value.size} true"
    finite = value[np.isfinite(value)] if value.dtype.kind == "f" else value
    stats = (
        f"min {finite.min():.6g}, max {finite.max():.6g}, mean {finite.mean(dtype=np.float64):.6g}"
        if finite.size
        else "no finite values"
    )
    bad = value.size - finite.size
    return stats + (f", {bad} non-finite" if bad else "")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
