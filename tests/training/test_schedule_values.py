"""Learning-rate schedules: values at chosen steps, warm-up, and the spec mapping."""

import math

import pytest

from graphengine.errors import TrainingError
from graphengine.training.schedules import Constant, Cosine, Step, make_schedule
from graphengine.training_spec import ScheduleSpec


def test_constant_schedule_never_changes():
    assert [Constant(0.1)(k) for k in (0, 1, 1000)] == [0.1, 0.1, 0.1]


def test_step_schedule_multiplies_by_gamma_every_step_size():
    s = Step(1.0, step_size=3, gamma=0.5)
    assert [s(k) for k in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_cosine_without_warmup():
    s = Cosine(1.0, total_steps=4, min_lr=0.2)
    want = [0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert [s(k) for k in range(5)] == pytest.approx(want)
    assert s(100) == pytest.approx(0.2)  # held after total_steps


def test_cosine_with_warmup_decays_after_the_warmup():
    s = Cosine(0.4, total_steps=12, warmup_steps=4)
    assert [s(k) for k in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert s(4) == pytest.approx(0.4)
    assert s(8) == pytest.approx(0.2)  # halfway through the 8 decay steps
    assert s(12) == pytest.approx(0.0)


def test_warmup_on_constant_and_step():
    assert [Constant(1.0, warmup_steps=2)(k) for k in range(3)] == [0.5, 1.0, 1.0]
    s = Step(1.0, step_size=2, gamma=0.1, warmup_steps=4)
    assert [s(k) for k in range(5)] == pytest.approx([0.25, 0.5, 0.075, 0.1, 0.01])


def test_make_schedule_from_spec():
    assert make_schedule(ScheduleSpec(), 0.3, 10)(5) == 0.3
    assert make_schedule(ScheduleSpec("step", step_size=2, gamma=0.5), 1.0, 10)(5) == 0.25
    # total_steps 0 means the whole run.
    cosine = make_schedule(ScheduleSpec("cosine"), 1.0, 10)
    assert cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert make_schedule(ScheduleSpec("cosine", total_steps=20), 1.0, 10)(10) == pytest.approx(0.5)


def test_bad_schedules_are_refused():
    # One set of rules: the spec's, naming the field.
    with pytest.raises(TrainingError, match=r"schedule\.step_size must be an int >= 1, got 0"):
        Step(0.1, step_size=0)
    with pytest.raises(TrainingError, match="total_steps must be >= 1, got 0"):
        Cosine(0.1, total_steps=0)
    with pytest.raises(TrainingError, match=r"schedule\.gamma must be in \(0, 1\], got 2"):
        Step(0.1, step_size=1, gamma=2.0)
