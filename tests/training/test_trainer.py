"""The training loop in Python: learning, callbacks, the metrics log, checkpoints,
resuming bit for bit, refusals, non-finite losses and batch-norm statistics."""

import json

import numpy as np
import pytest

import graphengine as ge
from graphengine.errors import TrainingError
from graphengine.training import Callback, Trainer, evaluate
from graphengine.training.checkpoint import list_checkpoints, read_checkpoint
from graphengine.training.data import epoch_order

from ..train_models import assert_bitwise_equal, classifier, classifier_data, parameters


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None):
        self.steps, self.epochs, self.stop_at = [], [], stop_at

    def on_step(self, trainer, info):
        self.steps.append(info)
        if info.step == self.stop_at:
            trainer.stop()

    def on_epoch(self, trainer, record):
        self.epochs.append(record)


def test_training_learns_and_updates_the_graph_in_place():
    g = classifier(dropout=0.0)
    data = classifier_data()
    before = evaluate(g, data)
    result = ge.train(g, data, epochs=15, progress=False)
    after = evaluate(g, data)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.9
    assert result.steps == 15 * 8 and len(result.history) == 15 and not result.stopped
    assert result.spec.epochs == 15 and g.training.epochs == 3  # overrides leave g as is


def test_callbacks_see_every_step_and_epoch_and_can_stop():
    rec = Recorder()
    Trainer(classifier(), classifier_data(100), callbacks=[rec], progress=False).fit()
    # 100 examples in batches of 16: 6 full batches and one of 4, for 3 epochs.
    assert [s.step for s in rec.steps] == list(range(1, 22))
    assert [s.batch_size for s in rec.steps[:7]] == [16] * 6 + [4]
    assert [s.batch for s in rec.steps[:7]] == list(range(1, 8))
    assert [r["epoch"] for r in rec.epochs] == [1, 2, 3]
    assert all(s.learning_rate == 0.02 for s in rec.steps)

    stopper = Recorder(stop_at=9)
    result = Trainer(classifier(), classifier_data(100), callbacks=[stopper], progress=False).fit()
    assert result.steps == 9 and result.stopped and len(result.history) == 1


def test_drop_last_leaves_out_the_partial_batch():
    rec = Recorder()
    Trainer(
        classifier(), classifier_data(100), callbacks=[rec], drop_last=True, progress=False
    ).fit()
    assert len(rec.steps) == 18 and {s.batch_size for s in rec.steps} == {16}


def test_drop_last_travels_in_the_file(tmp_path):
    g = classifier()
    g.set_training("loss", drop_last=True, batch_size=16, epochs=2)
    g.save(tmp_path / "m.pb")
    loaded = ge.load(tmp_path / "m.pb")
    assert loaded.training.drop_last is True
    rec = Recorder()
    Trainer(loaded, classifier_data(100), callbacks=[rec], progress=False).fit()
    assert {s.batch_size for s in rec.steps} == {16}
    rec = Recorder()  # a setting given when training wins over the file
    Trainer(loaded, classifier_data(100), callbacks=[rec], progress=False, drop_last=False).fit()
    assert {s.batch_size for s in rec.steps} == {16, 4}


def test_metrics_log_has_one_json_line_per_epoch(tmp_path):
    log = tmp_path / "metrics.jsonl"
    val = classifier_data(40, seed=1)
    result = ge.train(classifier(), classifier_data(), val=val, log=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows == result.history
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["step"] for r in rows] == [8, 16, 24]
    for key in (
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "examples_per_second",
    ):
        assert all(isinstance(r[key], float) for r in rows), key
    # The validation figures are those of an evaluation after the last epoch.
    assert rows[-1]["val_loss"] == pytest.approx(evaluate(result.graph, val)["loss"])


def test_training_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        g = classifier()
        ge.train(g, classifier_data(), progress=False)
        runs.append(parameters(g))
    assert_bitwise_equal(*runs)
    g = classifier()
    ge.train(g, classifier_data(), seed=8, progress=False)
    assert not np.array_equal(parameters(g)["out/w"], runs[0]["out/w"])


def test_checkpoints_are_written_atomically_and_the_newest_kept(tmp_path):
    g = classifier()
    Trainer(
        g,
        classifier_data(),
        checkpoint_dir=tmp_path,
        checkpoint_every=5,
        keep_checkpoints=2,
        progress=False,
    ).fit()
    files = list_checkpoints(tmp_path)
    assert [f.name for f in files] == ["ckpt-000000020.npz", "ckpt-000000024.npz"]
    assert not list(tmp_path.glob(".*tmp*"))
    last = read_checkpoint(files[-1])
    assert (last.step, last.epoch, last.position) == (24, 3, 0)
    assert_bitwise_equal(last.params, g.values)
    assert set(last.optimizer["slots"]) == {"m", "v"}
    assert last.config["optimizer.name"] == "adam"
    mid = read_checkpoint(files[0])
    assert (mid.step, mid.epoch, mid.position) == (20, 2, 64)
    assert sorted(mid.order.tolist()) == list(range(120))
    # Nothing in a checkpoint needs pickle.
    with np.load(files[0], allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


@pytest.mark.parametrize("stop_at", [5, 8, 13])
def test_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path, stop_at):
    data = classifier_data(100)
    reference = classifier()
    ge.train(reference, data, progress=False)

    first = classifier()
    stopped = Trainer(
        first, data, checkpoint_dir=tmp_path, callbacks=[Recorder(stop_at)], progress=False
    ).fit()
    assert stopped.stopped
    resumed = classifier()  # a fresh process would load the model file again
    result = ge.train(resumed, data, resume=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert result.steps == 21
    assert_bitwise_equal(parameters(resumed), parameters(reference))


def test_resume_keeps_the_log_free_of_repeated_epochs(tmp_path):
    data = classifier_data(100)
    log = tmp_path / "metrics.jsonl"
    reference = ge.train(classifier(), data, progress=False)
    Trainer(
        classifier(),
        data,
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
        log=log,
        callbacks=[Recorder(stop_at=16)],
        progress=False,
    ).fit()
    # Pretend the run was killed after checkpoint 15 but before step 16 ended: resume
    # from the newest checkpoint written before the last epoch record.
    ge.train(classifier(), data, resume=tmp_path, checkpoint_dir=tmp_path, log=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in reference.history]


def test_resume_against_another_graph_is_refused(tmp_path):
    Trainer(classifier(), classifier_data(), checkpoint_dir=tmp_path, progress=False).fit()
    other = classifier(hidden=8)
    with pytest.raises(TrainingError) as info:
        ge.train(other, classifier_data(), resume=tmp_path, progress=False)
    message = str(info.value)
    assert "belongs to another graph" in message and "ckpt-000000024.npz" in message
    assert "Resume with the model file the checkpoint was made from" in message


def test_resume_reports_and_applies_changed_settings(tmp_path, capsys):
    data = classifier_data(100)
    Trainer(
        classifier(),
        data,
        checkpoint_dir=tmp_path,
        callbacks=[Recorder(stop_at=10)],
        progress=False,
    ).fit()
    rec = Recorder()
    result = ge.train(
        classifier(),
        data,
        resume=tmp_path,
        learning_rate=0.005,
        epochs=4,
        callbacks=[rec],
        progress=False,
    )
    err = capsys.readouterr().err
    assert "resuming from" in err and "step 10" in err
    assert "optimizer.learning_rate: 0.02 -> 0.005" in err and "epochs: 3 -> 4" in err
    assert {s.learning_rate for s in rec.steps} == {0.005}  # applied, not ignored
    assert result.steps == 28 and rec.steps[0].step == 11


def test_resume_with_another_optimizer_starts_its_state_afresh(tmp_path, capsys):
    data = classifier_data(100)
    Trainer(
        classifier(),
        data,
        checkpoint_dir=tmp_path,
        callbacks=[Recorder(stop_at=10)],
        progress=False,
    ).fit()
    ge.train(classifier(), data, resume=tmp_path, optimizer="sgd", momentum=0.9, progress=False)
    err = capsys.readouterr().err
    assert "optimizer.name: 'adam' -> 'sgd'" in err and "state starts afresh" in err


def test_resume_from_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="holds no checkpoint"):
        ge.train(classifier(), classifier_data(), resume=tmp_path, progress=False)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    data = classifier_data(100)
    g = classifier(dropout=0.0)
    # Poison the 41st example of the first epoch's order: it falls in step 3's batch.
    data["x"][epoch_order(g.training.seed, 0, 100)[40]] = np.nan
    trainer = Trainer(g, data, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    assert "the loss is nan at step 3 (epoch 1, batch 3)" in message
    assert "ckpt-000000002.npz', is intact" in message
    last = read_checkpoint(list_checkpoints(tmp_path)[-1])
    assert last.step == 2
    assert all(np.isfinite(v).all() for v in last.params.values())
    assert_bitwise_equal(last.params, g.values)  # the values from before the bad step


def test_non_finite_gradient_norm_stops_with_clipping():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    loss = ge.mean(x * ge.sqrt(w))  # 0 at w = 0, but d/dw = x / (2 sqrt(w)) = inf
    with pytest.raises(TrainingError, match=r"the gradient norm is inf at step 1 \(epoch 1"):
        ge.train(
            g, {"x": np.ones(4, np.float32)}, loss=loss.name, clip_global_norm=1.0, progress=False
        )
    assert float(g.values["w"]) == 0.0


def test_clipping_bounds_each_update():
    g = classifier(dropout=0.0)
    before = parameters(g)
    ge.train(
        g,
        classifier_data(16),
        optimizer="sgd",
        learning_rate=1.0,
        clip_global_norm=0.01,
        epochs=1,
        progress=False,
    )
    moved = np.sqrt(sum(np.sum((g.values[k] - before[k]) ** 2) for k in before))
    assert moved <= 0.01 * (1 + 1e-4)


def test_batch_norm_running_statistics_follow_the_batches():
    g = classifier(dropout=0.0, batch_norm=True)
    data = classifier_data(32)
    w, b = g.values["hidden/w"].copy(), g.values["hidden/b"].copy()
    ge.train(g, data, batch_size=32, epochs=1, progress=False)  # one full-batch step
    h = data["x"] @ w + b
    assert np.allclose(g.values["hidden/running_mean"], 0.2 * h.mean(axis=0), atol=1e-6)
    assert np.allclose(g.values["hidden/running_var"], 0.8 + 0.2 * h.var(axis=0), atol=1e-5)
    # Inference then uses them: evaluation runs in inference mode.
    assert np.isfinite(evaluate(g, data)["loss"])


def test_data_that_does_not_fit_is_refused_before_training(tmp_path):
    data = classifier_data()
    data["x"] = data["x"].astype(np.float64)
    g = classifier()
    before = parameters(g)
    with pytest.raises(TrainingError, match="array 'x' for placeholder 'x' has dtype float64"):
        ge.train(g, data, progress=False)
    assert_bitwise_equal(parameters(g), before)


def test_plain_graph_trains_with_its_only_scalar_output():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    ge.mean((x * w - x * 2.0) ** 2.0)
    assert g.training is None
    ge.train(
        g,
        {"x": np.linspace(-1, 1, 32, dtype=np.float32)},
        learning_rate=0.5,
        epochs=30,
        progress=False,
    )
    assert float(g.values["w"]) == pytest.approx(2.0, abs=1e-3)


def test_unknown_setting_and_unclear_loss_are_refused():
    g = classifier()
    with pytest.raises(TrainingError, match="unknown training setting.*lr"):
        Trainer(g, classifier_data(), lr=0.1)
    plain = ge.Graph()
    x = plain.placeholder("x", (None,))
    ge.sum(x)
    ge.mean(x)
    with pytest.raises(TrainingError, match="name it with --loss"):
        ge.train(plain, {"x": np.ones(4, np.float32)})


def test_accuracy_needs_predictions_it_can_find():
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    loss = ge.mean((x * w) ** 2.0)
    with pytest.raises(TrainingError, match="cannot tell the predictions and labels"):
        g.set_training(loss, metrics=["loss", "accuracy"])


def test_set_training_survives_a_save_and_load(tmp_path):
    g = classifier()
    g.save(tmp_path / "model.pb")
    loaded = ge.load(tmp_path / "model.pb")
    assert loaded.training == g.training
    assert loaded.training.predictions == "out/add" and loaded.training.labels == "y"
    ge.train(loaded, classifier_data(), progress=False)
    loaded.save(tmp_path / "trained.pb")
    again = ge.load(tmp_path / "trained.pb")
    assert_bitwise_equal(parameters(again), parameters(loaded))


def test_progress_bar_draws_on_a_terminal_only():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen, pipe = Terminal(), io.StringIO()
    ge.train(classifier(), classifier_data(), stream=screen)
    ge.train(classifier(), classifier_data(), stream=pipe)
    assert "\r" in screen.getvalue() and "ex/s" in screen.getvalue()
    assert "[" in screen.getvalue() and "loss" in screen.getvalue()
    assert "\r" not in pipe.getvalue()
    assert pipe.getvalue().splitlines()[0].startswith("epoch 1/3  step 8  train_loss")
    quiet = io.StringIO()
    ge.train(classifier(), classifier_data(), stream=quiet, progress=False)
    assert quiet.getvalue() == ""


def test_validating_on_the_training_data_is_pointed_out(capsys):
    data = classifier_data()
    ge.train(classifier(), data, val=data, progress=False)
    assert "the validation data are the training data" in capsys.readouterr().err


def test_parameters_the_loss_ignores_and_running_statistics_are_left_alone(capsys):
    g = classifier(dropout=0.0, batch_norm=True)
    g.parameter("unused", np.ones(3, np.float32))
    # Running statistics marked trainable by mistake are still only updated from batches.
    g2 = classifier(dropout=0.0, batch_norm=True)
    for graph in (g, g2):
        ge.train(
            graph,
            classifier_data(32),
            batch_size=32,
            epochs=1,
            optimizer="adamw",
            weight_decay=0.5,
            trainable=[n.name for n in graph.parameters()],
            progress=False,
        )
    err = capsys.readouterr().err
    assert "does not depend on 'unused', so training leaves it as it is" in err
    assert np.array_equal(g.values["unused"], np.ones(3, np.float32))
    assert "not training 'hidden/running_mean', 'hidden/running_var'" in err
    h = classifier_data(32)["x"] @ classifier(batch_norm=True).values["hidden/w"]
    assert np.allclose(g2.values["hidden/running_mean"], 0.2 * h.mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_fused_training_plan_trains_as_the_unfused_gradient_graph(batch_norm, monkeypatch):
    import graphengine.training.trainer as trainer_module

    def train(fuse):
        if not fuse:
            monkeypatch.setattr(trainer_module, "TRAINING_PASSES", ())
        g = classifier(dropout=0.2, batch_norm=batch_norm)
        trainer = Trainer(g, classifier_data(100), progress=False)
        result = trainer.fit()
        monkeypatch.undo()
        ops = {step.node.op for step in trainer.train_plan.steps}
        return parameters(g), [r["train_loss"] for r in result.history], ops

    fused, fused_losses, fused_ops = train(True)
    plain, plain_losses, plain_ops = train(False)
    assert "dense" in fused_ops and "dense" not in plain_ops
    assert ("batch_norm_grad" in fused_ops) == batch_norm
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5)
    for name, value in plain.items():  # running statistics included
        np.testing.assert_allclose(fused[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
