"""ge.nn layers, the parameter summary (g.summary(), inspect --params), the
progress bar's ETA and the error for a tuple of outputs used as one tensor."""

import io
import json

import numpy as np
import pytest

import graphengine as ge
from graphengine.cli.main import main
from graphengine.training.progress import ProgressBar


def _net():
    g = ge.Graph("net")
    x = g.placeholder("x", (None, 1, 6, 5))
    h = ge.nn.conv2d(x, 4, (3, 2), padding=1, activation="relu")
    h = ge.nn.batch_norm(h, momentum=0.8)
    h = ge.reshape(h, (-1, 4 * 6 * 6))
    h = ge.nn.dense(h, 7, activation="relu")
    h = ge.nn.layer_norm(ge.nn.dropout(h, 0.1))
    return g, ge.nn.dense(h, 3, name="head")


def test_layers_make_scoped_parameters_and_return_one_tensor():
    g, logits = _net()
    assert isinstance(logits, ge.Tensor) and logits.shape == ("N", 3)
    names = [p.name for p in g.parameters()]
    assert names == [
        "conv2d/kernel",
        "conv2d/bias",
        "batch_norm/gamma",
        "batch_norm/beta",
        "batch_norm/running_mean",
        "batch_norm/running_var",
        "dense/kernel",
        "dense/bias",
        "layer_norm/scale",
        "layer_norm/bias",
        "head/kernel",
        "head/bias",
    ]
    assert g.values["conv2d/kernel"].shape == (4, 1, 3, 2)
    assert not g.node("batch_norm/running_var").attrs["trainable"]
    kernel = g.values["dense/kernel"]
    assert kernel.std() == pytest.approx(np.sqrt(2 / 144), rel=0.2)  # He for relu
    assert np.all(g.values["dense/bias"] == 0) and np.all(g.values["layer_norm/scale"] == 1)
    x = np.random.default_rng(0).normal(size=(5, 1, 6, 5)).astype(np.float32)
    assert ge.run(g, logits, {"x": x}).shape == (5, 3)


def test_a_second_layer_of_a_kind_gets_a_numbered_scope():
    g = ge.Graph()
    x = g.placeholder("x", (None, 4))
    ge.nn.dense(ge.nn.dense(x, 4), 2)
    assert [p.name for p in g.parameters()] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]


def test_embedding_and_its_errors():
    g = ge.Graph()
    ids = g.placeholder("ids", (None, 5), "int64")
    e = ge.nn.embedding(ids, 11, 4)
    assert e.shape == ("N", 5, 4)
    out = ge.run(g, e, {"ids": np.array([[0, 1, 2, 3, 10]])})
    np.testing.assert_array_equal(out[0, 4], g.values["embedding/table"][10])
    with pytest.raises(ge.GraphError, match="must be integers"):
        ge.nn.embedding(g.placeholder("f", (None,)), 3, 2)
    with pytest.raises(ge.GraphError, match="unknown activation 'swish'"):
        ge.nn.dense(g.placeholder("z", (None, 2)), 2, activation="swish")


def test_layers_train_with_running_statistics_kept_up():
    g, logits = _net()
    ge.add_loss(g, "cross_entropy", logits, "y", example=np.zeros(3, np.int64))
    rng = np.random.default_rng(1)
    data = {"x": rng.normal(size=(48, 1, 6, 5)).astype(np.float32), "y": rng.integers(0, 3, 48)}
    ge.train(g, data, epochs=2, batch_size=16, progress=False)
    assert not np.allclose(g.values["batch_norm/running_mean"], 0)


def _bn_inputs(g):
    x = g.placeholder("x", (2, 3))  # a batch of two: slicing rows would unpack "fine"
    params = [g.parameter(n, np.full(3, 0.5, np.float32)) for n in ("g", "b", "m", "v")]
    return x, params


def test_the_by_product_ops_return_one_tensor_and_every_output_on_request():
    g = ge.Graph()
    x, params = _bn_inputs(g)
    labels = g.placeholder("y", (2,), "int64")
    calls = [
        (lambda **k: ge.dropout(x, 0.5, **k), "return_mask", ("y", "mask")),
        (lambda **k: ge.batch_norm(x, *params, **k), "return_stats", ("y", "mean", "var")),
        (
            lambda **k: ge.softmax_cross_entropy(x, labels, **k),
            "return_log_prob",
            ("loss", "log_prob"),
        ),
        (
            lambda **k: ge.layer_norm(x, params[0], params[1], **k),
            "return_stats",
            ("y", "mean", "inv_std"),
        ),
    ]
    for build, flag, names in calls:
        one = build()
        assert isinstance(one, ge.Tensor) and one.index == 0
        every = build(**{flag: True})
        assert isinstance(every, tuple) and [t.index for t in every] == list(range(len(names)))
        assert ge.relu(one).shape == one.shape  # the one tensor is usable as is
        # Code written for the tuple fails with the keyword to pass, not a slice.
        with pytest.raises(
            ge.GraphError, match=rf"to get \({', '.join(names)}\) write .*{flag}=True"
        ):
            _first, _second, *_rest = one
        with pytest.raises(ge.GraphError, match=f"{flag} must be True or False"):
            build(**{flag: "yes"})
    values = ge.run(
        g, ge.batch_norm(x, *params, return_stats=True)[1], {"x": np.ones((2, 3), np.float32)}
    )
    assert values.shape == (3,)


def test_a_tuple_of_outputs_used_as_one_tensor_says_how_to_take_one():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    h = ge.dropout(x, 0.5, return_mask=True)
    with pytest.raises(
        ge.GraphError,
        match=r"input 0 is the tuple of 2 outputs of 'dropout' "
        r"\(dropout: y, mask\).*y, mask = ge\.dropout\(\.\.\., return_mask=True\)\), "
        r"or leave out return_mask to get y alone",
    ):
        ge.relu(h)
    pool = ge.max_pool2d(g.placeholder("i", (None, 1, 4, 4)), 2, return_indices=True)
    with pytest.raises(ge.GraphError, match=r"y, indices = ge\.max_pool\(\.\.\.\)"):
        ge.relu(pool)


def test_files_saved_with_every_output_load_and_run_the_same(tmp_path):
    """The format did not change: a node still holds every output, and a file
    whose graph fetches the mask (as files written before this API do) loads."""
    g = ge.Graph()
    x, params = _bn_inputs(g)
    y, mean, var = ge.batch_norm(x, *params, return_stats=True)
    h, mask = ge.dropout(y, 0.5, return_mask=True)
    g.save(tmp_path / "m.pb")
    loaded = ge.load(tmp_path / "m.pb")
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    fetch = [h.name, mask.name, mean.name]
    before = ge.run(g, fetch, feeds, training=True, seed=3)
    after = ge.run(loaded, fetch, feeds, training=True, seed=3)
    for name in fetch:
        np.testing.assert_array_equal(before[name], after[name])


def test_summary_table_and_inspect_params(tmp_path, capsys):
    g, logits = _net()
    text = g.summary()
    lines = text.splitlines()
    assert lines[0] == "graph 'net': 12 parameters"
    assert lines[1].split() == ["scope", "parameter", "shape", "dtype", "count", "trainable"]
    row = next(line for line in lines if line.startswith("batch_norm  running_var"))
    assert row.split() == ["batch_norm", "running_var", "(4,)", "float32", "4", "no"]
    total = sum(v.size for v in g.values.values())
    assert lines[-1].startswith(f"total: {total:,} values ({total - 8:,} trainable, 8 not)")
    g.save(tmp_path / "m.pb")
    assert main(["inspect", str(tmp_path / "m.pb"), "--params"]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["inspect", str(tmp_path / "m.pb"), "--params", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {
        "name": "conv2d/kernel",
        "scope": "conv2d",
        "parameter": "kernel",
        "shape": [4, 1, 3, 2],
        "dtype": "float32",
        "count": 24,
        "bytes": 96,
        "trainable": True,
    }


def test_progress_bar_shows_an_eta():
    stream = io.StringIO()
    bar = ProgressBar(4, "epoch 1/1", stream=stream, enabled=True, min_interval=0.0)
    bar.update(1, step=1, loss=0.5, examples=8)
    assert "ETA 0:00" in stream.getvalue()
