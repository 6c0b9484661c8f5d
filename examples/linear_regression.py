"""Linear regression, trained from its saved model file.

Data come from a known line, y = x @ w_true + b_true + noise, so the script can
show that training recovers w_true and b_true.  It builds the model
(pred = x @ w + b, loss = mean squared error), saves it with its training spec
(SGD with momentum), draws it, loads the file back and trains the loaded graph
with ``ge.train``, then prints the fitted and the true coefficients.

Run it:  python examples/linear_regression.py [--out out/linear_regression]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

import numpy as np

import graphengine as ge

W_TRUE = np.array([[2.0], [-3.0], [0.5]], np.float32)
B_TRUE = np.float32(1.25)


def make_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` examples of y = x @ W_TRUE + B_TRUE + noise (std 0.1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    noise = rng.normal(scale=0.1, size=(n, 1)).astype(np.float32)
    return {"x": x, "y": x @ W_TRUE + B_TRUE + noise}


def build() -> ge.Graph:
    """pred = x @ w + b and its mean squared error against y, with a training spec."""
    graph = ge.Graph("linear_regression")
    x = graph.placeholder("x", (None, 3))
    y = graph.placeholder("y", (None, 1))
    w = graph.parameter("w", shape=(3, 1), init="zeros")
    b = graph.parameter("b", np.zeros((1,), np.float32))
    pred = ge.add(ge.matmul(x, w), b, name="pred")
    loss = ge.mean_squared_error(pred, y, name="loss")
    graph.mark_output(loss, pred)
    graph.set_training(
        loss, optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=32, epochs=10, seed=0
    )
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/linear_regression", help="output folder")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    np.savez(out / "train.npz", **make_data(1000, seed=1))
    np.savez(out / "test.npz", **make_data(200, seed=2))
    build().save(out / "linear_regression.pb")
    graph = ge.load(out / "linear_regression.pb")
    ge.render(graph, out / "forward.png", view="forward")
    ge.render(graph, out / "gradient.png", view="gradient")

    # Each run of this example starts afresh: the checkpoints are the example's own
    # output, and training refuses a fresh run in a folder holding another run's.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    result = ge.train(
        graph,
        out / "train.npz",
        val=out / "test.npz",
        log=out / "metrics.jsonl",
        checkpoint_dir=out / "checkpoints",
    )
    graph.save(out / "trained.pb")
    w, b = graph.values["w"].ravel(), graph.values["b"].ravel()
    print(f"fitted w = {np.round(w, 3).tolist()}, b = {b[0]:.3f}")
    print(f"true   w = {W_TRUE.ravel().tolist()}, b = {float(B_TRUE):.3f}")
    print(f"test mean squared error: {result.final['val_loss']:.5f} (noise variance 0.01)")


if __name__ == "__main__":
    main()
