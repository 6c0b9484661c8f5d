"""A small convolutional network on the handwritten digits, trained from its file.

Two blocks of 3x3 convolution, batch normalization, ReLU and 2x2 max pooling
(8x8 -> 4x4 -> 2x2 pixels, 16 then 32 channels), then a linear layer to the 10
classes.  During training batch normalization uses each batch's statistics and
the trainer keeps the running mean and variance (non-trainable parameters) up
to date; evaluation uses those.  The script builds the model, saves it with its
training spec, draws it, trains it from the saved file with ``ge.train``
(checkpointing each epoch), and prints the held-out test accuracy.

Run it:  python examples/digits_cnn.py [--out out/digits_cnn]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

import numpy as np

import graphengine as ge

DATA = pathlib.Path(__file__).resolve().parent / "data" / "digits.npz"
CHANNELS = (16, 32)


def build(channels: tuple[int, int] = CHANNELS) -> ge.Graph:
    """conv-bn-relu-pool twice, then a linear layer; with its training spec."""
    graph = ge.Graph("digits_cnn")
    images = graph.placeholder("images", (None, 8, 8), "uint8")
    labels = graph.placeholder("labels", (None,), "int64")
    with graph.name_scope("preprocess"):
        h = ge.reshape(ge.cast(images, "float32"), (-1, 1, 8, 8)) / 16.0  # NCHW in [0, 1]
    in_channels = 1
    for i, out_channels in enumerate(channels, start=1):
        with graph.name_scope(f"block{i}"):
            w = graph.parameter("w", shape=(out_channels, in_channels, 3, 3), init="he_normal")
            gamma = graph.parameter("gamma", np.ones(out_channels, np.float32))
            beta = graph.parameter("beta", np.zeros(out_channels, np.float32))
            mean = graph.parameter(
                "running_mean", np.zeros(out_channels, np.float32), trainable=False
            )
            var = graph.parameter("running_var", np.ones(out_channels, np.float32), trainable=False)
            h = ge.conv2d(h, w, padding=1)  # no bias: batch norm's beta plays its part
            h = ge.batch_norm(h, gamma, beta, mean, var)
            h = ge.max_pool2d(ge.relu(h), 2)
        in_channels = out_channels
    with graph.name_scope("logits"):
        features = in_channels * 2 * 2
        w = graph.parameter("w", shape=(features, 10))
        b = graph.parameter("b", np.zeros(10, np.float32))
        logits = ge.matmul(ge.reshape(h, (-1, features)), w) + b
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    graph.mark_output(loss, logits)
    graph.set_training(
        loss,
        metrics=["loss", "accuracy"],
        predictions=logits.name,
        labels="labels",
        optimizer="adamw",
        learning_rate=0.01,
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=50,
        batch_size=32,
        epochs=20,
        seed=0,
        data_map={"images": "train_images", "labels": "train_labels"},
    )
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/digits_cnn", help="output folder")
    parser.add_argument("--epochs", type=int, help="override the spec's 20 epochs")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    build().save(out / "digits_cnn.pb")
    graph = ge.load(out / "digits_cnn.pb")
    ge.render(graph, out / "forward.png", view="forward")
    ge.render(graph, out / "gradient.png", view="gradient")

    with np.load(DATA, allow_pickle=False) as digits:
        test = {"images": digits["test_images"], "labels": digits["test_labels"]}
    # Each run of this example starts afresh: the checkpoints and the log are the
    # example's own output, and training refuses to start a fresh run in a folder
    # holding another run's checkpoints (it would overwrite them).
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    result = ge.train(
        graph,
        DATA,
        val=test,
        epochs=args.epochs,
        checkpoint_dir=out / "checkpoints",
        log=out / "metrics.jsonl",
    )
    graph.save(out / "trained.pb")
    print(
        f"trained {result.steps} steps; test accuracy {result.final['val_accuracy']:.4f} "
        f"on {len(test['labels'])} held-out images"
    )


if __name__ == "__main__":
    main()
