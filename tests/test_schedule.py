"""The training schedule in optimisation steps (destvi_core.schedule) and its plan."""

from __future__ import annotations

import math

import pytest

from conftest import tiny_params
from destvi_core import schedule
from destvi_core.errors import InputError
from destvi_core.pipeline import TrainingParams, spatial_schedule, train_models
from destvi_core.planning import plan_training
from destvi_core.schedule import reference_schedule, spatial_model_schedule, steps_per_epoch


@pytest.mark.parametrize("n_spots", [1, 3, 40, 96, 128, 200, 250])
def test_small_slide_gets_at_least_the_floor(n_spots):
    plan = spatial_model_schedule(n_spots, TrainingParams())
    per_epoch = steps_per_epoch(n_spots, 128)
    assert plan.steps >= schedule.ST_MIN_STEPS
    assert (plan.epochs - 1) * per_epoch < schedule.ST_MIN_STEPS  # no more epochs than needed
    assert plan.epochs >= schedule.TUTORIAL_ST_EPOCHS
    assert plan.kl_warmup_epochs is None
    assert plan.kl_warmup_steps == round(schedule.ST_WARMUP_RATIO * plan.steps)


@pytest.mark.parametrize("n_spots", [1100, 5_000, 10_000, 100_000, 600_000])
def test_large_slide_gets_no_more_than_the_cap(n_spots):
    plan = spatial_model_schedule(n_spots, TrainingParams())
    per_epoch = steps_per_epoch(n_spots, 128)
    assert plan.steps <= schedule.ST_MAX_STEPS
    assert plan.steps > schedule.ST_MAX_STEPS - per_epoch  # as close to the cap as epochs allow
    assert plan.epochs < schedule.TUTORIAL_ST_EPOCHS
    assert "at most" in plan.rule


def test_mid_size_keeps_the_tutorial_epochs_and_bounds_can_be_set():
    plan = spatial_model_schedule(300, TrainingParams())  # 3 steps/epoch: 7,500 steps
    assert (plan.epochs, plan.steps) == (2500, 7500)
    assert plan.kl_warmup_steps == 600  # 200 of 2,500 epochs
    own = spatial_model_schedule(300, TrainingParams(st_min_steps=9000, st_max_steps=20000))
    assert own.steps == 9000 and own.epochs == 3000
    off = spatial_model_schedule(100_000, TrainingParams(st_max_steps=0, st_min_steps=0))
    assert off.epochs == 2500  # bounds switched off: the tutorial's epochs
    given = spatial_model_schedule(100_000, TrainingParams(st_epochs=3))
    assert (given.epochs, given.kl_warmup_epochs, given.kl_warmup_steps) == (3, 200, None)
    capped = spatial_model_schedule(1000, TrainingParams(st_epochs=100, st_max_steps=80))
    assert capped.steps <= 80 and capped.kl_warmup_epochs == math.ceil(200 * 80 / 800)
    assert spatial_schedule(100_000, TrainingParams()) == (25, 2)  # 19,550 steps, warm-up 1,564
    with pytest.raises(InputError, match="st_min_steps"):
        TrainingParams(st_min_steps=10, st_max_steps=5).validate()


def test_reference_schedule_caps_large_references():
    small = reference_schedule(15_000, TrainingParams())
    assert (small.epochs, small.steps) == (300, 300 * 118)
    assert small.kl_warmup_steps == round(400 / 300 * small.steps)  # KL weight ends at 0.75
    big = reference_schedule(1_000_000, TrainingParams())
    assert big.steps <= schedule.SC_MAX_STEPS and big.epochs >= 1
    assert reference_schedule(1_000_000, TrainingParams(sc_epochs=2)).epochs == 2
    assert reference_schedule(1_000_000, TrainingParams(sc_max_steps=0)).epochs == 300


def test_plan_without_and_with_probe():
    plan = plan_training(2000, 5000, 100, 4, TrainingParams(n_hidden=16), probe=False)
    assert plan.estimate_s is None and not plan.measured
    assert plan.describe().startswith("DestVI 20,000 steps (500 epochs of 40) + CondSCVI 4,800 steps")
    assert "about" not in plan.describe()
    measured = plan_training(2000, 5000, 100, 4, TrainingParams(n_hidden=16), device="cpu",
                             probe_steps=2)
    assert measured.measured
    assert measured.spatial.seconds_per_step > 0 and measured.reference.seconds_per_step > 0
    expected = (measured.spatial.steps * measured.spatial.seconds_per_step
                + measured.reference.steps * measured.reference.seconds_per_step)
    assert measured.estimate_s == pytest.approx(expected)
    assert "about" in measured.describe() and "here on CPU" in measured.describe()
    assert any("ms per spatial step" in line for line in measured.details())
    assert schedule.format_duration(30) == "30 s"
    assert schedule.format_duration(14 * 60) == "14 min"
    assert schedule.format_duration(2 * 3600 + 5 * 60) == "2 h 05 min"


def test_automatic_schedule_ramps_kl_weight_per_step(tiny_data, monkeypatch):
    monkeypatch.setattr(schedule, "ST_MIN_STEPS", 8)
    monkeypatch.setattr(schedule, "ST_MAX_STEPS", 8)
    monkeypatch.setattr(schedule, "SC_MAX_STEPS", 10)
    params = tiny_params(sc_epochs=None, st_epochs=None, vamp_prior_p=2)
    sc, st = train_models(tiny_data.sc, tiny_data.st, "cell_type", params)
    # 150 spots = 2 steps/epoch: 4 epochs for 8 steps, warm-up round(0.08 * 8) = 1 step
    assert len(st.history) == 4 and st.train_params["n_steps_kl_warmup"] == 1
    assert st.train_params["n_epochs_kl_warmup"] is None
    assert [r["kl_weight"] for r in st.history] == [1.0] * 4
    # reference: 600 cells = 5 steps/epoch, 2 epochs; warm-up 13 steps -> weight 4/13, 9/13
    assert [r["kl_weight"] for r in sc.history] == pytest.approx([4 / 13, 9 / 13])
