"""Shared test configuration.

Tests marked ``slow`` run in CI (where ``CI`` is set) or with ``--runslow``;
elsewhere they are skipped with a reason, so the default run stays fast.
"""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI, or locally with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def model_graph():
    """A small graph holding every section a model file can: a placeholder with a
    symbolic dim, parameters in a scope (one not trainable), constants, attributes
    of several kinds, marked outputs, metadata, a gradient section and a training
    spec.  Built from the elementwise ops and ``sum`` only."""
    import numpy as np

    import graphengine as ge
    from graphengine.training_spec import OptimizerSpec, TrainingSpec

    g = ge.Graph("model")
    x = g.placeholder("x", shape=(None, 3))
    with g.name_scope("layer1"):
        w = g.parameter("w", np.array([0.5, -1.0, 2.0], np.float32))
        b = g.parameter("b", np.float32(0.25), trainable=False)
        h = ge.tanh(x * w + b)
    y = ge.clip(ge.leaky_relu(h, alpha=0.2), a_min=-0.5)
    loss = ge.sum(ge.cast(y, "float64"))
    g.mark_output(y)
    g.metadata.update({"author": "tests", "purpose": "round trips"})
    tg = ge.gradients(g, loss, wrt=["layer1/w"])
    tg.training = TrainingSpec(
        loss=loss.name,
        optimizer=OptimizerSpec("adam", learning_rate=1e-3),
        data_map={"x": "inputs"},
    )
    return tg


@pytest.fixture
def model_file(model_graph, tmp_path):
    """``model_graph`` saved as tmp_path/model.pb."""
    import graphengine as ge

    path = tmp_path / "model.pb"
    ge.save(model_graph, path)
    return path
