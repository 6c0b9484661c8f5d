"""Choosing what to train by name, scope or glob; state parameters (batch-norm
running statistics) imported as non-trainable."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.training.selection import matches, select_parameters, state_parameters

from ..train_models import classifier, classifier_data


def _three_layers():
    g = ge.Graph("three")
    x = g.placeholder("x", (None, 4))
    y = g.placeholder("y", (None,), "int64")
    h = x
    for name, width in (("dense1", 8), ("dense2", 8), ("head", 3)):
        with g.name_scope(name):
            h = h @ g.parameter("kernel", shape=(h.shape[1], width)) + g.parameter(
                "bias", np.zeros(width, np.float32)
            )
            if name != "head":
                h = ge.relu(h)
    loss = ge.softmax_cross_entropy(h, y)
    g.set_training(loss, batch_size=16, epochs=1, learning_rate=0.1)
    return g


@pytest.mark.parametrize(
    "pattern, want",
    [
        ("dense2", ["dense2/kernel", "dense2/bias"]),
        ("dense2/", ["dense2/kernel", "dense2/bias"]),
        ("dense2/*", ["dense2/kernel", "dense2/bias"]),
        ("*/bias", ["dense1/bias", "dense2/bias", "head/bias"]),
        ("dense?/kernel", ["dense1/kernel", "dense2/kernel"]),
        ("head/kernel", ["head/kernel"]),
    ],
)
def test_patterns_select_by_name_scope_and_glob(pattern, want):
    assert select_parameters(_three_layers(), [pattern]) == want


def test_a_scope_matches_pytorch_style_dotted_names():
    assert matches("fc2.weight", "fc2") and not matches("fc20.weight", "fc2")
    assert matches("encoder.layer.0.bias", "encoder.layer")
    # Globs and scopes written with "/", as g.summary() shows the scopes.
    assert matches("enc.0.weight", "enc/*") and matches("head.bias", "*/bias")
    assert matches("encoder.layer.0.bias", "encoder/layer/0")
    assert not matches("encoder.layer.0.bias", "enc/*") and not matches("head.weight", "*/bias")
    assert not matches("fc20.weight", "fc2/*")


def test_a_pattern_that_selects_nothing_lists_the_names():
    with pytest.raises(ge.GraphError) as err:
        select_parameters(_three_layers(), ["dense3"])
    message = str(err.value)
    assert "'dense3' matches no parameter" in message
    assert "'dense1/kernel'" in message and "scopes: 'dense1', 'dense2', 'head'" in message


def test_trainable_and_frozen_in_training():
    data = {
        "x": np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32),
        "y": np.arange(32) % 3,
    }
    for settings, moved in [
        ({"trainable": ["dense2"]}, {"dense2/kernel", "dense2/bias"}),
        ({"frozen": ["*/bias", "dense1"]}, {"dense2/kernel", "head/kernel"}),
    ]:
        g = _three_layers()
        before = {k: v.copy() for k, v in g.values.items()}
        ge.train(g, data, progress=False, **settings)
        changed = {k for k in before if not np.array_equal(before[k], g.values[k])}
        assert changed == moved, settings
    with pytest.raises(ge.TrainingError, match="frozen pattern 'dense9' matches no parameter"):
        ge.train(_three_layers(), data, progress=False, frozen=["dense9"])


def test_trainable_patterns_are_stored_in_the_file(tmp_path):
    g = _three_layers()
    g.set_training(g.training.loss, trainable=["dense*"], frozen=["*/bias"])
    g.save(tmp_path / "m.pb")
    spec = ge.load(tmp_path / "m.pb").training
    assert spec.trainable == ("dense*",) and spec.frozen == ("*/bias",)


def test_running_statistics_are_state():
    g = classifier(batch_norm=True)
    assert state_parameters(g) == ["hidden/running_mean", "hidden/running_var"]
    ge.train(g, classifier_data(64), progress=False, epochs=1)


def test_an_imported_batch_norm_has_non_trainable_statistics(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

    path = tmp_path / "net.onnx"
    torch.onnx.export(
        Net().eval(),
        torch.zeros(1, 1, 5, 5),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}},
        dynamo=False,
        do_constant_folding=False,
    )
    g = ge.from_onnx(path)
    flags = {p.name: p.attrs["trainable"] for p in g.parameters()}
    # PyTorch's exporter merges the equal fresh tensors (weight and running_var are
    # ones, bias and running_mean zeros) behind Identity nodes: they come back apart.
    assert flags == {
        "conv.weight": True,
        "conv.bias": True,
        "bn.weight": True,
        "bn.bias": True,
        "bn.running_mean": False,
        "bn.running_var": False,
    }
