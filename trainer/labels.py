"""The training label v(d, s) and the adaptive schedule of s (paper eq. 6-12, as corrected in docs/METHOD.md).

The store keeps only the unsigned distance `udf` and the `inside` flag of every point; the label the
network is trained against is computed from them here, at batch time, on the training device. Nothing
about `s` is ever stored with the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainer.config import LabelConfig


def label_constants(s: float, d_star: float) -> tuple[float, float]:
    """(m, n) of eq. 8 as corrected in docs/METHOD.md: v(0, s) = 1 and v(d*, s) = 0 give n = e^(-1/s),
    m = (1 - n) / d*."""
    if not 0.0 < s < 1.0 + 1e-12:
        raise ValueError(f"s must lie in (0, 1], got {s}")
    if d_star <= 0:
        raise ValueError(f"d_star must be positive, got {d_star}")
    n = math.exp(-1.0 / s)
    return (1.0 - n) / d_star, n


def label_v(udf: torch.Tensor, inside: torch.Tensor, s: float | None, d_star: float) -> torch.Tensor:
    """The target value of every point (eq. 9, corrected): 1 inside, -s ln(m d + n) for 0 <= d <= d*, 0 beyond.

    udf: (...) float, unsigned distance to the surface in normalised (unit-cube) units.
    inside: (...) bool, same shape; a point inside the solid is at distance 0 from the product, so v = 1.
    s: the softness in (0, 1]; None gives the binary label (v = inside), the limit s -> 0.
    Returns a float32 tensor of the shape of `udf`, on its device, values in [0, 1].
    """
    inside = inside.to(torch.bool)
    if s is None:
        return inside.to(torch.float32)
    m, n = label_constants(s, d_star)
    d = udf.to(torch.float32).clamp(min=0.0, max=d_star)
    v = (-s * torch.log(m * d + n)).clamp(0.0, 1.0)  # eq. 6; the clamp only removes float round-off
    # eq. 9's second branch, written out: in float32 ln(m d* + n) is a few ulp off 0, and far points must be 0
    v = torch.where(udf >= d_star, torch.zeros_like(v), v)
    return torch.where(inside, torch.ones_like(v), v)


ISO_OFFSET = 0.5 / 256
"""how far outside the surface a soft-label network is meshed: half a voxel of the paper's 256^3 grid (normalised
units), the most a marching-cubes surface is off anyway"""


def iso_level(s: float | None, d_star: float, offset: float = ISO_OFFSET) -> float:
    """The occupancy level at which to mesh a network trained against v(d, s): the label's own value `offset`
    outside the surface, v(offset, s), never below 0.5; 0.5 for the binary label (s None).

    A network that learnt v(d, s) puts its 0.5-level where v = 0.5, outside the surface (1.35 voxels of 256^3 at
    s = 0.5; docs/METHOD.md, "The iso-level of a soft label"): meshing there thickens every wall. Returns
    0.838 / 0.753 / 0.559 / 0.5 at s = 0.95 / 0.5 / 0.264 / 0.1 with the default d* and offset."""
    if s is None:
        return 0.5
    v = label_v(torch.tensor([offset], dtype=torch.float64), torch.tensor([False]), float(s), d_star)
    return round(max(0.5, float(v[0])), 4)


def trivial_f1(inside_fraction: float) -> float:
    """F1 of the all-inside answer on points of which this fraction r is inside: precision r, recall 1."""
    r = float(inside_fraction)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"inside fraction must lie in [0, 1], got {r}")
    return 2.0 * r / (1.0 + r)


def f1_gain(f1: float, f1_trivial: float) -> float:
    """(F1 - F1_0) / (1 - F1_0): 0 for the all-inside answer (or worse: negative), 1 for a perfect one."""
    return (f1 - f1_trivial) / max(1e-12, 1.0 - f1_trivial)


def initial_f1(positive_ratio: float) -> float:
    """eq. 12: the F1-score of a network that guesses at random, with r the fraction of inside samples."""
    r = float(positive_ratio)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"positive ratio must lie in [0, 1], got {r}")
    return 2.0 * r / (1.0 + 2.0 * r)


@dataclass
class SChange:
    """One change of s, kept for the log and the run's metrics; f1 is the score eq. 10 read (F1 or its gain)."""

    epoch: int
    f1: float
    old_s: float
    new_s: float


class SSchedule:
    """The schedule of s (eq. 10-12): starts at 1 - lambda f1_0, moves to 1 - lambda f1 when the validation F1
    beats its best so far, only at the end of every k-th epoch, clamped to [s_min, s_max]; s never increases.

    mode "binary" keeps s = None (the binary label), "fixed" keeps s = s_fixed, "adaptive" follows eq. 10.
    A run builds it with from_config, which checks the values (LabelConfig.check); the constructor takes them as
    they are.
    """

    def __init__(self, mode: str, positive_ratio: float, lambda_: float = 1.5, s_min: float = 0.1,
                 s_max: float = 0.95, s_fixed: float = 0.5, update_every: int = 10, score: str = "f1",
                 f1_trivial: float = 0.0):
        self.mode = mode
        self.lambda_ = lambda_
        self.s_min, self.s_max = s_min, s_max
        self.update_every = update_every
        self.score = score
        self.f1_trivial = f1_trivial
        # best_f1 holds the best value of the score eq. 10 reads: F1 (from eq. 12's guess) or its gain (from 0)
        self.best_f1 = initial_f1(positive_ratio) if score == "f1" else 0.0
        self.changes: list[SChange] = []
        if mode == "binary":
            self.s: float | None = None
        elif mode == "fixed":
            self.s = s_fixed
        else:
            self.s = self._from_f1(self.best_f1)

    @classmethod
    def from_config(cls, labels: LabelConfig, positive_ratio: float, f1_trivial: float = 0.0) -> SSchedule:
        """The schedule of a run's `labels` section, checked first (LabelConfig.check: mode, bounds, s_min <= s_max),
        with r = positive_ratio, the fraction of inside training points (eq. 12), and f1_trivial, the all-inside
        answer's F1 on the validation points (trivial_f1; score = gain measures F1 against it)."""
        labels.check()
        return cls(labels.mode, positive_ratio, labels.lambda_, labels.s_min, labels.s_max, labels.s_fixed,
                   labels.update_every, labels.score, f1_trivial)

    def _from_f1(self, f1: float) -> float:
        # eq. 10: s = 1 - lambda * F1, clamped (docs/METHOD.md: 1 - 1.5 F1 < 0 for F1 > 2/3)
        return min(self.s_max, max(self.s_min, 1.0 - self.lambda_ * f1))

    def end_of_epoch(self, epoch: int, f1: float) -> SChange | None:
        """Offer the validation F1 measured after `epoch` (0-based); returns the change of s if there is one.

        Only the adaptive mode moves s, only after epochs k-1, 2k-1, ..., and only when the score (`f1`, or its
        gain over the all-inside answer) beats the best so far; the new s is never larger than the old one.
        """
        if self.mode != "adaptive" or (epoch + 1) % self.update_every != 0:
            return None
        value = f1 if self.score == "f1" else f1_gain(f1, self.f1_trivial)
        if not math.isfinite(value) or value <= self.best_f1:
            return None
        self.best_f1 = value
        new_s = min(self.s, self._from_f1(value))
        if new_s == self.s:
            return None
        change = SChange(epoch=epoch, f1=value, old_s=self.s, new_s=new_s)
        self.s = new_s
        self.changes.append(change)
        return change

    def state_dict(self) -> dict:
        return {"mode": self.mode, "s": self.s, "best_f1": self.best_f1,
                "changes": [[c.epoch, c.f1, c.old_s, c.new_s] for c in self.changes]}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"s-schedule state is for label mode {state['mode']!r}, this run uses {self.mode!r}")
        self.s = None if state["s"] is None else float(state["s"])
        self.best_f1 = float(state["best_f1"])
        self.changes = [SChange(int(e), float(f), float(o), float(n)) for e, f, o, n in state["changes"]]
