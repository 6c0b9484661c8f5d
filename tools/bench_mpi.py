"""Data-parallel training over MPI: steps per second and scaling efficiency for
1 and 2 processes, and the allreduce of the plan against a raw mpi4py Allreduce.

Two models, each trained with Adam on the same global batch in one and in two
processes (``mpiexec -n K``, 1 BLAS/OpenMP thread each):

* ``mlp784``: 784-1024-1024-10 ReLU MLP, batch 256 (1.86 M parameters, 7.5 MB of
  gradients per step): compute-heavy;
* ``digits``: 64-128-64-10 MLP, batch 32 (17 K parameters): per-op overhead
  dominates.

Steps per second are measured over the second epoch (the first warms up);
scaling efficiency is ``(steps/s with K) / (K * steps/s with 1)``, since each
step of either run trains on the same global batch.  The two-process runs also
report the time spent in the fused allreduce per step (the communicator's own
timer).

Then, in the same two-process job, for buffers of 4 KB to 64 MB: the time of
running a compiled plan holding one ``allreduce`` node on a fed buffer, against
``comm.Allreduce`` of the same buffer by mpi4py directly, with the bandwidth
(buffer bytes / time) of each and their ratio.

Run it:  python tools/bench_mpi.py [--models mlp784 digits] [--repeat 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = {"mlp784": ((784, 1024, 1024, 10), 256, 4096), "digits": ((64, 128, 64, 10), 32, 1024)}


def build(sizes: tuple[int, ...], batch: int):
    import graphengine as ge

    g = ge.Graph("bench_mpi")
    h = g.placeholder("x", (None, sizes[0]))
    labels = g.placeholder("y", (None,), "int64")
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        with g.name_scope(f"layer{i}"):
            w = g.parameter("w", shape=(fan_in, fan_out), init="he_normal")
            b = g.parameter("b", np.zeros(fan_out, np.float32))
            h = ge.matmul(h, w) + b
            if i < len(sizes) - 2:
                h = ge.relu(h)
    loss = ge.softmax_cross_entropy(h, labels, name="loss")
    g.set_training(loss, optimizer="adam", learning_rate=1e-3, batch_size=batch, epochs=2, seed=0)
    return g


def data(sizes: tuple[int, ...], examples: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(examples, sizes[0])).astype(np.float32),
        "y": rng.integers(0, sizes[-1], examples).astype(np.int64),
    }


# -- inside the MPI job -------------------------------------------------------------------


def worker(model: str, sweep: bool, repeat: int) -> None:
    import graphengine as ge
    from graphengine.executor import compile_plan
    from graphengine.mpi import world
    from graphengine.training import Trainer
    from graphengine.training.distributed import from_launcher

    sizes, batch, examples = MODELS[model]
    parallel = from_launcher()
    comm = world()
    trainer = Trainer(build(sizes, batch), data(sizes, examples), progress=False, parallel=parallel)
    if comm is not None:
        comm.reset_stats()
    result = trainer.fit()
    seconds = result.history[-1]["seconds"]
    steps = trainer.steps_per_epoch
    report = {
        "model": model,
        "processes": comm.size if comm else 1,
        "steps_per_second": steps / seconds,
    }
    if comm is not None and comm.size > 1:
        report["allreduce_ms_per_step"] = 1e3 * comm.seconds / result.steps
        report["allreduce_bytes"] = comm.bytes // max(comm.calls, 1)
    if comm is None or comm.rank == 0:
        print(json.dumps(report), flush=True)
    if not sweep or comm is None or comm.size < 2:
        return
    mpi = comm._mpi
    for nbytes in [4 << 10, 64 << 10, 1 << 20, 8 << 20, 64 << 20]:
        g = ge.Graph("allreduce")
        x = g.placeholder("x", (nbytes // 4,))
        plan = compile_plan(g, [ge.allreduce(x).name], ["x"])
        buffer = np.random.default_rng(comm.rank).random(nbytes // 4).astype(np.float32)
        out = np.empty_like(buffer)
        reps = max(3, min(repeat, int(200e6 // nbytes)))
        times = {"plan": [], "raw": []}
        for _ in range(reps):  # interleaved, so a busy machine slows both alike
            comm.barrier()
            start = time.perf_counter()
            plan.run({"x": buffer})
            times["plan"].append(time.perf_counter() - start)
            comm.barrier()
            start = time.perf_counter()
            comm.comm.Allreduce(buffer, out, op=mpi.SUM)
            times["raw"].append(time.perf_counter() - start)
        plan_s, raw_s = np.median(times["plan"]), np.median(times["raw"])
        if comm.rank == 0:
            print(
                json.dumps(
                    {
                        "bytes": nbytes,
                        "plan_ms": 1e3 * plan_s,
                        "raw_ms": 1e3 * raw_s,
                        "plan_gb_s": nbytes / plan_s / 1e9,
                        "raw_gb_s": nbytes / raw_s / 1e9,
                    }
                ),
                flush=True,
            )


# -- the driver ---------------------------------------------------------------------------


def run_job(processes: int, model: str, sweep: bool, repeat: int) -> list[dict]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
    mpiexec = pathlib.Path(sys.executable).with_name("mpiexec")
    command = [
        str(mpiexec),
        "-n",
        str(processes),
        sys.executable,
        __file__,
        "--worker",
        model,
        "--repeat",
        str(repeat),
    ] + (["--sweep"] if sweep else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.sweep, args.repeat)
        return
    print(
        f"{'model':8} {'1 process':>12} {'2 processes':>12} {'speed-up':>9} "
        f"{'efficiency':>10} {'allreduce/step':>15}"
    )
    sweep = []
    for i, model in enumerate(args.models):
        one = run_job(1, model, False, args.repeat)[0]
        rows = run_job(2, model, i == 0, args.repeat)
        two, sweep = rows[0], sweep or rows[1:]
        speedup = two["steps_per_second"] / one["steps_per_second"]
        print(
            f"{model:8} {one['steps_per_second']:9.1f}/s {two['steps_per_second']:9.1f}/s "
            f"{speedup:8.2f}x {speedup / 2:9.0%} "
            f"{two['allreduce_ms_per_step']:8.2f} ms of "
            f"{two['allreduce_bytes'] / 1e6:.2f} MB"
        )
    print("\nallreduce over 2 processes: a plan's allreduce node against mpi4py's Allreduce")
    print(f"{'bytes':>10} {'plan':>10} {'raw':>10} {'plan GB/s':>10} {'raw GB/s':>9} {'ratio':>6}")
    for row in sweep:
        print(
            f"{row['bytes']:>10,} {row['plan_ms']:8.3f}ms {row['raw_ms']:8.3f}ms "
            f"{row['plan_gb_s']:10.2f} {row['raw_gb_s']:9.2f} "
            f"{row['plan_ms'] / row['raw_ms']:6.2f}"
        )


if __name__ == "__main__":
    main()
