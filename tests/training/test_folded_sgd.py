"""Plain SGD folded into the training plan (graphengine.training.folded_sgd): the
folded updates train as the optimizer's, to float rounding (and bit for bit
through the kernel's numpy path); what must not fold keeps the optimizer."""

import numpy as np
import pytest

import graphengine as ge
from graphengine import blas
from graphengine.training import Trainer, folded_sgd
from graphengine.training.data import epoch_order
from graphengine.training.folded_sgd import FoldedSGD
from graphengine.training.trainer import compile_training_plan

from ..train_models import assert_bitwise_equal, classifier, classifier_data, parameters

needs_blas = pytest.mark.skipif(not blas.available(), reason="numpy's OpenBLAS not found")


@pytest.fixture
def fold_all(monkeypatch):
    """Fold every weight, however small (the tests' models are)."""
    monkeypatch.setattr(folded_sgd, "FOLD_MIN_ELEMENTS", 0)


def sgd_classifier(**settings):
    g = classifier(dropout=0.0)
    options = {
        "optimizer": "sgd",
        "learning_rate": 0.2,
        "schedule": "cosine",
        "batch_size": 16,
        "epochs": 3,
        "seed": 7,
        **settings,
    }
    g.set_training("loss", metrics=["loss", "accuracy"], **options)
    return g


def train(monkeypatch, enabled=True, **settings):
    monkeypatch.setattr(blas, "ENABLED", enabled)
    g = sgd_classifier(**settings)
    trainer = Trainer(g, classifier_data(100), progress=False)
    result = trainer.fit()
    monkeypatch.setattr(blas, "ENABLED", True)
    return g, trainer, [r["train_loss"] for r in result.history]


@needs_blas
def test_folded_updates_train_as_the_optimizer_to_float_rounding(monkeypatch, fold_all):
    initial = parameters(sgd_classifier())
    folded_graph, folded, folded_losses = train(monkeypatch)
    plain_graph, plain, plain_losses = train(monkeypatch, enabled=False)
    # The weights' gradients are products (folded); the biases' are not.
    assert folded.train_plan.updates == ("hidden/w", "out/w")
    assert plain.train_plan.updates == () and len(plain.train_plan.fetches) == 6
    assert len(folded.train_plan.fetches) == 4  # loss, two bias gradients, predictions
    np.testing.assert_allclose(folded_losses, plain_losses, rtol=1e-5)
    for name, value in parameters(plain_graph).items():
        got = parameters(folded_graph)[name]
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=name)
        # Trained: an update that did nothing (or twice as much) would be far off.
        assert np.abs(value - initial[name]).max() > 1e-2, name


@needs_blas
def test_the_folded_kernel_without_blas_gives_the_unfolded_bits(monkeypatch, fold_all):
    """With BLAS refusing (as for operands it cannot read in place), the folded
    update does the optimizer's arithmetic: the same bits."""
    monkeypatch.setattr(blas, "add_product", lambda *args: False)
    folded_graph, folded, _ = train(monkeypatch)
    plain_graph, _, _ = train(monkeypatch, enabled=False)
    assert folded.train_plan.updates == ("hidden/w", "out/w")
    assert_bitwise_equal(parameters(folded_graph), parameters(plain_graph))


@needs_blas
@pytest.mark.parametrize(
    "settings",
    [
        {"momentum": 0.9},
        {"weight_decay": 1e-3},
        {"clip_value": 1.0},
        {"clip_global_norm": 1.0},
        {"optimizer": "adam"},
        {"schedule": "one_cycle", "cycle_momentum": True},
    ],
    ids=["momentum", "weight_decay", "clip_value", "clip_global_norm", "adam", "one_cycle"],
)
def test_only_plain_sgd_folds(monkeypatch, fold_all, settings):
    _, trainer, _ = train(monkeypatch, **settings)
    assert trainer.train_plan.updates == ()
    assert len(trainer.train_plan.fetches) == 6


@needs_blas
def test_small_weights_keep_the_optimizer_by_default(monkeypatch):
    _, trainer, _ = train(monkeypatch)
    assert trainer.train_plan.updates == ()


@needs_blas
def test_a_non_finite_loss_leaves_folded_weights_as_they_were(monkeypatch, fold_all):
    data = classifier_data(100)
    g = sgd_classifier()
    # In step 3's batch (of 16).
    data["x"][epoch_order(g.training.seed, 0, 100)[40]] = np.nan
    trainer = Trainer(g, data, progress=False)
    assert trainer.train_plan.updates == ("hidden/w", "out/w")
    before = []
    trainer.callbacks.append(_Snapshot(before))
    with pytest.raises(ge.TrainingError, match="the loss is nan at step 3"):
        trainer.fit()
    assert len(before) == 2
    assert_bitwise_equal(parameters(g), before[-1])  # as after step 2


class _StopAt(ge.training.Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, info):
        if info.step == self.step:
            trainer.stop()


class _Snapshot(ge.training.Callback):
    def __init__(self, into):
        self.into = into

    def on_step(self, trainer, info):
        self.into.append(parameters(trainer.graph))


@needs_blas
def test_resuming_a_folded_run_ends_bit_for_bit_like_an_uninterrupted_one(
    tmp_path, monkeypatch, fold_all
):
    data = classifier_data(100)
    reference = sgd_classifier()
    Trainer(reference, data, progress=False).fit()
    first = sgd_classifier()
    stopped = Trainer(
        first, data, checkpoint_dir=tmp_path, callbacks=[_StopAt(9)], progress=False
    ).fit()
    assert stopped.stopped
    resumed = sgd_classifier()
    trainer = Trainer(resumed, data, checkpoint_dir=tmp_path, progress=False)
    assert trainer.train_plan.updates == ("hidden/w", "out/w")
    trainer.fit(resume=tmp_path)
    assert_bitwise_equal(parameters(resumed), parameters(reference))


def _gradient_graph():
    g = sgd_classifier()
    names = ["hidden/w", "hidden/b", "out/w", "out/b"]
    tg = ge.gradients(g, "loss", names)
    tg.values = g.values
    return g, tg


@needs_blas
def test_a_gradient_fetched_for_something_else_is_not_folded(fold_all):
    g, tg = _gradient_graph()
    info = tg.gradient
    fetches = [info.loss, info.grads["hidden/w"], info.grads["out/w"], info.grads["out/w"]]
    folded = FoldedSGD({p: info.grads[p] for p in ("hidden/w", "out/w")}, info.loss)
    plan = compile_training_plan(tg, fetches, ["x", "y"], folded=folded)
    assert folded.params == plan.updates == ("hidden/w",)
    assert plan.fetches == (info.loss, info.grads["out/w"], info.grads["out/w"])


@needs_blas
def test_a_fetched_parameter_is_not_folded(fold_all):
    g, tg = _gradient_graph()
    info = tg.gradient
    fetches = [info.loss, info.grads["hidden/w"], "hidden/w"]
    folded = FoldedSGD({"hidden/w": info.grads["hidden/w"]}, info.loss)
    plan = compile_training_plan(tg, fetches, ["x", "y"], folded=folded)
    assert plan.updates == () and len(plan.fetches) == 3


def test_without_blas_nothing_folds(monkeypatch, fold_all):
    monkeypatch.setattr(blas, "ENABLED", False)
    g, tg = _gradient_graph()
    info = tg.gradient
    folded = FoldedSGD(dict(info.grads), info.loss)
    fetches = [info.loss, *info.grads.values()]
    plan = compile_training_plan(tg, fetches, ["x", "y"], folded=folded)
    assert folded.params == plan.updates == () and len(plan.fetches) == 5


def test_packed_parameters_train_to_the_unpacked_bits(monkeypatch, tmp_path):
    """The optimizer's parameters as views of one array (and their gradients'
    buffers likewise): two numpy calls per step, the loop's bits."""
    monkeypatch.setattr(blas, "ENABLED", False)  # nothing folds: all four are packed
    packed_graph = sgd_classifier()
    packed = Trainer(packed_graph, classifier_data(100), progress=False)
    packed.fit()
    monkeypatch.setattr(FoldedSGD, "pack", lambda self, values: [])
    loose_graph, _, _ = train(monkeypatch, enabled=False)
    assert_bitwise_equal(parameters(packed_graph), parameters(loose_graph))
    values = packed_graph.values
    block = values["hidden/w"].base
    assert block is not None and all(values[p].base is block for p in packed.param_names)
    assert packed.optimizer._packed_arrays is not None  # the two-call update ran
    # A packed graph saves and loads as any other.
    packed_graph.save(tmp_path / "m.pb")
    assert_bitwise_equal(parameters(ge.load(tmp_path / "m.pb")), parameters(packed_graph))
