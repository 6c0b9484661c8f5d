"""Data-parallel training under a real launcher (``mpiexec -n 2`` on loopback):
two processes against one, for an MLP and a CNN with batch norm; checkpoints
resumed on another number of processes; a killed process; the metrics; the
checks that every process runs the same job; and the data-parallel gradient
graph itself (saved, drawn, run on one process).

Equivalence bounds (stated in the README): with float64, K=2 and the same
global batch, parameters after training agree with the single-process run to
rtol 1e-12; with float32 to rtol 1e-4 after 30 steps (each step's gradient
differs by summation order only, a few float32 ulps, which training amplifies
no more than it amplifies any rounding).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.gradcheck import to_float64
from graphengine.training.checkpoint import list_checkpoints, read_checkpoint
from graphengine.training.distributed import data_parallel_gradients

from ..train_models import classifier, classifier_data

pytest.importorskip("mpi4py", reason="the [mpi] extra is not installed")
MPIEXEC = Path(sys.executable).with_name("mpiexec")
if not MPIEXEC.exists():
    pytest.skip("no mpiexec beside this Python (the mpich wheel)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240


# -- models and helpers -------------------------------------------------------------------


def mlp64() -> ge.Graph:
    """The shared classifier (no dropout) in float64, with its training spec."""
    g = to_float64(classifier(dropout=0.0, name="mlp"))
    g.set_training(
        "loss",
        metrics=["loss", "accuracy"],
        optimizer="adam",
        learning_rate=0.02,
        batch_size=16,
        epochs=3,
        seed=7,
    )
    return g


def cnn(dtype: str = "float64") -> ge.Graph:
    """conv 3x3 (4 channels) -> batch_norm -> relu -> 2x2 max pool -> dense -> 3 logits."""
    g = ge.Graph("cnn")
    x = g.placeholder("x", (None, 1, 6, 6), dtype)
    y = g.placeholder("y", (None,), "int64")
    rng = np.random.default_rng(3)
    w = g.parameter("conv/w", rng.normal(0, 0.5, (4, 1, 3, 3)).astype(dtype))
    h = ge.conv2d(x, w, padding=1)
    c = 4
    gamma = g.parameter("bn/gamma", np.ones(c, dtype))
    beta = g.parameter("bn/beta", np.zeros(c, dtype))
    mean = g.parameter("bn/running_mean", np.zeros(c, dtype), trainable=False)
    var = g.parameter("bn/running_var", np.ones(c, dtype), trainable=False)
    h = ge.batch_norm(h, gamma, beta, mean, var, momentum=0.8, name="bn/batch_norm")
    h = ge.max_pool2d(ge.relu(h), 2, 2)
    h = ge.reshape(h, (-1, c * 9))
    dense = g.parameter("out/w", rng.normal(0, 0.3, (c * 9, 3)).astype(dtype))
    bias = g.parameter("out/b", np.zeros(3, dtype))
    loss = ge.softmax_cross_entropy(ge.matmul(h, dense) + bias, y, name="loss")
    g.set_training(
        loss,
        metrics=["loss", "accuracy"],
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        batch_size=12,
        epochs=2,
        seed=5,
    )
    return g


def cnn_data(n: int, dtype: str = "float64", seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 6, 6)).astype(dtype)
    quadrant = np.stack(
        [x[:, 0, :3, :3].sum((1, 2)), x[:, 0, 3:, 3:].sum((1, 2)), x[:, 0, :3, 3:].sum((1, 2))],
        axis=1,
    )
    return {"x": x, "y": np.argmax(quadrant, axis=1).astype(np.int64)}


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    return env


def graphengine(*args, workers: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """``graphengine ARGS`` in a fresh process, under ``mpiexec -n workers`` when > 1."""
    prefix = [str(MPIEXEC), "-n", str(workers)] if workers > 1 else []
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "graphengine", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=TIMEOUT,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def mlp_files(tmp_path):
    mlp64().save(tmp_path / "model.pb")
    np.savez(
        tmp_path / "train.npz",
        **{
            k: v.astype(np.float64) if v.dtype.kind == "f" else v
            for k, v in classifier_data(150).items()
        },
    )
    np.savez(
        tmp_path / "val.npz",
        **{
            k: v.astype(np.float64) if v.dtype.kind == "f" else v
            for k, v in classifier_data(45, seed=1).items()
        },
    )
    return tmp_path


def trained(path: Path) -> dict[str, np.ndarray]:
    return dict(ge.load(path).values)


def assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        scale = max(float(np.max(np.abs(a[name]))), 1e-30)
        error = float(np.max(np.abs(a[name] - b[name]))) / scale
        assert error <= rtol, f"parameter {name}: relative difference {error:.3g} > {rtol}"


# -- equivalence ----------------------------------------------------------------------------


@pytest.mark.slow
def test_mlp_two_processes_match_one_float64(mlp_files):
    """150 examples in batches of 16: the last batch (6) splits 3 + 3, every other 8 + 8."""
    f = mlp_files
    common = ["--data", f / "train.npz", "--val", f / "val.npz", "--quiet"]
    graphengine("train", f / "model.pb", *common, "-o", f / "one.pb")
    graphengine("train", f / "model.pb", *common, "-o", f / "two.pb", workers=2)
    assert_close(trained(f / "one.pb"), trained(f / "two.pb"), rtol=1e-12)
    one = [json.loads(x) for x in (f / "one.metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (f / "two.metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 3  # rank 0 alone writes the log
    for a, b in zip(one, two):
        assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), key


def regression64() -> ge.Graph:
    """x (N, 4) -> dense(8) -> tanh -> 2 outputs, mean squared error, in float64."""
    g = ge.Graph("reg")
    x = g.placeholder("x", (None, 4), "float64")
    t = g.placeholder("t", (None, 2), "float64")
    rng = np.random.default_rng(2)
    h = ge.tanh(x @ g.parameter("h/w", rng.normal(0, 0.5, (4, 8))))
    y = ge.identity(h @ g.parameter("out/w", rng.normal(0, 0.5, (8, 2))), name="y")
    g.set_training(
        ge.mean((y - t) ** 2.0),
        predictions="y",
        labels="t",
        metrics=["loss", "mae", "r2"],
        optimizer="sgd",
        learning_rate=0.1,
        batch_size=10,
        epochs=2,
        seed=3,
    )
    return g


@pytest.mark.slow
def test_every_metric_equals_the_single_process_value(mlp_files, tmp_path):
    """Top-k, macro P/R/F1, MAE and R^2 in training and validation records: two
    processes report what one reports (the slices' sums are added up; the last
    batch of 150 in batches of 16, 6 examples, splits 3 + 3)."""
    f = mlp_files
    metrics = "loss,accuracy,top2_accuracy,precision,recall,f1"
    common = ["--data", f / "train.npz", "--val", f / "val.npz", "--metrics", metrics]
    graphengine("train", f / "model.pb", *common, "--quiet", "-o", f / "one.pb")
    graphengine("train", f / "model.pb", *common, "--quiet", "-o", f / "two.pb", workers=2)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(47, 4))
    data = {"x": x, "t": np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)}
    np.savez(tmp_path / "reg.npz", **data)
    regression64().save(tmp_path / "reg.pb")
    reg = ["--data", tmp_path / "reg.npz", "--val", tmp_path / "reg.npz", "--quiet"]
    graphengine("train", tmp_path / "reg.pb", *reg, "-o", tmp_path / "reg1.pb")
    graphengine("train", tmp_path / "reg.pb", *reg, "-o", tmp_path / "reg2.pb", workers=2)
    for one_log, two_log, keys in [
        (f / "one.metrics.jsonl", f / "two.metrics.jsonl", metrics.split(",")),
        (tmp_path / "reg1.metrics.jsonl", tmp_path / "reg2.metrics.jsonl", ["loss", "mae", "r2"]),
    ]:
        one = [json.loads(x) for x in one_log.read_text().splitlines()]
        two = [json.loads(x) for x in two_log.read_text().splitlines()]
        assert len(one) == len(two) > 0
        for a, b in zip(one, two):
            for key in [f"{p}_{k}" for p in ("train", "val") for k in keys]:
                assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-15), key
        # Not a constant: the metrics moved over the run, so equal values mean something.
        assert one[0]["train_" + keys[-1]] != one[-1]["train_" + keys[-1]]


@pytest.mark.slow
def test_mlp_float32_within_summation_order_error(tmp_path):
    classifier(dropout=0.0).save(tmp_path / "model.pb")
    np.savez(tmp_path / "train.npz", **classifier_data(160))
    common = ["--data", tmp_path / "train.npz", "--quiet"]
    graphengine("train", tmp_path / "model.pb", *common, "-o", tmp_path / "one.pb")
    graphengine("train", tmp_path / "model.pb", *common, "--workers", 2, "-o", tmp_path / "two.pb")
    assert_close(trained(tmp_path / "one.pb"), trained(tmp_path / "two.pb"), rtol=1e-4)


@pytest.mark.slow
def test_cnn_with_sync_batch_norm_two_processes_match_one(tmp_path):
    """Batch statistics over the whole batch: the running statistics and every
    trained parameter match the single-process run."""
    cnn().save(tmp_path / "model.pb")
    np.savez(tmp_path / "train.npz", **cnn_data(60))
    common = ["--data", tmp_path / "train.npz", "--quiet"]
    graphengine("train", tmp_path / "model.pb", *common, "-o", tmp_path / "one.pb")
    graphengine(
        "train",
        tmp_path / "model.pb",
        *common,
        "--sync-batch-norm",
        "-o",
        tmp_path / "two.pb",
        workers=2,
    )
    one, two = trained(tmp_path / "one.pb"), trained(tmp_path / "two.pb")
    assert_close(one, two, rtol=1e-12)
    assert not np.allclose(one["bn/running_mean"], 0)  # the statistics did move


@pytest.mark.slow
def test_cnn_with_per_process_batch_norm_trains_and_agrees_across_processes(tmp_path):
    """Without --sync-batch-norm each process normalizes its own slice: the result
    differs from one process (by design) but every process ends with the same
    parameters (checked by the job itself at the end) and training works."""
    cnn().save(tmp_path / "model.pb")
    np.savez(tmp_path / "train.npz", **cnn_data(60))
    common = ["--data", tmp_path / "train.npz", "--quiet", "--epochs", 4]
    graphengine("train", tmp_path / "model.pb", *common, "-o", tmp_path / "one.pb")
    graphengine("train", tmp_path / "model.pb", *common, "-o", tmp_path / "two.pb", workers=2)
    one, two = trained(tmp_path / "one.pb"), trained(tmp_path / "two.pb")
    assert not np.allclose(one["bn/running_var"], two["bn/running_var"], rtol=1e-9)
    # The running mean is the average of the slices' means: the whole batch's mean.
    np.testing.assert_allclose(two["bn/running_mean"], one["bn/running_mean"], rtol=0.2, atol=0.05)
    log = [json.loads(x) for x in (tmp_path / "two.metrics.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]


# -- checkpoints across process counts ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_checkpoint_resumes_on_another_process_count(mlp_files, first, then):
    """Stop after epoch 1 of 3 (epochs=1 with checkpoints), resume on the other number
    of processes to epoch 3: the same parameters as an uninterrupted run."""
    f = mlp_files
    common = ["--data", f / "train.npz", "--quiet"]
    graphengine("train", f / "model.pb", *common, "-o", f / "reference.pb")
    graphengine(
        "train",
        f / "model.pb",
        *common,
        "--checkpoint-dir",
        f / "ckpt",
        "--checkpoint-every",
        4,
        "--epochs",
        3,
        "-o",
        f / "part.pb",
        workers=first,
    )
    checkpoints = list_checkpoints(f / "ckpt")
    mid_epoch = [c for c in checkpoints if read_checkpoint(c).position % 150 != 0]
    assert mid_epoch, "expected a checkpoint in the middle of an epoch"
    done = graphengine(
        "train",
        f / "model.pb",
        *common,
        "--resume",
        mid_epoch[-1],
        "-o",
        f / "resumed.pb",
        workers=then,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    assert_close(trained(f / "reference.pb"), trained(f / "resumed.pb"), rtol=1e-12)


# -- faults -------------------------------------------------------------------------------------


def _rank_process(launcher: int, rank: int) -> int | None:
    """The pid of the process of ``rank`` started (at any depth) by ``launcher``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    stack = list(children.get(launcher, []))
    while stack:
        pid = stack.pop()
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"graphengine" in cmdline:
            return pid
        stack.extend(children.get(pid, []))
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_process_stops_the_job_and_leaves_the_last_checkpoint(mlp_files):
    """SIGKILL rank 1 while rank 0 holds a finished temporary checkpoint before its
    rename: mpiexec stops the job in bounded time with a message, no half-written
    checkpoint becomes final, and the newest one resumes to the uninterrupted result."""
    f = mlp_files
    ckpt = f / "ckpt"
    common = ["--data", f / "train.npz", "--quiet"]
    graphengine("train", f / "model.pb", *common, "-o", f / "reference.pb")
    command = [
        sys.executable,
        "-m",
        "graphengine",
        "train",
        f / "model.pb",
        *common,
        "--workers",
        2,
        "--checkpoint-dir",
        ckpt,
        "--checkpoint-every",
        2,
        "--pause-before-rename",
        0.3,
        "-o",
        f / "killed.pb",
    ]
    process = subprocess.Popen(
        list(map(str, command)),
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (len(list_checkpoints(ckpt)) >= 2 and any(ckpt.glob(".ckpt-*.tmp"))):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.005)
        victim = _rank_process(process.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        process.wait(timeout=60)  # bounded: no hang
        stopped_after = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    message = process.stderr.read()
    assert process.returncode != 0
    assert stopped_after < 30
    assert "the job of 2 processes stopped" in message and "resume with --resume" in message
    assert not (f / "killed.pb").exists()
    for checkpoint in list_checkpoints(ckpt):
        read_checkpoint(checkpoint)  # every final checkpoint is whole
    done = graphengine(
        "train", f / "model.pb", *common, "--resume", ckpt, "-o", f / "resumed.pb", workers=2
    )
    assert "resuming from" in done.stderr
    assert_close(trained(f / "reference.pb"), trained(f / "resumed.pb"), rtol=1e-12)


@pytest.mark.slow
def test_processes_with_different_graphs_are_refused(mlp_files):
    """MPMD launch: process 0 loads one model, process 1 another; both stop with a
    message naming what differs, before training."""
    f = mlp_files
    other = to_float64(classifier(dropout=0.0, name="mlp", hidden=8))
    other.set_training("loss", batch_size=16, seed=7)
    other.save(f / "other.pb")
    base = [sys.executable, "-m", "graphengine", "train"]
    tail = ["--data", f / "train.npz", "--quiet", "-o", f / "out.pb"]
    done = subprocess.run(
        list(
            map(
                str,
                [
                    MPIEXEC,
                    "-n",
                    1,
                    *base,
                    f / "model.pb",
                    *tail,
                    ":",
                    "-n",
                    1,
                    *base,
                    f / "other.pb",
                    *tail,
                ],
            )
        ),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=TIMEOUT,
    )
    assert done.returncode != 0
    assert "do not agree on the graph" in done.stderr
    assert not (f / "out.pb").exists()


@pytest.mark.slow
def test_workers_must_match_the_launcher(mlp_files):
    f = mlp_files
    done = graphengine(
        "train",
        f / "model.pb",
        "--data",
        f / "train.npz",
        "--workers",
        3,
        "-o",
        f / "out.pb",
        workers=2,
        check=False,
    )
    assert done.returncode != 0
    assert "--workers 3, but mpiexec started 2 processes" in done.stderr


# -- the data-parallel gradient graph ---------------------------------------------------------


def test_data_parallel_graph_holds_one_fused_allreduce_and_round_trips(tmp_path):
    g = classifier(dropout=0.0, batch_norm=True)
    params = [n.name for n in g.parameters(trainable=True)]
    dp = data_parallel_gradients(g, "loss", params)
    reduces = [n for n in dp.nodes if n.op == "allreduce"]
    assert len(reduces) == 1  # loss, gradients and statistics: one buffer
    assert dp.gradient.seed == "gradients/seed"
    ge.save(dp, tmp_path / "dp.pb")
    back = ge.load(tmp_path / "dp.pb")
    assert [n.op for n in back.nodes] == [n.op for n in dp.nodes]
    assert back.gradient.loss == dp.gradient.loss
    assert "allreduce" in ge.to_dot(back, view="gradient")
    # On one process, with a seed of 1, it computes what ge.gradients computes.
    plain = ge.gradients(g, "loss", params)
    data = classifier_data(8)
    got = ge.run(
        back,
        [back.gradient.loss, *back.gradient.grads.values()],
        {**data, "gradients/seed": np.float32(1.0)},
        training=True,
    )
    want = ge.run(plain, ["loss", *plain.gradient.grads.values()], data, training=True)
    for a, b in zip(got.values(), want.values()):
        np.testing.assert_array_equal(a, b)


def test_sync_batch_norm_graph_swaps_the_op_and_keeps_names():
    g = cnn()
    params = [n.name for n in g.parameters(trainable=True)]
    dp = data_parallel_gradients(g, "loss", params, sync_batch_norm=True)
    assert dp.node("bn/batch_norm").op == "sync_batch_norm"
    assert g.node("bn/batch_norm").op == "batch_norm"  # the model is left alone
    ops = [n.op for n in dp.nodes]
    assert ops.count("allreduce") == 2  # the fused buffer, and the statistics' sums


def test_buckets_split_by_size_and_dtype():
    g = classifier(dropout=0.0)
    params = [n.name for n in g.parameters(trainable=True)]
    dp = data_parallel_gradients(g, "loss", params, bucket_bytes=64)
    sizes = [n for n in dp.nodes if n.op == "allreduce"]
    assert len(sizes) > 2
    data = classifier_data(8)
    plain = ge.gradients(g, "loss", params)
    got = ge.run(
        dp,
        list(dp.gradient.grads.values()),
        {**data, "gradients/seed": np.float32(1.0)},
        training=True,
    )
    want = ge.run(plain, list(plain.gradient.grads.values()), data, training=True)
    for a, b in zip(got.values(), want.values()):
        np.testing.assert_array_equal(a, b)


def test_grad_command_writes_the_data_parallel_graph(tmp_path, capsys):
    from graphengine.cli.main import main

    cnn().save(tmp_path / "model.pb")
    assert (
        main(
            [
                "grad",
                str(tmp_path / "model.pb"),
                "--data-parallel",
                "--sync-batch-norm",
                "-o",
                str(tmp_path / "dp.pb"),
            ]
        )
        == 0
    )
    assert "->  data_parallel/gradients/conv/w" in capsys.readouterr().out
    dp = ge.load(tmp_path / "dp.pb")
    assert dp.gradient.seed == "gradients/seed"
    assert {n.op for n in dp.nodes} >= {"allreduce", "sync_batch_norm"}
    assert main(["inspect", str(tmp_path / "dp.pb")]) == 0
    assert "allreduce" in capsys.readouterr().out


@pytest.mark.slow
def test_an_error_of_every_process_is_printed_once_and_stops_the_job(mlp_files):
    f = mlp_files
    started = time.monotonic()
    done = graphengine(
        "train",
        f / "model.pb",
        "--data",
        f / "missing.npz",
        "-o",
        f / "out.pb",
        workers=2,
        check=False,
    )
    assert done.returncode != 0
    assert time.monotonic() - started < 60
    assert done.stderr.count("does not exist") == 1, done.stderr
    assert "graphengine train (process 0 of 2): TrainingError" in done.stderr
    assert "stopping every process of the job" in done.stderr


WORKER = '''
import json, sys
import numpy as np
import graphengine as ge
from graphengine.mpi import world
from graphengine.training import Callback, Trainer
from graphengine.training.distributed import from_launcher

class StopOnOneProcess(Callback):
    """Asks to stop at step 5 on the last process only."""
    def on_step(self, trainer, info):
        comm = world()
        if info.step == 5 and (comm is None or comm.rank == comm.size - 1):
            trainer.stop()

model, data, out, stop = sys.argv[1:5]
g = ge.load(model)
arrays = dict(np.load(data))
callbacks = [StopOnOneProcess()] if stop == "stop" else []
result = Trainer(g, arrays, val=arrays, progress=False, parallel=from_launcher(),
                 callbacks=callbacks).fit()
comm = world()
if comm is None or comm.rank == 0:
    np.savez(out, **g.values)
    with open(out + ".json", "w") as f:
        json.dump({"steps": result.steps, "history": result.history}, f)
'''


@pytest.mark.slow
def test_python_api_stand_in_example_and_a_stop_on_one_process(mlp_files):
    """33 examples in batches of 16: the last batch holds 1 example, so process 1
    runs a stand-in with share 0; parameters and metrics still match one process.
    A callback that stops on one process only stops every process at that step."""
    f = mlp_files
    (f / "worker.py").write_text(WORKER)
    data = {k: v[:33] for k, v in np.load(f / "train.npz").items()}
    np.savez(f / "small.npz", **data)
    results = {}
    for workers, stop in [(1, "run"), (2, "run"), (2, "stop")]:
        out = f / f"out-{workers}-{stop}.npz"
        prefix = [str(MPIEXEC), "-n", str(workers)] if workers > 1 else []
        done = subprocess.run(
            [
                *prefix,
                sys.executable,
                str(f / "worker.py"),
                str(f / "model.pb"),
                str(f / "small.npz"),
                str(out),
                stop,
            ],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        results[workers, stop] = (
            dict(np.load(out)),
            json.loads(Path(str(out) + ".json").read_text()),
        )
    (one, one_log), (two, two_log) = results[1, "run"], results[2, "run"]
    assert_close(one, two, rtol=1e-12)
    assert one_log["steps"] == two_log["steps"] == 9
    for a, b in zip(one_log["history"], two_log["history"]):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-12), key
    assert results[2, "stop"][1]["steps"] == 5
