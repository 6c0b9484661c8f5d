"""Parameters in and out: ge.save / ge.load of 400 MB of float32 parameters against
np.save / np.savez / np.load of the same arrays, timed in the same process.

    python tools/bench_params.py [--mb 400] [--repeat 5] [--folder DIR]

ge.save writes every tensor over 1 MiB to the data file as raw bytes, straight
from the arrays (os.pwrite of memoryviews, in 4 MiB pieces, each checksummed
by the worker thread that writes it), and by default flushes both files to
disk (fdatasync) before the renames, starting each piece's write-out to disk
as soon as it is written.  The references: np.save of every array, one after
the other, into one file (raw bytes behind a small header: what the disk and
the page cache allow), and np.savez (a zip of .npy members), each timed
without and with an fsync at the end.  ge.save frees the data file it replaces
in a background thread; "ge.save (fsync) + freeing" also waits for that.
ge.load maps the data file copy-on-write: with verify_data=False nothing is
read (zero-copy); by default every tensor's crc32 is checked, in threads, which
reads every byte once.  Every run starts after gc.collect() and os.sync() (not
timed), and after any background freeing has ended, so none waits for
another's work.  Medians
of ``--repeat`` interleaved runs; the folder should be on the disk models live
on (default: a temporary folder beside this repository).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import graphengine as ge
from graphengine import serialize


def _graph(megabytes: int) -> ge.Graph:
    g = ge.Graph("params")
    rng = np.random.default_rng(0)
    total = None
    per = 2**20  # 4 MiB float32 tensors
    for i in range(megabytes * 2**20 // (4 * per)):
        w = g.parameter(f"layer{i}/w", rng.standard_normal(per, dtype=np.float32))
        total = ge.sum(w) if total is None else total + ge.sum(w)
    g.mark_output(total)
    return g


def _timed(fn) -> float:
    # Each run starts with no dirty pages, no file being freed and no graph of an
    # earlier ge.load still mapping its data file (a Graph is freed by the cycle
    # collector): a run must not pay for what an earlier run left behind.
    gc.collect()
    serialize.wait_for_removals()
    if hasattr(os, "sync"):
        os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _np_save(path: Path, arrays: dict, sync: bool) -> None:
    """Every array with np.save, one after the other, into one file."""
    with open(path, "wb") as f:
        for array in arrays.values():
            np.save(f, array)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _np_savez(path: Path, arrays: dict, sync: bool) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _ge_save_and_free(graph: ge.Graph, path: Path) -> None:
    ge.save(graph, path)
    serialize.wait_for_removals()


def _np_load(path: Path) -> dict:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _np_load_all(path: Path, count: int) -> list:
    """The arrays of a file written by _np_save, one np.load after the other."""
    with open(path, "rb") as f:
        return [np.load(f) for _ in range(count)]


def _touch(graph: ge.Graph) -> float:
    return float(sum(float(v[::1024].sum()) for v in graph.values.values()))


#: (ours, reference) pairs whose time ratio is printed.
_RATIOS = [
    ("ge.save (fsync)", "np.save + fsync"),
    ("ge.save (fsync) + freeing", "np.save + fsync"),
    ("ge.save (fsync)", "np.savez + fsync"),
    ("ge.save (fsync)", "np.save"),
    ("ge.save (sync=False)", "np.save"),
    ("ge.save (sync=False)", "np.savez"),
    ("ge.load (crc32 checked)", "np.load (.npy)"),
    ("ge.load (crc32 checked)", "np.load (.npz)"),
    ("ge.load (verify_data=False)", "np.load (.npy)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    base = Path(args.folder) if args.folder else Path(__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix=".bench_params.", dir=base))
    try:
        graph = _graph(args.mb)
        arrays = {k.replace("/", "_"): v for k, v in graph.values.items()}
        nbytes = sum(v.nbytes for v in arrays.values())
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            runs = {
                "ge.save (fsync)": lambda: ge.save(graph, folder / "m.pb"),
                "ge.save (fsync) + freeing": lambda: _ge_save_and_free(graph, folder / "m.pb"),
                "np.save + fsync": lambda: _np_save(folder / "ref.npy", arrays, True),
                "np.savez + fsync": lambda: _np_savez(folder / "ref.npz", arrays, True),
                "ge.save (sync=False)": lambda: ge.save(graph, folder / "m2.pb", sync=False),
                "np.save": lambda: _np_save(folder / "ref.npy", arrays, False),
                "np.savez": lambda: _np_savez(folder / "ref.npz", arrays, False),
                "ge.load (crc32 checked)": lambda: ge.load(folder / "m.pb"),
                "ge.load (verify_data=False)": lambda: ge.load(folder / "m.pb", verify_data=False),
                "np.load (.npz)": lambda: _np_load(folder / "ref.npz"),
                "np.load (.npy)": lambda: _np_load_all(folder / "ref.npy", len(arrays)),
            }
            for name, fn in runs.items():
                times.setdefault(name, []).append(_timed(fn))
        median = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{nbytes / 1e6:.0f} MB of float32 parameters "
            f"({len(arrays)} tensors), medians of {args.repeat}:"
        )
        for name, seconds in median.items():
            print(f"  {name:30s} {seconds * 1e3:8.1f} ms  {nbytes / seconds / 1e9:6.2f} GB/s")
        print("time ratios (< 1 is faster than the reference):")
        for name, ref in _RATIOS:
            print(f"  {name} / {ref} = {median[name] / median[ref]:.3f}")
        mapped = ge.load(folder / "m.pb", verify_data=False)
        assert not next(iter(mapped.values.values())).flags.owndata
        _touch(mapped)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
