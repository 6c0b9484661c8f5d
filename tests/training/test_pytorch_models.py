"""Proof on the models users bring: a PyTorch MLP and a small conv net with
BatchNorm, exported with torch.onnx.export, imported, trained from the command
line with --loss on the bundled digits to a stated accuracy, exported again and
served by onnxruntime with the same predictions."""

import json
from pathlib import Path

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "data" / "digits.npz"


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(h, 1))


def _digits(folder, shape):
    d = np.load(DIGITS)
    for split in ("train", "test"):
        x = (d[f"{split}_images"] / 16.0).astype(np.float32).reshape(-1, *shape)
        np.savez(folder / f"{split}.npz", x=x, y=d[f"{split}_labels"])
    return np.load(folder / "test.npz")


def _export(model, example, path):
    torch.manual_seed(0)
    model.eval()
    # Constant folding off: otherwise the exporter folds BatchNorm into the conv.
    torch.onnx.export(
        model,
        example,
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
        dynamo=False,
        do_constant_folding=False,
    )


@pytest.mark.parametrize(
    "name, make, shape, epochs, wanted",
    [
        ("mlp", MLP, (64,), 15, 0.95),
        ("cnn", ConvNet, (1, 8, 8), 8, 0.95),
    ],
)
def test_import_train_with_loss_export_and_serve(
    tmp_path, capsys, name, make, shape, epochs, wanted
):
    torch.manual_seed(0)
    model = make()
    test = _digits(tmp_path, shape)
    _export(model, torch.zeros(1, *shape), tmp_path / f"{name}.onnx")
    assert main(["import", str(tmp_path / f"{name}.onnx"), "-o", str(tmp_path / "m.pb")]) == 0
    imported = ge.load(tmp_path / "m.pb")
    frozen = sorted(p.name for p in imported.parameters(trainable=False))
    assert frozen == (["bn.running_mean", "bn.running_var"] if name == "cnn" else [])
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(tmp_path / "m.pb"),
                "--data",
                str(tmp_path / "train.npz"),
                "--val",
                str(tmp_path / "test.npz"),
                "--loss",
                "cross_entropy",
                "--predictions",
                "logits",
                "--labels",
                "y",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--epochs",
                str(epochs),
                "--batch-size",
                "32",
                "--metrics",
                "loss,accuracy,f1",
                "--json",
                "-o",
                str(tmp_path / "trained.pb"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["final"]["val_accuracy"] >= wanted, summary
    trained = ge.load(tmp_path / "trained.pb")
    if name == "cnn":  # the running statistics followed the batches
        assert not np.allclose(trained.values["bn.running_mean"], 0)
    assert (
        main(["eval", str(tmp_path / "trained.pb"), "--data", str(tmp_path / "test.npz"), "--json"])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert results["accuracy"] == pytest.approx(summary["final"]["val_accuracy"])
    assert main(["export", str(tmp_path / "trained.pb"), "-o", str(tmp_path / "trained.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "trained.onnx"))
    served = session.run(["logits"], {"x": test["x"]})[0]
    ours = ge.run(trained, trained.outputs[0], {"x": test["x"]})
    np.testing.assert_allclose(served, ours, rtol=1e-4, atol=1e-5)
    assert np.array_equal(served.argmax(1), ours.argmax(1))
    assert (served.argmax(1) == test["y"]).mean() == pytest.approx(results["accuracy"])
