"""Time per training step: graphengine against hand-written numpy, same model, same process.

Two models are trained with Adam on batches drawn in a fresh order each epoch:

* ``digits``: the examples' digits MLP (64-128-64-10, batch 32) on the bundled
  digits data, fed raw uint8 pixels that both sides scale to [0, 1];
* ``mlp784``: a 784-512-512-10 ReLU MLP on random data, batch 128.

graphengine runs its own loop (``graphengine.training.Trainer``: gather a batch,
run the compiled plan of the gradient graph, update in place).  The reference
is the same loop written by hand in numpy: forward, backward by the chain rule,
Adam in place with preallocated buffers.  Rounds alternate between the two so
that a busy machine slows both alike; the figure per side is the median time
between consecutive steps (compilation and the first step excluded).  The
ratio printed is graphengine / numpy (lower is better; the goal is below 1.2).

``--command`` times the whole job instead: ``graphengine train`` run as a user
runs it (a fresh process: import, load the file, compile, train E epochs of
the digits MLP, write the trained file) against E epochs of the hand-written
numpy loop and of PyTorch (the same MLP, ``torch.optim.Adam``, batch 32, eager
on the CPU, one thread) in this process, in alternating rounds; it prints the
median epoch time of each (graphengine's from the ``seconds`` of its ``--json``
summary) and the command's wall time.

Run it:  python tools/bench_train.py [--rounds 5] [--models digits mlp784]
         python tools/bench_train.py --command [--rounds 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import graphengine as ge
from graphengine.training import Callback, Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent


class _StepClock(Callback):
    """Records the time at the end of every step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step(self, trainer, info) -> None:
        self.times.append(time.perf_counter())


def build_mlp(sizes: tuple[int, ...], uint8_pixels: bool) -> ge.Graph:
    g = ge.Graph("bench_mlp")
    if uint8_pixels:
        images = g.placeholder("x", (None, 8, 8), "uint8")
        h = ge.reshape(ge.cast(images, "float32"), (-1, 64)) / 16.0
    else:
        h = g.placeholder("x", (None, sizes[0]))
    labels = g.placeholder("y", (None,), "int64")
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        with g.name_scope(f"layer{i}"):
            w = g.parameter("w", shape=(fan_in, fan_out), init="he_normal")
            b = g.parameter("b", np.zeros(fan_out, np.float32))
            h = ge.matmul(h, w) + b
            if i < len(sizes) - 2:
                h = ge.relu(h)
    ge.softmax_cross_entropy(h, labels, name="loss")
    return g


class NumpyMLP:
    """The same MLP and Adam update, written by hand."""

    def __init__(
        self, graph: ge.Graph, sizes: tuple[int, ...], uint8_pixels: bool, lr: float
    ) -> None:
        self.layers = [
            (graph.values[f"layer{i}/w"].copy(), graph.values[f"layer{i}/b"].copy())
            for i in range(len(sizes) - 1)
        ]
        self.uint8_pixels = uint8_pixels
        self.lr, self.b1, self.b2, self.eps, self.t = lr, 0.9, 0.999, 1e-8, 0
        params = [p for layer in self.layers for p in layer]
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = [np.empty_like(p) for p in params]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        if self.uint8_pixels:
            x = x.reshape(len(x), 64).astype(np.float32) / np.float32(16.0)
        n = len(x)
        acts, pre = [x], []
        for i, (w, b) in enumerate(self.layers):
            z = acts[-1] @ w + b
            pre.append(z)
            acts.append(np.maximum(z, 0) if i < len(self.layers) - 1 else z)
        logits = acts[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_prob[np.arange(n), y].mean()
        d = np.exp(log_prob)
        d[np.arange(n), y] -= 1.0
        d /= np.float32(n)
        grads = []
        for i in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[i]
            grads.append((acts[i].T @ d, d.sum(axis=0)))
            if i > 0:
                d = (d @ w.T) * (pre[i - 1] > 0)
        grads.reverse()
        self._adam([g for pair in grads for g in pair])
        return float(loss)

    def _adam(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        params = [p for layer in self.layers for p in layer]
        for p, g, m, v, tmp in zip(params, grads, self.m, self.v, self.tmp):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            np.sqrt(v, out=tmp)
            tmp /= np.sqrt(c2)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= self.lr / c1
            p -= tmp


def numpy_epoch(
    model: NumpyMLP, data: dict[str, np.ndarray], batch: int, seed: int, epoch: int
) -> list[float]:
    order = np.random.default_rng([seed, epoch]).permutation(len(data["y"]))
    times = []
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        model.step(np.take(data["x"], idx, axis=0), np.take(data["y"], idx, axis=0))
        times.append(time.perf_counter())
    return times


def bench(name: str, rounds: int) -> tuple[float, float]:
    if name == "digits":
        sizes, uint8_pixels, batch = (64, 128, 64, 10), True, 32
        with np.load(ROOT / "examples" / "data" / "digits.npz", allow_pickle=False) as d:
            data = {"x": d["train_images"], "y": d["train_labels"]}
    else:
        sizes, uint8_pixels, batch = (784, 512, 512, 10), False, 128
        rng = np.random.default_rng(0)
        data = {
            "x": rng.normal(size=(batch * 20, 784)).astype(np.float32),
            "y": rng.integers(0, 10, batch * 20),
        }
    graph = build_mlp(sizes, uint8_pixels)
    reference = NumpyMLP(graph, sizes, uint8_pixels, lr=1e-3)
    ours, theirs = [], []
    for r in range(rounds):
        clock = _StepClock()
        trainer = Trainer(
            graph,
            data,
            loss="loss",
            optimizer="adam",
            learning_rate=1e-3,
            batch_size=batch,
            epochs=1,
            seed=r,
            callbacks=[clock],
            progress=False,
        )
        trainer.fit()
        ours += list(np.diff(clock.times))
        times = numpy_epoch(reference, data, batch, seed=r, epoch=0)
        theirs += list(np.diff(times))
    return statistics.median(ours), statistics.median(theirs)


def torch_epochs(data: dict[str, np.ndarray], sizes: tuple[int, ...], epochs: int) -> float:
    """Seconds for ``epochs`` epochs of the MLP in PyTorch (Adam, batch 32)."""
    import torch

    # One thread: for a model this small, more threads only add synchronisation
    # (and on a shared machine they fight over the cores).
    torch.set_num_threads(1)
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(data["x"].reshape(len(data["x"]), -1).astype(np.float32) / 16.0)
    y = torch.from_numpy(data["y"].astype(np.int64))
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(len(y)))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - started


def bench_command(rounds: int, epochs: int) -> None:
    """``graphengine train`` end to end against numpy and PyTorch epochs."""
    sizes = (64, 128, 64, 10)
    with np.load(ROOT / "examples" / "data" / "digits.npz", allow_pickle=False) as d:
        data = {"x": d["train_images"], "y": d["train_labels"]}
    graph = build_mlp(sizes, uint8_pixels=True)
    graph.set_training(
        "loss", optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=epochs, seed=0
    )
    steps = epochs * -(-len(data["y"]) // 32)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ours, walls, theirs, torches = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        model, train = pathlib.Path(tmp, "digits_mlp.pb"), pathlib.Path(tmp, "train.npz")
        graph.save(model)
        np.savez(train, **data)
        for r in range(rounds):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "graphengine", "train", str(model), "--data", str(train),
                 "--json", "-o", str(pathlib.Path(tmp, f"out{r}.pb"))],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            walls.append(time.perf_counter() - started)
            ours.append(json.loads(done.stdout)["seconds"] / epochs)
            reference = NumpyMLP(graph, sizes, True, lr=1e-3)
            started = time.perf_counter()
            for epoch in range(epochs):
                numpy_epoch(reference, data, 32, seed=0, epoch=epoch)
            theirs.append((time.perf_counter() - started) / epochs)
            try:
                torches.append(torch_epochs(data, sizes, epochs) / epochs)
            except ImportError:
                pass
    ge_epoch, np_epoch = statistics.median(ours), statistics.median(theirs)
    print(
        f"digits MLP {sizes}, {len(data['y'])} examples, batch 32, {epochs} epochs "
        f"({steps} steps), {rounds} rounds"
    )
    print(
        f"graphengine train: {ge_epoch:.3f} s/epoch ({steps / epochs / ge_epoch:,.0f} "
        f"steps/s); the whole command {statistics.median(walls):.2f} s"
    )
    print(
        f"numpy by hand:     {np_epoch:.3f} s/epoch   "
        f"ratio graphengine/numpy {ge_epoch / np_epoch:.2f}"
    )
    if torches:
        t_epoch = statistics.median(torches)
        print(
            f"PyTorch eager:     {t_epoch:.3f} s/epoch   "
            f"ratio graphengine/torch {ge_epoch / t_epoch:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--models", nargs="+", default=["digits", "mlp784"], choices=["digits", "mlp784"]
    )
    parser.add_argument("--command", action="store_true", help="time graphengine train end to end")
    parser.add_argument("--epochs", type=int, default=5, help="--command: epochs per run")
    args = parser.parse_args()
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    if args.command:
        bench_command(args.rounds, args.epochs)
        return
    for name in args.models:
        ours, theirs = bench(name, args.rounds)
        print(
            f"{name:8s} graphengine {ours * 1e3:8.3f} ms/step   numpy {theirs * 1e3:8.3f} "
            f"ms/step   ratio {ours / theirs:.2f}"
        )


if __name__ == "__main__":
    main()
