"""The ablation's plan: which variants, seeds and settings make its runs, and where each run lives under OUT.

Why a room of its own: these are the only things that decide the ablation's numbers (plan.json saves them and
a rerun is checked against it); running, tables and figures all read them and none of them changes them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from inference.extract_mesh import check_grid


@dataclass(frozen=True)
class Variant:
    """One training variant of the ablation: its name in the tables and its `aps train` options."""

    name: str
    train_args: tuple[str, ...]

    @property
    def slug(self) -> str:
        """Folder name: the variant name with only letters, digits, '.', '-' (fpn+fixed(s=0.5) -> fpn-fixed-s0.5)."""
        out = self.name.replace("+", "-").replace("(s=", "-s").replace(")", "")
        return "".join(c for c in out if c.isalnum() or c in ".-")


def fixed(s: float) -> Variant:
    """fpn with the label v(d, s) at a constant s (paper Table 2's v(d, 0.5) and Fig. 6's sweep)."""
    return Variant(f"fpn+fixed(s={s:g})", ("--extractor", "fpn", "--labels", "fixed", "--s-fixed", f"{s:g}"))


# The paper's Table 2 columns plus the multilevel extractor (the 4 ResNet maps without the FPN).
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("global+binary", ("--extractor", "global", "--labels", "binary")),
    Variant("multilevel+binary", ("--extractor", "multilevel", "--labels", "binary")),
    Variant("fpn+binary", ("--extractor", "fpn", "--labels", "binary")),
    fixed(0.5),
    Variant("fpn+adaptive", ("--extractor", "fpn", "--labels", "adaptive")),
)}
# Beyond the paper's Table 2, not in the CPU ablation's default plan: the quality study's schedule of s (issue 25;
# docs/METHOD.md, "The schedule of s"): s = 1 - F1's gain over the all-inside answer, read on the validation
# objects' uniform points (a score the trivial answer cannot pass), so s starts at s_max and falls as the network
# beats that answer.
EXTRA_VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fpn+adaptive-gain", ("--extractor", "fpn", "--labels", "adaptive", "--set", "labels.score=gain",
                                  "--set", "labels.lambda_=1.0", "--set", "data.val_on=uniform")),
)}
KNOWN_VARIANTS: dict[str, Variant] = VARIANTS | EXTRA_VARIANTS
SPEED_BASE, SPEED_TEST = "fpn+binary", "fpn+adaptive"  # the training-speed claim compares these two
SPEED_FRACTION = 0.95


@dataclass
class Plan:
    """Everything that decides the ablation's numbers; saved as OUT/plan.json and checked on a rerun."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1)
    sweep: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed s values; trained with the first seed
    train_preset: str = "cpu-demo"
    epochs: int = 10
    train_set: tuple[str, ...] = ("data.repeats=4",)  # `--set` assignments for every training run
    device: str = "cpu"
    threads: int = 2
    eval_resolution: int = 64
    eval_coarse: int = 16
    eval_limit: int | None = 16  # first N test objects (split order); None: every test object
    eval_view: int = 0
    silhouette_views: int = 4
    sweep_objects: int = 5  # test objects (the first of the split) pictured in sweep.png
    sweep_limit: int | None = 5  # test objects evaluated per sweep run (None: all)

    def __post_init__(self) -> None:
        check_grid(self.eval_resolution, self.eval_coarse)  # a bad grid fails here, not after every training

    def runs(self) -> list[tuple[Variant, int]]:
        """(variant, seed) pairs in the order they run, most telling first, so that a cut-short ablation
        (it resumes where it stopped) has the most to show: every variant at the first seed (one complete
        Table 2), the training-speed pair (fpn+binary, fpn+adaptive) at the other seeds, the fixed-s sweep at
        the first seed, then the other variants at the other seeds."""
        unknown = [v for v in self.variants if v not in KNOWN_VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose among {list(KNOWN_VARIANTS)}")
        first, *rest = self.seeds
        order = [(KNOWN_VARIANTS[v], first) for v in self.variants]
        order += [(VARIANTS[v], seed) for seed in rest for v in (SPEED_BASE, SPEED_TEST) if v in self.variants]
        order += [(fixed(s), first) for s in self.sweep]
        order += [(KNOWN_VARIANTS[v], seed) for seed in rest for v in self.variants]
        unique: list[tuple[Variant, int]] = []
        for item in order:
            if item not in unique:
                unique.append(item)
        return unique


CPU_PLAN = Plan()
# The paper's settings (Section 5.2): its preset (ResNet-18 + FPN at 224 px, batches of 32 x 2048 points, Adam
# 1e-4, 50 epochs, s reconsidered every 10), each object seen once per view and epoch (24 repeats), 3 seeds,
# meshes at 256^3. Sized for one GPU, not for this CPU.
FULL_PLAN = Plan(seeds=(0, 1, 2), train_preset="paper", epochs=50, train_set=("data.repeats=24",),
                 device="auto", threads=8, eval_resolution=256, eval_coarse=32, eval_limit=None,
                 silhouette_views=8, sweep_limit=None)


@dataclass
class Layout:
    """Where everything of one ablation lives under OUT."""

    out: Path

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / "runs" / variant.slug / f"seed{seed}"

    def eval_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / "eval" / variant.slug / f"seed{seed}"

    def log_file(self, variant: Variant, seed: int, step: str) -> Path:
        return self.out / "logs" / f"{variant.slug}-seed{seed}-{step}.log"


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """A run's metrics.csv (one row per epoch) with numbers as floats ('' -> nan, e.g. s of binary)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]
