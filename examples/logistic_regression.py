"""Logistic regression: is this handwritten digit an 8 or a 3?

A linear model of the 64 pixels, z = x @ w + b, with the probability of "8"
sigmoid(z) and the binary cross-entropy written with elementwise ops in its
stable form, loss = mean(softplus(z) - y * z) (equal to
-mean(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))) without overflow).  Accuracy
thresholds the logit z at 0.  The script takes the 3s and 8s of the digits data
(examples/data/digits.npz), saves the model with its training spec (Adam),
draws it, loads it back and trains it with ``ge.train``, and prints the
accuracy on the held-out 3s and 8s.

Run it:  python examples/logistic_regression.py [--out out/logistic_regression]
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import graphengine as ge

DATA = pathlib.Path(__file__).resolve().parent / "data" / "digits.npz"


def threes_and_eights(split: str) -> dict[str, np.ndarray]:
    """The 3s (label 0) and 8s (label 1) of a split of the digits data."""
    with np.load(DATA, allow_pickle=False) as digits:
        images, labels = digits[f"{split}_images"], digits[f"{split}_labels"]
    keep = (labels == 3) | (labels == 8)
    return {"images": images[keep], "is_eight": (labels[keep] == 8).astype(np.float32)}


def build() -> ge.Graph:
    """z = pixels @ w + b; loss = mean(softplus(z) - y z), with its training spec."""
    graph = ge.Graph("logistic_regression")
    images = graph.placeholder("images", (None, 8, 8), "uint8")
    y = graph.placeholder("is_eight", (None,))
    x = ge.reshape(ge.cast(images, "float32"), (-1, 64)) / 16.0
    w = graph.parameter("w", shape=(64,), init="zeros")
    b = graph.parameter("b", np.zeros((), np.float32))
    z = ge.add(ge.matmul(x, w), b, name="logit")  # (N,): matrix @ vector
    loss = ge.mean(ge.softplus(z) - y * z, name="loss")
    graph.mark_output(loss, ge.sigmoid(z, name="p_eight"))
    graph.set_training(
        loss,
        metrics=["loss", "accuracy"],
        predictions=z.name,
        labels="is_eight",
        optimizer="adam",
        learning_rate=0.05,
        batch_size=32,
        epochs=20,
        seed=0,
    )
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/logistic_regression", help="output folder")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    build().save(out / "logistic_regression.pb")
    graph = ge.load(out / "logistic_regression.pb")
    ge.render(graph, out / "forward.png", view="forward")
    ge.render(graph, out / "gradient.png", view="gradient")

    test = threes_and_eights("test")
    result = ge.train(graph, threes_and_eights("train"), val=test, log=out / "metrics.jsonl")
    graph.save(out / "trained.pb")
    print(
        f"trained {result.steps} steps; test accuracy {result.final['val_accuracy']:.4f} "
        f"on {len(test['is_eight'])} held-out 3s and 8s"
    )


if __name__ == "__main__":
    main()
