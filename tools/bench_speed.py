"""Speed of one training step: graphengine against hand-written numpy and PyTorch eager.

Every workload is one SGD step (forward, backward, update in place) of the
same model, timed three ways in one process:

* ``ge``: the compiled plan of the gradient graph as the trainer builds it
  (``compile_training_plan``: fused, into reused buffers, the SGD updates of
  large weights folded into its products) and the trainer's SGD
  (``graphengine.training.optimizers.SGD``) for the rest, as ``graphengine
  train`` runs them;
* ``numpy``: the same step written by hand, as fast as we know how (im2col
  convolution with channel-major activations, so each conv is one GEMM without
  transposes; reshaped max pooling; preallocated update buffers);
* ``torch``: PyTorch eager on the CPU with its default threads (skipped when
  torch is not importable).

Workloads: ``cnn`` (64x1x28x28, conv 3x3 1->16 + relu + max pool 2, conv 3x3
16->32 + relu + max pool 2, dense 1568->10, softmax cross-entropy), ``mlp128``
and ``mlp1024`` (784-512-512-10 ReLU MLP at batch 128 and 1024), ``mlp32``
(64-128-64-10 at batch 32) and ``chain`` (200 elementwise ops on a (16,)
vector, forward and backward).  Rounds interleave the three sides so that a
busy machine slows them alike; each figure is the median over rounds of the
mean step time within a round.  Ratios are graphengine / other (lower is better).

    python tools/bench_speed.py [--rounds 7] [--workloads cnn mlp128 ...] [--profile]

``--profile`` also prints, per workload, the share of graphengine's step
spent in each op (summed over nodes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import graphengine as ge
from graphengine.training.folded_sgd import FoldedSGD
from graphengine.training.optimizers import SGD
from graphengine.training.trainer import compile_training_plan

LR = 0.01


# -- graphengine ------------------------------------------------------------------------------


class GeStep:
    """One SGD step of ``graph``'s loss with graphengine's plan and optimizer."""

    def __init__(self, graph: ge.Graph, loss: ge.Tensor, feeds: dict[str, np.ndarray]):
        names = [n.name for n in graph.nodes if n.op == "parameter"]
        tg = ge.gradients(graph, loss, names)
        tg.values = graph.values
        fetches = [tg.gradient.loss] + [tg.gradient.grads[p] for p in names]
        # As the trainer compiles it: fused, fetches consumed before the next step,
        # large weights' SGD updates folded into the plan's products.
        self.folded = FoldedSGD(tg.gradient.grads, tg.gradient.loss)
        self.plan = compile_training_plan(tg, fetches, list(feeds), folded=self.folded)
        names = [p for p in names if p not in self.folded.params]
        self.feeds = feeds
        self.params = {p: graph.values[p] for p in names}
        self.names = names
        self.optimizer = SGD()
        self.optimizer.setup(self.params)

    def __call__(self) -> float:
        self.folded.lr = LR
        out = self.plan.run(self.feeds, training=True)
        self.optimizer.step(self.params, dict(zip(self.names, out[1:])), LR)
        return float(out[0])


def ge_mlp(sizes, batch, rng):
    g = ge.Graph("mlp")
    h = g.placeholder("x", (None, sizes[0]))
    labels = g.placeholder("y", (None,), "int64")
    for i in range(len(sizes) - 1):
        with g.name_scope(f"layer{i}"):
            w = g.parameter("w", shape=(sizes[i], sizes[i + 1]), init="he_normal")
            b = g.parameter("b", np.zeros(sizes[i + 1], np.float32))
            h = ge.matmul(h, w) + b
            if i < len(sizes) - 2:
                h = ge.relu(h)
    loss = ge.softmax_cross_entropy(h, labels)
    feeds = {
        "x": rng.standard_normal((batch, sizes[0])).astype(np.float32),
        "y": rng.integers(0, sizes[-1], batch),
    }
    return g, loss, feeds


def ge_cnn(batch, rng):
    g = ge.Graph("cnn")
    x = g.placeholder("x", (None, 1, 28, 28))
    labels = g.placeholder("y", (None,), "int64")
    h = x
    for i, (cin, cout) in enumerate([(1, 16), (16, 32)]):
        with g.name_scope(f"conv{i}"):
            w = g.parameter("w", shape=(cout, cin, 3, 3), init="he_normal")
            b = g.parameter("b", np.zeros((cout, 1, 1), np.float32))
            h = ge.max_pool2d(ge.relu(ge.conv2d(h, w, padding=1) + b), 2)
    with g.name_scope("dense"):
        w = g.parameter("w", shape=(32 * 7 * 7, 10), init="he_normal")
        b = g.parameter("b", np.zeros(10, np.float32))
        logits = ge.matmul(ge.reshape(h, (-1, 32 * 7 * 7)), w) + b
    loss = ge.softmax_cross_entropy(logits, labels)
    feeds = {
        "x": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
        "y": rng.integers(0, 10, batch),
    }
    return g, loss, feeds


CHAIN_OPS = ("tanh", "sin", "scale", "shift")


def ge_chain(length, rng):
    g = ge.Graph("chain")
    x = g.parameter("x", rng.standard_normal(16).astype(np.float32))
    h = x
    for i in range(length):
        kind = CHAIN_OPS[i % 4]
        h = (
            ge.tanh(h)
            if kind == "tanh"
            else ge.sin(h)
            if kind == "sin"
            else (h * 1.01 if kind == "scale" else h + 0.01)
        )
    return g, ge.sum(h), {}


# -- hand-written numpy -----------------------------------------------------------------------


def _softmax_xent(logits, labels):
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(shifted[np.arange(n), labels]).mean()
    shifted[np.arange(n), labels] -= 1.0
    shifted /= n
    return loss, shifted


class NumpyMLP:
    def __init__(self, graph, feeds, layers):
        self.w = [graph.values[f"layer{i}/w"].copy() for i in range(layers)]
        self.b = [graph.values[f"layer{i}/b"].copy() for i in range(layers)]
        self.x, self.y = feeds["x"], feeds["y"]
        self.tmp = [np.empty_like(p) for p in self.w + self.b]

    def __call__(self) -> float:
        acts = [self.x]
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            h = acts[-1] @ w
            h += b
            if i < len(self.w) - 1:
                np.maximum(h, 0, out=h)
            acts.append(h)
        loss, d = _softmax_xent(acts[-1], self.y)
        grads_w, grads_b = [None] * len(self.w), [None] * len(self.w)
        for i in range(len(self.w) - 1, -1, -1):
            grads_w[i] = acts[i].T @ d
            grads_b[i] = d.sum(axis=0)
            if i:
                d = d @ self.w[i].T
                d *= acts[i] > 0
        for p, g, t in zip(self.w + self.b, grads_w + grads_b, self.tmp):
            np.multiply(g, LR, out=t)
            p -= t
        return float(loss)


class NumpyCNN:
    """Activations kept channel-major, (C, N, H, W), the layout in which every
    convolution is one GEMM with no transposes: im2col rows are (C, kh, kw)
    windows, the weights stay (O, C*kh*kw)."""

    def __init__(self, graph, feeds):
        v = graph.values
        self.w = [v[f"conv{i}/w"].reshape(v[f"conv{i}/w"].shape[0], -1).copy() for i in range(2)]
        self.b = [v[f"conv{i}/b"].reshape(-1, 1).copy() for i in range(2)]
        self.wd, self.bd = v["dense/w"].copy(), v["dense/b"].copy()
        self.x = np.ascontiguousarray(feeds["x"].transpose(1, 0, 2, 3))
        self.y = feeds["y"]
        self.params = self.w + self.b + [self.wd, self.bd]
        self.tmp = [np.empty_like(p) for p in self.params]

    @staticmethod
    def im2col(x):
        c, n, h, w = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        win = sliding_window_view(xp, (3, 3), axis=(2, 3))  # (C, N, H, W, 3, 3)
        return win.transpose(0, 4, 5, 1, 2, 3).reshape(c * 9, n * h * w)

    @staticmethod
    def col2im(dcols, shape):
        c, n, h, w = shape
        d = dcols.reshape(c, 3, 3, n, h, w)
        dxp = np.zeros((c, n, h + 2, w + 2), dcols.dtype)
        for i in range(3):
            for j in range(3):
                dxp[:, :, i : i + h, j : j + w] += d[:, i, j]
        return dxp[:, :, 1:-1, 1:-1]

    @staticmethod
    def pool(a):
        """2x2 max pooling as two pairwise maxima (rows, then columns) of strided
        views: a reduction over reshaped window axes is many times slower."""
        rows = np.maximum(a[:, :, 0::2], a[:, :, 1::2])
        return np.maximum(rows[..., 0::2], rows[..., 1::2])

    @staticmethod
    def unpool(a, y, dy):
        """dy sent to the elements equal to their window's maximum, one strided
        store per window position.  Ties only occur at relu's zeros, which the
        relu mask clears next, so no tie is counted twice."""
        da = np.empty_like(a)
        for i in (0, 1):
            for j in (0, 1):
                np.multiply(a[..., i::2, j::2] == y, dy, out=da[..., i::2, j::2])
        return da

    def __call__(self) -> float:
        h = self.x
        saved = []
        for w, b in zip(self.w, self.b):
            cols = self.im2col(h)
            a = w @ cols
            a += b
            np.maximum(a, 0, out=a)
            a = a.reshape((w.shape[0],) + h.shape[1:])
            y = self.pool(a)
            saved.append((h.shape, cols, a, y))
            h = y
        flat = h.transpose(1, 0, 2, 3).reshape(h.shape[1], -1)  # NCHW feature order
        logits = flat @ self.wd
        logits += self.bd
        loss, d = _softmax_xent(logits, self.y)
        gwd, gbd = flat.T @ d, d.sum(axis=0)
        dh = (d @ self.wd.T).reshape(h.shape[1], h.shape[0], 7, 7).transpose(1, 0, 2, 3)
        gw, gb = [None, None], [None, None]
        for i in (1, 0):
            shape, cols, a, y = saved[i]
            da = self.unpool(a, y, dh)
            da *= a > 0
            da2 = da.reshape(da.shape[0], -1)
            gw[i] = da2 @ cols.T
            gb[i] = da2.sum(axis=1, keepdims=True)
            if i:
                dh = self.col2im(self.w[i].T @ da2, shape)
        for p, g, t in zip(self.params, gw + gb + [gwd, gbd], self.tmp):
            np.multiply(g, LR, out=t)
            p -= t
        return float(loss)


class NumpyChain:
    def __init__(self, graph, length):
        self.x = graph.values["x"].copy()
        self.length = length

    def __call__(self) -> float:
        h, saved = self.x, []
        for i in range(self.length):
            kind = CHAIN_OPS[i % 4]
            saved.append(h)
            h = (
                np.tanh(h)
                if kind == "tanh"
                else np.sin(h)
                if kind == "sin"
                else (h * np.float32(1.01) if kind == "scale" else h + np.float32(0.01))
            )
        d = np.ones_like(h)
        for i in range(self.length - 1, -1, -1):
            kind, a = CHAIN_OPS[i % 4], saved[i]
            if kind == "tanh":
                t = np.tanh(a)
                d = d * (1 - t * t)
            elif kind == "sin":
                d = d * np.cos(a)
            elif kind == "scale":
                d = d * np.float32(1.01)
        self.x -= LR * d
        return float(h.sum())


# -- PyTorch ----------------------------------------------------------------------------------


def torch_step(torch, model, inputs, loss_fn):
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=LR)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs[0]), *inputs[1:])
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def torch_mlp(torch, graph, feeds, layers):
    mods = []
    for i in range(layers):
        lin = torch.nn.Linear(*graph.values[f"layer{i}/w"].shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(graph.values[f"layer{i}/w"].T.copy()))
            lin.bias.copy_(torch.from_numpy(graph.values[f"layer{i}/b"]))
        mods.append(lin)
        if i < layers - 1:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    inputs = (torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["y"]))
    return torch_step(torch, model, inputs, torch.nn.functional.cross_entropy)


def torch_cnn(torch, graph, feeds):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )
    inputs = (torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["y"]))
    return torch_step(torch, model, inputs, torch.nn.functional.cross_entropy)


def torch_chain(torch, graph, length):
    x = torch.tensor(graph.values["x"], requires_grad=True)
    opt = torch.optim.SGD([x], lr=LR)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        h = x
        for i in range(length):
            kind = CHAIN_OPS[i % 4]
            h = (
                torch.tanh(h)
                if kind == "tanh"
                else torch.sin(h)
                if kind == "sin"
                else (h * 1.01 if kind == "scale" else h + 0.01)
            )
        loss = h.sum()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


# -- the workloads ----------------------------------------------------------------------------


def make_workloads(names, torch):
    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        if name == "cnn":
            g, loss, feeds = ge_cnn(64, rng)
            sides = {"ge": GeStep(g, loss, feeds), "numpy": NumpyCNN(g, feeds)}
            if torch:
                sides["torch"] = torch_cnn(torch, g, feeds)
        elif name == "chain":
            g, loss, feeds = ge_chain(200, rng)
            sides = {"ge": GeStep(g, loss, feeds), "numpy": NumpyChain(g, 200)}
            if torch:
                sides["torch"] = torch_chain(torch, g, 200)
        else:
            sizes, batch = {
                "mlp128": ((784, 512, 512, 10), 128),
                "mlp1024": ((784, 512, 512, 10), 1024),
                "mlp32": ((64, 128, 64, 10), 32),
            }[name]
            g, loss, feeds = ge_mlp(sizes, batch, rng)
            sides = {"ge": GeStep(g, loss, feeds), "numpy": NumpyMLP(g, feeds, len(sizes) - 1)}
            if torch:
                sides["torch"] = torch_mlp(torch, g, feeds, len(sizes) - 1)
        out[name] = sides
    return out


def time_block(fn: Callable[[], float], seconds: float, clock=time.perf_counter) -> float:
    """Mean seconds per call over calls filling about ``seconds`` of ``clock``."""
    fn()
    start = clock()
    calls = 0
    while True:
        fn()
        calls += 1
        elapsed = clock() - start
        if elapsed >= seconds and calls >= 3:
            return elapsed / calls


def profile(step: GeStep, repeat: int = 20, clock=time.perf_counter) -> list[tuple[str, float]]:
    """Seconds per step spent in each op type (summed over nodes), timing every
    step of the planned program as a training step runs it: each kernel bound in
    the generated function, with its buffer, is wrapped in a timer."""
    plan = step.plan
    for _ in range(3):  # record, plan, and run planned once
        step()
    (program,) = plan._programs.values()
    names = program.__globals__
    totals: dict[str, float] = {}
    saved = {}
    for i, s in enumerate(plan.steps):
        kernel = names[f"k{i}"]
        saved[f"k{i}"] = kernel

        def timed(*args, _kernel=kernel, _op=s.node.op, **kwargs):
            t0 = clock()
            result = _kernel(*args, **kwargs)
            totals[_op] = totals.get(_op, 0.0) + clock() - t0
            return result

        names[f"k{i}"] = timed
    try:
        for _ in range(repeat):
            step()
    finally:
        names.update(saved)
    return sorted(((op, t / repeat) for op, t in totals.items()), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=float, default=0.25, help="seconds per timed block")
    parser.add_argument(
        "--workloads", nargs="+", default=["cnn", "mlp128", "mlp1024", "mlp32", "chain"]
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process CPU time and torch on one thread (run with "
        "OPENBLAS_NUM_THREADS=1): steadier than wall time on a busy machine",
    )
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter

    torch = None
    if not args.no_torch:
        try:
            import torch

            if args.cpu_time:
                torch.set_num_threads(1)
        except ImportError:
            pass
    workloads = make_workloads(args.workloads, torch)
    times = {name: {side: [] for side in sides} for name, sides in workloads.items()}
    for _ in range(args.rounds):
        for name, sides in workloads.items():
            for side, fn in sides.items():
                times[name][side].append(time_block(fn, args.block, clock))
    print(
        f"numpy {np.__version__}, torch {torch.__version__ if torch else 'absent'}, "
        f"{args.rounds} rounds of {args.block:g} s blocks; median ms per step"
        + (" (CPU time, one thread)" if args.cpu_time else "")
    )
    print(f"{'workload':10} {'ge':>9} {'numpy':>9} {'torch':>9} {'ge/numpy':>9} {'ge/torch':>9}")
    for name, sides in times.items():
        med = {side: statistics.median(ts) for side, ts in sides.items()}
        tt = med.get("torch")
        print(
            f"{name:10} {med['ge'] * 1e3:9.3f} {med['numpy'] * 1e3:9.3f} "
            f"{tt * 1e3 if tt else float('nan'):9.3f} {med['ge'] / med['numpy']:9.2f} "
            f"{med['ge'] / tt if tt else float('nan'):9.2f}"
        )
    if args.profile:
        for name, sides in workloads.items():
            rows = profile(sides["ge"], clock=clock)
            total = sum(t for _, t in rows)
            print(
                f"\n{name}: {total * 1e3:.3f} ms in kernels, {len(sides['ge'].plan.steps)} "
                "plan steps"
            )
            for op, t in rows[:12]:
                print(f"  {op:28} {t * 1e3:8.3f} ms {100 * t / total:5.1f}%")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
