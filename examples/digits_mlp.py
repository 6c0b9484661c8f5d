"""The main job, end to end: a multilayer perceptron on handwritten digits.

Builds the model, saves it as a model file with its training spec, draws its
forward and gradient graphs, trains it from the saved file alone (the
``graphengine train`` command), and prints the accuracy on the held-out test
split.  The data are the 8x8 digits of the UCI repository (1,797 images,
bundled in examples/data/digits.npz with an 80/20 stratified split; see
examples/data/README.md).  The graph takes the raw uint8 pixel counts (0..16)
and scales them itself, so the data file feeds it as it is.

Run it:  python examples/digits_mlp.py [--out out/digits_mlp]

It writes into the output folder:

    digits_mlp.pb               the untrained model and its training spec
    forward.png, gradient.png   the two drawings
    trained.pb                  the trained model (loads and runs like any graph file)
    checkpoints/                checkpoints, and metrics.jsonl: one JSON line per epoch
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import time

import numpy as np

import graphengine as ge
from graphengine.cli.main import main as graphengine_command
from graphengine.training import evaluate

DATA = pathlib.Path(__file__).resolve().parent / "data" / "digits.npz"
HIDDEN = (128, 64)


def build(hidden: tuple[int, ...] = HIDDEN) -> ge.Graph:
    """64 pixels -> ReLU layers of ``hidden`` widths -> 10 logits, with its training spec."""
    graph = ge.Graph("digits_mlp")
    images = graph.placeholder("images", (None, 8, 8), "uint8")
    labels = graph.placeholder("labels", (None,), "int64")
    with graph.name_scope("preprocess"):
        h = ge.reshape(ge.cast(images, "float32"), (-1, 64)) / 16.0  # pixel counts to [0, 1]
    fan_in = 64
    for i, width in enumerate(hidden, start=1):
        with graph.name_scope(f"dense{i}"):
            w = graph.parameter("w", shape=(fan_in, width), init="he_normal")
            b = graph.parameter("b", np.zeros(width, np.float32))
            h = ge.relu(ge.matmul(h, w) + b)
        fan_in = width
    with graph.name_scope("logits"):
        w = graph.parameter("w", shape=(fan_in, 10))
        b = graph.parameter("b", np.zeros(10, np.float32))
        logits = ge.matmul(h, w) + b
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    graph.mark_output(loss, logits)
    graph.set_training(
        loss,
        metrics=["loss", "accuracy"],
        predictions=logits.name,
        labels="labels",
        optimizer="adamw",
        learning_rate=0.005,
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=50,
        batch_size=32,
        epochs=30,
        seed=0,
        data_map={"images": "train_images", "labels": "train_labels"},
    )
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/digits_mlp", help="output folder")
    parser.add_argument("--epochs", type=int, help="override the spec's 30 epochs")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    model = out / "digits_mlp.pb"
    build().save(model)
    saved = ge.load(model)
    ge.render(saved, out / "forward.png", view="forward")
    ge.render(saved, out / "gradient.png", view="gradient")
    print(f"built and saved {model}; drew {out / 'forward.png'} and {out / 'gradient.png'}")

    # Each run of this example starts afresh: the checkpoint folder is the
    # example's own output, and graphengine train refuses to start a fresh run in
    # a folder holding another run's checkpoints (it would overwrite them).
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    # Train from the file alone, exactly as the shell command would.
    command = [
        "train",
        str(model),
        "--data",
        str(DATA),
        "-o",
        str(out / "trained.pb"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        "--quiet",
    ]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    print("graphengine " + " ".join(command))
    if graphengine_command(command) != 0:
        raise SystemExit("training failed")

    trained = ge.load(out / "trained.pb")
    test = np.load(DATA, allow_pickle=False)
    result = evaluate(trained, {"images": test["test_images"], "labels": test["test_labels"]})
    print(
        f"all done in {time.perf_counter() - started:.1f} s; metrics per epoch in "
        f"{out / 'checkpoints' / 'metrics.jsonl'}"
    )
    print(
        f"test accuracy: {result['accuracy']:.4f} ({result['examples']} held-out images, "
        f"test loss {result['loss']:.4f})"
    )


if __name__ == "__main__":
    main()
