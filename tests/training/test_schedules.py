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
        {"schedule": "one_cycle", "cycle_momentum": False},
        {"schedule": "one_cycle", "base_momentum": 0.7, "max_momentum": 0.8},
        {"schedule": "piecewise", "boundaries": [4, 8], "values": [0.1, 0.05, 0.01]},
        {
            "schedule": "reduce_on_plateau",
            "plateau_patience": 1,
            "gamma": 0.5,
            "plateau_monitor": "train_loss",
            "plateau_cooldown": 2,
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


def test_one_cycle_cycles_momentum_as_pytorch():
    """The momentum of every step equals OneCycleLR's (cycle_momentum=True), for
    SGD's momentum and Adam's beta1."""
    torch = pytest.importorskip("torch")
    ours = OneCycle(0.4, 50, 0.3, 10, 100, base_momentum=0.8, max_momentum=0.9)
    for make, key in [
        (lambda p: torch.optim.SGD([p], lr=0.4, momentum=0.5), "momentum"),
        (lambda p: torch.optim.Adam([p], lr=0.4, betas=(0.5, 0.999)), "betas"),
    ]:
        opt = make(torch.nn.Parameter(torch.zeros(1)))
        ref = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=0.4,
            total_steps=50,
            pct_start=0.3,
            div_factor=10,
            final_div_factor=100,
            base_momentum=0.8,
            max_momentum=0.9,
        )
        for k in range(50):
            group = opt.param_groups[0]
            theirs = group["betas"][0] if key == "betas" else group["momentum"]
            assert ours.momentum(k) == pytest.approx(theirs, rel=1e-12), (key, k)
            assert ours(k) == pytest.approx(group["lr"], rel=1e-9), (key, k)
            opt.step()
            ref.step()
    assert OneCycle(0.4, 50, cycle_momentum=False).momentum(10) is None


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_with_one_cycle_matches_pytorch_step_for_step(optimizer):
    """One full batch per step, so the data order plays no part: the parameters
    after 30 one-cycle steps equal PyTorch's (SGD without momentum in the spec
    gets the cycled momentum, as PyTorch's SGD under OneCycleLR does)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=16)
    g = ge.Graph()
    xs, ys = g.placeholder("x", (None, 3), "float64"), g.placeholder("y", (None,), "float64")
    w = g.parameter("w", np.zeros(3, np.float64))
    g.set_training(
        ge.mean((ge.matmul(xs, w) - ys) ** 2.0),
        optimizer=optimizer,
        learning_rate=0.05,
        schedule="one_cycle",
        base_momentum=0.8,
        max_momentum=0.9,
        batch_size=16,
        epochs=30,
    )
    ge.train(g, {"x": x, "y": y}, progress=False)

    tw = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)([tw], lr=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.05, total_steps=30, base_momentum=0.8, max_momentum=0.9
    )
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        opt.zero_grad()
        torch.mean((tx @ tw - ty) ** 2).backward()
        opt.step()
        sched.step()
    np.testing.assert_allclose(g.values["w"], tw.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_reduce_on_plateau_cooldown_matches_pytorch():
    """PyTorch's patience p is our p + 1 (Keras's count); cooldown is the same."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    losses = np.concatenate([np.linspace(1.0, 0.5, 6), 0.5 + 0.01 * rng.random(30)])
    for patience, cooldown in [(1, 0), (2, 1), (1, 3), (3, 2)]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            factor=0.5,
            patience=patience - 1,
            cooldown=cooldown,
            threshold=0.02,
            threshold_mode="abs",
            min_lr=0.01,
        )
        ours = ReduceOnPlateau(
            1.0,
            "val_loss",
            patience=patience,
            gamma=0.5,
            min_lr=0.01,
            min_delta=0.02,
            cooldown=cooldown,
        )
        rates, theirs = [], []
        for loss in losses:
            ours.observe({"val_loss": float(loss)})
            ref.step(float(loss))
            rates.append(ours(0))
            theirs.append(opt.param_groups[0]["lr"])
        assert rates == pytest.approx(theirs, rel=1e-12), (patience, cooldown)
        assert len(set(theirs)) > 2  # the sequence does reduce, several times
    # The cooldown survives a checkpoint.
    s = ReduceOnPlateau(1.0, "val_loss", patience=1, cooldown=3)
    for loss in (1.0, 1.0):
        s.observe({"val_loss": loss})
    again = ReduceOnPlateau(1.0, "val_loss", patience=1, cooldown=3)
    again.load_state(s.state())
    for loss in (1.0, 1.0, 1.0, 1.0):
        s.observe({"val_loss": loss})
        again.observe({"val_loss": loss})
        assert again(0) == s(0)


def test_momentum_fields_defaults_and_ranges():
    """cycle_momentum defaults to PyTorch's True, absent from a file too; a file
    that turns it off keeps it off."""
    from graphengine.training_spec import TrainingSpec

    spec = TrainingSpec(loss="l", schedule=ScheduleSpec("one_cycle"))
    assert spec.schedule.cycle_momentum is True
    proto = spec.to_proto()
    proto.schedule.ClearField("cycle_momentum")
    assert TrainingSpec.from_proto(proto).schedule.cycle_momentum is True
    off = TrainingSpec(loss="l", schedule=ScheduleSpec("one_cycle", cycle_momentum=False))
    assert TrainingSpec.from_proto(off.to_proto()).schedule.cycle_momentum is False
    with pytest.raises(ge.GraphError, match=r"schedule\.max_momentum must be in \[0\.9, 1\)"):
        ScheduleSpec("one_cycle", base_momentum=0.9, max_momentum=0.8)
    with pytest.raises(ge.GraphError, match=r"schedule\.warmup_steps must be 0 for one_cycle"):
        ScheduleSpec("one_cycle", warmup_steps=3)
    with pytest.raises(ge.GraphError, match=r"schedule\.plateau_cooldown must be an int >= 0"):
        ScheduleSpec("reduce_on_plateau", plateau_cooldown=-1)
