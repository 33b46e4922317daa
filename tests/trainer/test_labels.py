"""v(d, s) and the schedule of s against the formulas of docs/METHOD.md ("The label v(d, s)", "The schedule of s")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.config import LabelConfig
from trainer.labels import SSchedule, initial_f1, label_constants, label_v

D_STAR = 5 / 256
S_VALUES = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def _outside(d):
    d = torch.as_tensor(d, dtype=torch.float32)
    return d, torch.zeros_like(d, dtype=torch.bool)


@pytest.mark.parametrize("s", S_VALUES)
def test_both_constraints_of_eq7(s):
    d, inside = _outside([0.0, D_STAR])
    v = label_v(d, inside, s, D_STAR)
    assert v[0].item() == pytest.approx(1.0, abs=1e-6)  # v(0, s) = 1
    assert v[1].item() == pytest.approx(0.0, abs=1e-6)  # v(d*, s) = 0


@pytest.mark.parametrize("s", S_VALUES)
def test_matches_closed_form_and_is_zero_past_d_star(s):
    d_np = np.linspace(0, 3 * D_STAR, 301)
    v = label_v(*_outside(d_np), s, D_STAR).numpy()
    n = math.exp(-1 / s)
    m = (1 - n) / D_STAR
    expected = np.where(d_np <= D_STAR, -s * np.log(m * np.minimum(d_np, D_STAR) + n), 0.0)
    np.testing.assert_allclose(v, np.clip(expected, 0, 1), atol=2e-6)
    assert np.all(v[d_np > D_STAR] == 0.0)


@pytest.mark.parametrize("s", S_VALUES)
def test_decreasing_and_convex(s):
    d = torch.linspace(0, D_STAR, 2001, dtype=torch.float64)
    v = label_v(*_outside(d), s, D_STAR).double()
    first = torch.diff(v)
    assert torch.all(first < 0), "v must strictly decrease on [0, d*]"
    second = torch.diff(first)
    # float32 evaluation: allow round-off of a few ulp of the values on the second difference
    assert torch.all(second > -1e-6), "v must be convex on [0, d*]"
    # strict convexity: the curve lies below its chord
    chord = 1.0 - d / D_STAR
    assert torch.all(v[1:-1] < chord[1:-1])


def test_inside_points_are_one_whatever_their_distance():
    d = torch.tensor([0.0, 0.001, 0.5 * D_STAR, 2 * D_STAR])
    inside = torch.ones(4, dtype=torch.bool)
    for s in (None, 0.1, 0.5, 0.9):
        assert torch.all(label_v(d, inside, s, D_STAR) == 1.0)


def test_binary_limit():
    d, inside = _outside([1e-4 * D_STAR, 0.01 * D_STAR, 0.1 * D_STAR, 0.5 * D_STAR])
    assert torch.all(label_v(d, inside, None, D_STAR) == 0.0)
    previous = None
    for s in (0.5, 0.2, 0.1, 0.05, 0.02):
        v = label_v(d, inside, s, D_STAR)
        if previous is not None:
            assert torch.all(v <= previous + 1e-7), "smaller s must give a sharper (smaller) label off the surface"
        previous = v
    assert torch.all(previous[1:] < 0.1)  # s = 0.02: nearly binary beyond 1% of d*


@pytest.mark.parametrize("s, fraction", [(0.1, 0.007), (0.5, 0.27), (0.9, 0.37)])
def test_half_level_positions_given_in_spec(s, fraction):
    d_half = D_STAR / (1 + math.exp(1 / (2 * s)))  # docs/METHOD.md: where v(d, s) = 0.5
    assert d_half / D_STAR == pytest.approx(fraction, abs=0.006)
    v = label_v(*_outside([d_half]), s, D_STAR)
    assert v.item() == pytest.approx(0.5, abs=1e-5)


def test_label_is_computed_on_the_tensor_device_and_dtype():
    d, inside = _outside([0.0, 0.01])
    v = label_v(d.double(), inside, 0.5, D_STAR)
    assert v.dtype == torch.float32 and v.device == d.device


def test_bad_s_and_d_star_are_refused():
    with pytest.raises(ValueError, match="s must lie"):
        label_constants(0.0, D_STAR)
    with pytest.raises(ValueError, match="d_star"):
        label_constants(0.5, 0.0)


# ---- the schedule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("r", [0.05, 0.2, 0.35])
def test_initial_s_from_positive_ratio(r):
    schedule = SSchedule("adaptive", positive_ratio=r)
    f1_0 = 2 * r / (1 + 2 * r)
    assert initial_f1(r) == pytest.approx(f1_0)
    assert schedule.s == pytest.approx(min(0.95, max(0.1, 1 - 1.5 * f1_0)))


def test_initial_s_is_clamped():
    assert SSchedule("adaptive", positive_ratio=0.0).s == pytest.approx(0.95)  # 1 - 0 clamped to s_max
    assert SSchedule("adaptive", positive_ratio=1.0, s_min=0.1).s == pytest.approx(0.1)  # 1 - 1.5*2/3 = 0


def test_updates_only_every_k_epochs_never_increase_and_clamp():
    schedule = SSchedule("adaptive", positive_ratio=0.2, update_every=3, s_min=0.1, s_max=0.95)
    s0 = schedule.s
    history = []
    f1s = [0.4, 0.5, 0.45, 0.3, 0.2, 0.35, 0.6, 0.6, 0.62, 0.9, 0.9, 0.95]
    for epoch, f1 in enumerate(f1s):
        change = schedule.end_of_epoch(epoch, f1)
        if (epoch + 1) % 3 != 0:
            assert change is None, f"s moved at epoch {epoch}, not a multiple of k"
        history.append(schedule.s)
    # epoch 2: f1 0.45 > f1_0 = 0.2857 -> s = 1 - 0.675 = 0.325
    assert history[2] == pytest.approx(1 - 1.5 * 0.45)
    # epoch 5: f1 0.35 < best 0.45 -> unchanged
    assert history[5] == history[2]
    # epoch 8: f1 0.62 -> 1 - 0.93 = 0.07, clamped to s_min
    assert history[8] == pytest.approx(0.1)
    assert history[-1] == pytest.approx(0.1)
    assert all(b <= a for a, b in zip([s0, *history], history, strict=False)), "s increased"
    assert all(0.1 <= s <= 0.95 for s in history)
    changes = [(c.epoch, c.f1, c.old_s, c.new_s) for c in schedule.changes]
    assert changes == [(2, 0.45, pytest.approx(s0), pytest.approx(0.325)), (8, 0.62, pytest.approx(0.325),
                                                                               pytest.approx(0.1))]


def test_schedule_from_its_config_section():
    labels = LabelConfig(mode="adaptive", lambda_=1.2, s_min=0.2, s_max=0.9, update_every=3)
    built, spelled = SSchedule.from_config(labels, 0.2), SSchedule("adaptive", 0.2, 1.2, 0.2, 0.9, 0.5, 3)
    assert vars(built) == vars(spelled)
    assert SSchedule.from_config(LabelConfig(mode="fixed", s_fixed=0.3), 0.2).s == 0.3
    refused = [({"mode": "soft"}, "labels.mode must be one of"), ({"s_min": 0.5, "s_max": 0.4}, "labels.s_min <= "),
               ({"s_fixed": 0.0}, "labels.s_fixed must be"), ({"update_every": 0}, "labels.update_every must be"),
               ({"lambda_": "1.5"}, "expected a number")]
    for bad, reason in refused:
        with pytest.raises(ValueError, match=reason):
            SSchedule.from_config(LabelConfig(**bad), 0.2)


def test_fixed_and_binary_modes_never_move():
    fixed = SSchedule("fixed", positive_ratio=0.3, s_fixed=0.5, update_every=1)
    binary = SSchedule("binary", positive_ratio=0.3, update_every=1)
    for epoch in range(5):
        assert fixed.end_of_epoch(epoch, 0.99) is None and binary.end_of_epoch(epoch, 0.99) is None
    assert fixed.s == 0.5 and binary.s is None


def test_state_round_trip():
    a = SSchedule("adaptive", positive_ratio=0.2, update_every=1)
    a.end_of_epoch(0, 0.5)
    b = SSchedule("adaptive", positive_ratio=0.2, update_every=1)
    b.load_state_dict(a.state_dict())
    assert (b.s, b.best_f1, len(b.changes)) == (a.s, a.best_f1, 1)
    with pytest.raises(ValueError, match="label mode"):
        SSchedule("fixed", positive_ratio=0.2).load_state_dict(a.state_dict())
