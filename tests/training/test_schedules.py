"""Each learning-rate schedule against its formula at chosen steps (and against
PyTorch's scheduler where one is the same schedule), and the schedules in the
file."""

import math

import numpy as np
import pytest

import graphengine as ge
from graphengine.training.schedules import (
    Exponential,
    OneCycle,
    Piecewise,
    Polynomial,
    ReduceOnPlateau,
    make_schedule,
)
from graphengine.training_spec import ScheduleSpec

STEPS = [0, 1, 7, 50, 99, 100, 150]


def test_exponential_formula():
    s = Exponential(0.1, step_size=10, gamma=0.5)
    for k in STEPS:
        assert s(k) == pytest.approx(0.1 * 0.5 ** (k / 10), rel=1e-12)


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_formula(power):
    s = Polynomial(0.1, total_steps=100, power=power, min_lr=0.001)
    for k in STEPS:
        t = min(k, 100) / 100
        assert s(k) == pytest.approx(0.001 + (0.1 - 0.001) * (1 - t) ** power, rel=1e-12)


def test_one_cycle_formula():
    s = OneCycle(0.4, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100)
    start, low, peak_step = 0.04, 0.04 / 100, 24.0
    assert s(0) == pytest.approx(start) and s(24) == pytest.approx(0.4)
    assert s(99) == pytest.approx(low)
    k = 10
    assert s(k) == pytest.approx(0.4 + (start - 0.4) / 2 * (math.cos(math.pi * k / peak_step) + 1))
    k = 60
    frac = (k - peak_step) / (99 - peak_step)
    assert s(k) == pytest.approx(low + (0.4 - low) / 2 * (math.cos(math.pi * frac) + 1))


def test_one_cycle_and_polynomial_match_pytorch():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.4)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.4,
        total_steps=100,
        pct_start=0.25,
        div_factor=10,
        final_div_factor=100,
        cycle_momentum=False,
    )
    ours = OneCycle(0.4, 100, 0.25, 10, 100)
    for k in range(100):
        assert ours(k) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), k
        opt.step()
        ref.step()
    opt = torch.optim.SGD([param], lr=0.1)
    ref = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=40, power=2.0)
    ours = Polynomial(0.1, 40, 2.0)
    for k in range(45):
        assert ours(k) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), k
        opt.step()
        ref.step()


def test_piecewise_formula():
    s = Piecewise((10, 20), (0.1, 0.01, 0.001))
    assert [s(k) for k in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_reduce_on_plateau_follows_keras():
    s = ReduceOnPlateau(1.0, "val_loss", patience=2, gamma=0.5, min_lr=0.1, min_delta=0.01)
    rates = []
    for loss in (1.0, 0.9, 0.895, 0.899, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8):
        s.observe({"val_loss": loss})
        rates.append(s(0))
    # 0.895 and 0.899 are within min_delta of 0.9: a plateau of 2 halves the rate.
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1]
    with pytest.raises(ge.TrainingError, match="cannot monitor 'val_loss'"):
        s.observe({"train_loss": 1.0})


def test_warmup_applies_to_every_step_schedule():
    s = make_schedule(
        ScheduleSpec("exponential", step_size=10, gamma=0.5, warmup_steps=4), 0.1, 100
    )
    assert s(0) == pytest.approx(0.1 * 0.5**0 / 4) and s(3) == pytest.approx(0.1 * 0.5**0.3)


def test_bad_schedules_are_refused_naming_the_field():
    with pytest.raises(ge.GraphError, match="schedule.values needs one more entry"):
        ScheduleSpec("piecewise", boundaries=(10,), values=(0.1,))
    with pytest.raises(ge.GraphError, match="schedule.boundaries must increase"):
        ScheduleSpec("piecewise", boundaries=(10, 5), values=(0.1, 0.2, 0.3))
    with pytest.raises(ge.GraphError, match="schedule.step_size"):
        ScheduleSpec("exponential")


@pytest.mark.parametrize(
    "settings",
    [
        {"schedule": "exponential", "step_size": 3, "gamma": 0.9},
        {"schedule": "polynomial", "power": 2.0, "min_lr": 1e-4},
        {"schedule": "one_cycle", "pct_start": 0.4, "div_factor": 5.0, "final_div_factor": 50.0},
        {"schedule": "piecewise", "boundaries": [4, 8], "values": [0.1, 0.05, 0.01]},
        {
            "schedule": "reduce_on_plateau",
            "plateau_patience": 1,
            "gamma": 0.5,
            "plateau_monitor": "train_loss",
        },
    ],
)
def test_schedules_travel_in_the_file_and_drive_training(tmp_path, settings):
    g = ge.Graph()
    x = g.placeholder("x", (None,))
    w = g.parameter("w", np.zeros((), np.float32))
    g.set_training(
        ge.mean((x * w - x * 3.0) ** 2.0), batch_size=8, epochs=3, learning_rate=0.1, **settings
    )
    g.save(tmp_path / "m.pb")
    loaded = ge.load(tmp_path / "m.pb")
    assert loaded.training == g.training
    data = {"x": np.linspace(-1, 1, 32, dtype=np.float32)}
    rates = []

    class Rates(ge.Callback):
        def on_step(self, trainer, info):
            rates.append(info.learning_rate)

    ge.train(loaded, data, callbacks=[Rates()], progress=False)
    schedule = make_schedule(loaded.training.schedule, 0.1, 12, "train_loss")
    if not isinstance(schedule, ReduceOnPlateau):
        assert rates == pytest.approx([schedule(k) for k in range(12)], rel=1e-12)
    else:
        assert len(rates) == 12 and rates[0] == 0.1
