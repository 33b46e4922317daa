"""Training to a wall-clock budget (`aps train --time-budget`), learning-rate schedules planned over it, the
uniform share of each sample's points and s driven by F1's gain over the all-inside answer, on the analytic
store with real training runs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import typer

from pipeline.schema.layout import N_UNIFORM
from trainer.cli import parse_duration
from trainer.config import override, preset
from trainer.data import SampleKey, TrainingSamples
from trainer.labels import SSchedule, f1_gain, trivial_f1
from trainer.loop import lr_factor, next_epoch_estimate, run_training


def _cfg(*assignments: str):
    return override(preset("cpu-test"), ["data.repeats=2", "data.batch_size=2", *assignments])


def _rows(out) -> list[dict]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("text", "seconds"), [("60m", 3600.0), ("1.5h", 5400.0), ("900", 900.0),
                                               ("900s", 900.0), ("2 min", 120.0)])
def test_durations_read_as_users_write_them(text, seconds):
    assert parse_duration(text, "--time-budget") == seconds


@pytest.mark.parametrize("text", ["", "abc", "10 parsecs", "-5m", "0", "nanm"])
def test_a_duration_that_is_none_is_refused_naming_the_option(text):
    with pytest.raises(typer.BadParameter, match="duration"):
        parse_duration(text, "--time-budget")


def test_learning_rate_schedules():
    assert lr_factor(0.3, "constant", 0.0, 0.02) == 1.0
    assert lr_factor(0.05, "constant", 0.1, 0.02) == pytest.approx(0.5)  # half-way up the warm-up
    assert lr_factor(0.1, "cosine", 0.1, 0.02) == pytest.approx(1.0)
    assert lr_factor(0.55, "cosine", 0.1, 0.02) == pytest.approx(0.51)
    assert lr_factor(1.0, "cosine", 0.1, 0.02) == pytest.approx(0.02)
    assert lr_factor(3.0, "cosine", 0.1, 0.02) == pytest.approx(0.02)  # past the budget: as at its end
    values = [lr_factor(p / 20, "cosine", 0.0, 0.0) for p in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_a_budgeted_run_stops_in_its_budget_and_resumes_where_the_clock_stood(analytic_store, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg("optim.epochs=100000", "optim.time_budget_s=12.0", "optim.lr_schedule=cosine", "optim.warmup=0.2")
    summary = run_training(cfg, analytic_store, out, progress=False)
    rows = _rows(out)
    assert 2 <= summary.epochs == len(rows) < 100000
    ends = [float(r["elapsed_s"]) for r in rows]
    assert all(a < b for a, b in zip(ends, ends[1:], strict=False))
    walls = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    assert ends[-2] + next_epoch_estimate(ends[:-1]) <= 12.0  # each earlier epoch looked like it would fit ...
    assert ends[-1] + next_epoch_estimate(ends) > 12.0  # ... and after the last one, another would not have
    assert ends[-1] <= 12.0 + max(walls)  # so the run ends within about an epoch of the budget
    assert next_epoch_estimate([10.0, 12.0, 13.0, 17.0]) == pytest.approx(1.1 * 4.0)  # the longest of the last 3
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < 0.5 * 1e-3  # cosine over the budget: near its end the rate is low
    assert max(lrs) > 2 * lrs[-1]

    again = run_training(cfg, analytic_store, out, resume=True, progress=False)
    assert again.trained == 0 and "time-budget" in again.line()

    budget = ends[-1] + 3 * next_epoch_estimate(ends) + 1.0  # room for about 3 more epochs
    more = override(_cfg("optim.epochs=100000", "optim.lr_schedule=cosine", "optim.warmup=0.2"),
                    [f"optim.time_budget_s={budget}"])
    resumed = run_training(more, analytic_store, out, resume=True, progress=False)
    rows = _rows(out)
    assert resumed.trained >= 1 and len(rows) == resumed.epochs
    assert float(rows[summary.epochs]["elapsed_s"]) > ends[-1]  # the clock went on from the first call's
    ends = [float(r["elapsed_s"]) for r in rows]
    assert ends[-1] + next_epoch_estimate(ends) > budget


def test_without_a_budget_the_cosine_spans_the_epochs(analytic_store, tmp_path):
    run_training(_cfg("optim.epochs=4", "optim.lr_schedule=cosine", "optim.lr_floor=0.1"), analytic_store,
                 tmp_path / "run", progress=False)
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "run")]
    assert len(lrs) == 4 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] >= 1e-4  # the floor: 0.1 x optim.lr


@pytest.mark.parametrize("share", [0.0, 0.05, 0.25])
def test_each_sample_draws_its_share_of_uniform_points(analytic_store, share):
    samples = TrainingSamples(analytic_store, ["sphere_a", "box_a"], points_per_sample=1000, uniform_share=share)
    plain = TrainingSamples(analytic_store, ["sphere_a", "box_a"], points_per_sample=1000)
    n_all = samples.cache.n_points("sphere_a")
    for position in range(4):
        key = SampleKey(epoch=1, position=position, object_index=position % 2)
        _, _, rows = samples.draw(key)
        assert len(rows) == 1000 and len(np.unique(rows)) == 1000
        n_uniform = int((rows >= n_all - N_UNIFORM).sum())
        if share == 0.0:
            assert np.array_equal(rows, plain.draw(key)[2])  # 0 is the old draw, bit for bit
        else:
            assert n_uniform == min(N_UNIFORM, round(share * 1000))


def test_s_follows_the_gain_over_the_all_inside_answer():
    f1_0 = trivial_f1(0.2)
    assert f1_0 == pytest.approx(0.4 / 1.2)
    assert f1_gain(f1_0, f1_0) == 0.0 and f1_gain(1.0, f1_0) == 1.0
    schedule = SSchedule("adaptive", 0.5, lambda_=1.0, s_min=0.1, s_max=0.95, update_every=1, score="gain",
                         f1_trivial=f1_0)
    assert schedule.s == 0.95  # gain 0: as soft as allowed
    assert schedule.end_of_epoch(0, f1_0) is None  # the trivial answer does not move s
    change = schedule.end_of_epoch(1, f1_0 + 0.5 * (1 - f1_0))
    assert change is not None and change.new_s == pytest.approx(0.5)
    assert schedule.end_of_epoch(2, 0.99).new_s == pytest.approx(max(0.1, 1 - f1_gain(0.99, f1_0)))
    paper = SSchedule("adaptive", 0.5, lambda_=1.5, score="f1")
    assert paper.s == pytest.approx(1 - 1.5 * 0.5)  # eq. 12's start, unchanged


def test_a_gain_run_measures_the_trivial_answer_on_its_validation_points(analytic_store, tmp_path, caplog):
    caplog.set_level("INFO")
    run_training(_cfg("optim.epochs=2", "labels.mode=adaptive", "labels.score=gain", "data.val_on=uniform"),
                 analytic_store, tmp_path / "run", progress=False)
    said = [r.getMessage() for r in caplog.records if "all-inside" in r.getMessage()]
    assert len(said) == 1
    f1_0 = float(said[0].split("F1 ")[1].split(" ")[0])
    assert 0.0 < f1_0 < 1.0 and not math.isnan(f1_0)
    rows = _rows(tmp_path / "run")
    assert float(rows[0]["s"]) == pytest.approx(0.95)


def test_a_budgeted_runs_log_line_says_minutes_not_a_million_epochs():
    from trainer.config import BOUNDS_EPOCHS_MAX
    from trainer.writer import epoch_progress

    assert epoch_progress(12, BOUNDS_EPOCHS_MAX, 360.0, 186.0) == "12 (3.1 of 6 min)"
    assert epoch_progress(12, 50, None, 186.0) == "12/50"
    assert epoch_progress(12, 50, 3600.0, 186.0) == "12/50 (3.1 of 60 min)"
