"""Parameters in and out: ge.save / ge.load of 400 MB of float32 parameters against
np.savez / np.load of the same arrays, timed in the same process.

    python tools/bench_params.py [--mb 400] [--repeat 3] [--folder DIR]

ge.save writes every tensor over 1 MiB to the data file as raw bytes, straight
from the arrays (os.pwrite of memoryviews), with the CRC-32s computed in worker
threads meanwhile, and by default flushes both files to disk (fsync) before the
renames; np.savez does not fsync.  Both are timed both ways: ge.save(...,
sync=False) against np.savez, ge.save against np.savez followed by fsync.
ge.load maps the data file copy-on-write: with verify_data=False nothing is
read (zero-copy); by default every tensor's crc32 is checked, in threads, which
reads every byte once.  Every run starts after os.sync() (not timed), so
none waits for the write-back of another's dirty pages.  Medians of ``--repeat`` interleaved
runs; the folder should be on the disk models live on (default: a temporary
folder beside this repository).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import graphengine as ge


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
    # Each run starts with no dirty pages: a run that flushes to disk must not
    # wait for what an earlier run left for the kernel to write back.
    if hasattr(os, "sync"):
        os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _np_save_fsync(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _np_load(path: Path) -> dict:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _touch(graph: ge.Graph) -> float:
    return float(sum(float(v[::1024].sum()) for v in graph.values.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
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
                "np.savez + fsync": lambda: _np_save_fsync(folder / "ref2.npz", arrays),
                "ge.save (sync=False)": lambda: ge.save(graph, folder / "m2.pb", sync=False),
                "np.savez": lambda: np.savez(folder / "ref.npz", **arrays),
                "ge.load (crc32 checked)": lambda: ge.load(folder / "m.pb"),
                "ge.load (verify_data=False)": lambda: ge.load(folder / "m.pb", verify_data=False),
                "np.load": lambda: _np_load(folder / "ref.npz"),
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
        print(
            "save (time ratios, < 1 is faster): ge.save / (np.savez + fsync) = "
            f"{median['ge.save (fsync)'] / median['np.savez + fsync']:.2f}, "
            "ge.save(sync=False) / np.savez = "
            f"{median['ge.save (sync=False)'] / median['np.savez']:.2f}"
        )
        print(
            f"load: ge.load / np.load = "
            f"{median['ge.load (crc32 checked)'] / median['np.load']:.2f} checked, "
            f"{median['ge.load (verify_data=False)'] / median['np.load']:.3f} zero-copy"
        )
        mapped = ge.load(folder / "m.pb", verify_data=False)
        assert not next(iter(mapped.values.values())).flags.owndata
        _touch(mapped)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
