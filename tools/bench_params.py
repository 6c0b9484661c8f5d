"""Parameters in and out: ge.save / ge.load of 400 MB of float32 parameters against
np.save / np.load of the same arrays, timed in the same process, under the same
conditions.

    python tools/bench_params.py [--mb 400] [--repeat 5] [--settle 3] [--folder DIR]

The reference, np.save of every array one after the other into one file, is raw
bytes behind a small header: what the disk and the page cache allow.  Each
save is timed in two situations, each variant with its own target file:

* **over an existing file** (what the trainer's checkpoints do): the target
  holds a file of the same size, written in the previous round and loaded
  since, so in the page cache (an untimed first round writes and loads
  them).  np.save truncates it and writes in place; ge.save writes a new data
  file beside it and renames (the old model stays loadable until the switch),
  and frees the old one.  (A ge.save over a file that is not in the cache
  writes around it, as a first save does.)
* **into a fresh target** (a model saved for the first time): the target's
  files are deleted, untimed, then ``--settle`` seconds pass, so that no
  variant writes into memory that the deletion has just freed (in a virtual
  machine that hands free memory back to its host, such memory is 10x cheaper
  to write than memory free for a second or more).

Each save runs with an fsync (ge.save's default, which also fdatasyncs the
model file and syncs the folder; the reference fsyncs its file) and without
(``ge.save(sync=False)`` against a plain np.save).  A ge.save is timed until
the background freeing of the files it replaced has ended, so none of its
work is left for the next run.  Loads, after the round's saves, read the models
of the saves with an fsync:

* ge.load with every tensor's crc32 checked (threads) **after a first save**
  (the "fresh" model: a large first save writes around the page cache,
  O_DIRECT, so this load reads the disk) and **after a save over** (the
  "over" model: that save went through the cache, reusing the pages of the
  cached file it replaced);
* ge.load(verify_data=False) of the "over" model: maps the data file, reads
  nothing;
* np.load of every array of the "over" .npy, **from disk** (its cached pages
  dropped first, untimed, with posix_fadvise: the reference for a load after a
  first save) and **cached** (the reference for the others).

The disk's own ceiling for a first save with an fsync is timed beside them, as a
fresh save: the same number of bytes, already in aligned memory, written with
O_DIRECT by 4 threads and fdatasync'd (no copy, no checksum, no page cache).  A
first save cannot beat it; the ratio of the two says how close it comes.

Before every timed run, untimed: gc.collect() (a Graph of an earlier load
unmaps its data file), the end of any background freeing, and os.sync(), so
no run writes back the dirty pages of another.  Within each ge/np pair the
order alternates from round to round.  Medians of ``--repeat`` rounds; the
folder should be on the disk models live on (default: a temporary folder
beside this repository).
"""

from __future__ import annotations

import argparse
import gc
import mmap
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import graphengine as ge
from graphengine import serialize
from graphengine.serialize.cleanup import drop_cached_pages


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


def _settle() -> None:
    # No dirty pages, no file being freed and no graph of an earlier ge.load still
    # mapping its data file (a Graph is freed by the cycle collector): a run must
    # not pay for what an earlier run left behind.
    gc.collect()
    serialize.wait_for_removals()
    if hasattr(os, "sync"):
        os.sync()


def _timed(fn: Callable[[], object]) -> float:
    _settle()
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


def _ge_save(graph: ge.Graph, path: Path, sync: bool) -> None:
    ge.save(graph, path, sync=sync)
    serialize.wait_for_removals()  # the freeing of the replaced data file counts


def _np_load_all(path: Path, count: int) -> list:
    """The arrays of a file written by _np_save, one np.load after the other."""
    with open(path, "rb") as f:
        return [np.load(f) for _ in range(count)]


def _remove_outputs(path: Path) -> None:
    """Delete ``path`` and, for a model, its data files."""
    for old in path.parent.glob(path.name + "*"):  # the names hold no glob characters
        old.unlink()


def _disk_write(path: Path, buffer: mmap.mmap, threads: int = 4, chunk: int = 2**22) -> None:
    """The disk's own speed for making these bytes durable: the prepared, aligned
    ``buffer`` written with O_DIRECT into a new file by ``threads`` threads in
    ``chunk``-byte writes, then fdatasync.  No copy, no checksum, no page cache: a
    ceiling for a first save with an fsync, which must copy the arrays and checksum
    them too.  (Measured on this VM with fio, queue depth 1-64 and blocks of 256 KiB
    to 4 MiB, the same disk wrote 1.1-1.6 GB/s: more requests in flight do not
    lift it.)"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        view = memoryview(buffer)

        def every_nth(first: int) -> None:
            for offset in range(first * chunk, len(view), threads * chunk):
                os.pwrite(fd, view[offset : offset + chunk], offset)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(every_nth, range(threads)))
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _nothing() -> None:
    pass


def _touch(graph: ge.Graph) -> float:
    return float(sum(float(v[::1024].sum()) for v in graph.values.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds between deleting and a fresh save"
    )
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    base = Path(args.folder) if args.folder else Path(__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix=".bench_params.", dir=base))
    try:
        graph = _graph(args.mb)
        arrays = {k.replace("/", "_"): v for k, v in graph.values.items()}
        nbytes = sum(v.nbytes for v in arrays.values())

        def saves(sync: bool, tag: str) -> list[tuple[str, Path, Callable[[Path], None]]]:
            suffix = "fsync" if sync else "no sync"
            np_name = "np.save + fsync" if sync else "np.save"
            return [
                (f"ge.save ({suffix}) {tag}", folder / f"{tag}-{sync}.pb",
                 lambda p: _ge_save(graph, p, sync)),
                (f"{np_name} {tag}", folder / f"{tag}-{sync}.npy",
                 lambda p: _np_save(p, arrays, sync)),
            ]  # fmt: skip

        pairs = [saves(True, "over"), saves(False, "over"), saves(True, "fresh")]
        pairs.append(saves(False, "fresh"))
        # The disk's ceiling for a first save with an fsync, timed as a fresh save.
        ceiling: list[tuple[str, Path, Callable[[Path], None]]] = []
        if hasattr(os, "O_DIRECT"):
            # As many bytes, rounded up to the 4 KiB O_DIRECT needs, in page-aligned
            # memory written before any timing.
            aligned = mmap.mmap(-1, -(-nbytes // 4096) * 4096)
            aligned.write(b"\1" * len(aligned))
            ceiling.append(
                ("disk: O_DIRECT + fdatasync fresh", folder / "disk.raw",
                 lambda p: _disk_write(p, aligned))
            )  # fmt: skip
        over_model, over_npy = pairs[0][0][1], pairs[0][1][1]
        first_model = pairs[2][0][1]
        # name -> (untimed preparation, timed load)
        loads: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "ge.load (crc32) after first save": (_nothing, lambda: ge.load(first_model)),
            "ge.load (crc32) after save over": (_nothing, lambda: ge.load(over_model)),
            "ge.load (verify_data=False)": (
                _nothing,
                lambda: ge.load(over_model, verify_data=False),
            ),
            "np.load (.npy) from disk": (
                lambda: drop_cached_pages([over_npy]),
                lambda: _np_load_all(over_npy, len(arrays)),
            ),
            "np.load (.npy) cached": (_nothing, lambda: _np_load_all(over_npy, len(arrays))),
        }
        for pair in pairs[:2]:  # the files the first round's "over" saves replace
            for _, path, save in pair:
                save(path)
        ge.load(over_model)  # cached, as the loads leave it for the later rounds
        times: dict[str, list[float]] = {}
        for round_ in range(args.repeat):
            for pair in [*pairs, ceiling]:
                for name, path, save in pair if round_ % 2 == 0 else pair[::-1]:
                    if "fresh" in name:
                        _remove_outputs(path)
                        _settle()
                        time.sleep(args.settle)
                    times.setdefault(name, []).append(_timed(lambda: save(path)))  # noqa: B023
            for name, (prepare, load) in loads.items():
                prepare()
                times.setdefault(name, []).append(_timed(load))
        median = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{nbytes / 1e6:.0f} MB of float32 parameters ({len(arrays)} tensors), "
            f"medians of {args.repeat} rounds, load {os.getloadavg()[0]:.1f}:"
        )
        for name, seconds in median.items():
            print(f"  {name:32s} {seconds * 1e3:8.1f} ms  {nbytes / seconds / 1e9:6.2f} GB/s")
        print("time ratios (< 1 is faster than the reference):")
        for pair in pairs:
            (ours, _, _), (ref, _, _) = pair
            print(f"  {ours} / {ref} = {median[ours] / median[ref]:.3f}")
        for ours, ref in [
            *[("ge.save (fsync) fresh", name) for name, _, _ in ceiling],
            ("ge.load (crc32) after first save", "np.load (.npy) from disk"),
            ("ge.load (crc32) after save over", "np.load (.npy) cached"),
            ("ge.load (verify_data=False)", "np.load (.npy) cached"),
        ]:
            print(f"  {ours} / {ref} = {median[ours] / median[ref]:.3f}")
        mapped = ge.load(over_model, verify_data=False)
        assert not next(iter(mapped.values.values())).flags.owndata
        _touch(mapped)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
