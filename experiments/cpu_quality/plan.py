"""The quality-per-CPU-hour study's runs (docs/RESULTS.md, "Quality per CPU-hour"): each a named `aps train`
command at a wall-clock budget, evaluated on every test part at 256^3.

Runs are compared at equal wall time, not equal epochs: what a user of a 2-core machine gets in the same
minutes. Each run's settings are `aps train` options on top of a preset, so a row of the table is a command a
user can type.
"""

from __future__ import annotations

from dataclasses import dataclass

STORES = {"base": 128, "u2048": 2048}
"""the study's stores by name -> uniform points per object (preprocess n_uniform); base is the contract's 128"""


@dataclass(frozen=True)
class Run:
    """One training run: `aps train --preset PRESET ARGS --time-budget MINUTESm --seed SEED` on STORE."""

    name: str
    why: str
    """what the run tests, against which other run"""
    args: tuple[str, ...] = ()
    preset: str = "cpu-demo"
    store: str = "base"
    minutes: float = 5.0
    seed: int = 0

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.minutes:g}m-seed{self.seed}"


def _s(*assignments: str) -> tuple[str, ...]:
    """`--set` arguments for each assignment."""
    return tuple(arg for a in assignments for arg in ("--set", a))


BINARY = ("--labels", "binary")
SHARE = _s("data.uniform_share=0.25")
COSINE = _s("optim.lr_schedule=cosine", "optim.warmup=0.05")

SEARCH = (
    Run("cpu-demo", "the baseline: today's demo preset, trained for the budget"),
    Run("binary", "cpu-demo with the binary label: what the adaptive label costs or buys", BINARY),
    Run("share128", "binary; each sample draws the 128 stored uniform points (12.5%) instead of ~1.3%",
        BINARY + _s("data.uniform_share=0.125")),
    Run("share-u2048", "binary; 25% of each sample's points uniform, from a store of 2048 uniform points",
        BINARY + SHARE, store="u2048"),
    Run("cosine", "share-u2048 with a cosine learning rate over the budget (5% warm-up)",
        BINARY + SHARE + COSINE, store="u2048"),
    Run("img96", "cosine at 96 px images (more pixels per part, fewer steps)",
        BINARY + SHARE + COSINE + ("--image-size", "96"), store="u2048"),
    Run("views16", "cosine with 16 object-views of 512 points per step instead of 8 x 1024",
        BINARY + SHARE + COSINE + ("--batch-size", "16", "--points", "512"), store="u2048"),
    Run("lr3e-3", "cosine at lr 3e-3 (feature extractor 3e-4)",
        BINARY + SHARE + COSINE + ("--lr", "3e-3"), store="u2048"),
)
"""the short runs of the search, in the order they ran"""

FINAL = (
    Run("cpu", "the cpu preset (the search's winner) for its 60 minutes", preset="cpu", store="u2048", minutes=60),
    Run("cpu-demo", "the baseline: today's demo preset for the same 60 minutes", minutes=60),
)
"""the winner and the baseline at the goal's budget"""

ADAPTIVE_MINUTES = 3.0
ADAPTIVE_EVERY = 1
"""s is reconsidered after every epoch: a 3-minute run of the cpu preset trains ~5 epochs of ~36 s, so the paper's
k = 10 would never move s (a 60-minute study, `--minutes 60`, ~100 epochs, would want k ~ 20)"""

ADAPTIVE = tuple(
    Run(name, why, args, preset="cpu", store="u2048", minutes=ADAPTIVE_MINUTES, seed=seed)
    for seed in (0, 1, 2)
    for name, why, args in (
        ("cpu+binary", "the cpu preset: binary labels", ()),
        ("cpu+fixed0.5", "the soft label at a fixed s = 0.5", ("--labels", "fixed", "--s-fixed", "0.5")),
        ("cpu+adaptive-f1", "the paper's schedule as written (s = 1 - 1.5 F1, from eq. 12's F1), F1 on the uniform "
         "validation points", ("--labels", "adaptive") + _s(f"labels.update_every={ADAPTIVE_EVERY}")),
        ("cpu+adaptive-gain", "s = 1 - F1's gain over the all-inside answer on the uniform validation points",
         ("--labels", "adaptive") + _s("labels.score=gain", "labels.lambda_=1.0",
                                       f"labels.update_every={ADAPTIVE_EVERY}")),
    )
)
"""the adaptive study (issue 25, item 3): three seeds of each label at the cpu preset, every run validated on the
same uniform points (a score the all-inside answer cannot pass) and meshed at its label's own level (`aps eval
--level auto`); 3 minutes each on this machine (12 runs + evals ~ 60 minutes); names carry cpu+ so their folders are
not the search's 5-minute runs of the same labels"""

DEMO_MINUTES = 6.0
DEMO = tuple(
    run for seed in (0, 1, 2) for run in (
        Run("demo-cpu-demo", "make demo until now: the cpu-demo preset for its 16 epochs (the budget only caps it)",
            ("--epochs", "16"), minutes=30, seed=seed),
        Run("demo-cpu", f"the cpu preset for {DEMO_MINUTES:g} minutes, from a store of 2048 uniform points",
            preset="cpu", store="u2048", minutes=DEMO_MINUTES, seed=seed),
        Run("demo-cpu-base", f"the cpu preset for {DEMO_MINUTES:g} minutes on the demo's own store (the "
            "contract's 128 uniform points: a share of 12.5%, not 25%): what `make demo` now runs",
            preset="cpu", minutes=DEMO_MINUTES, seed=seed),
    )
)
"""issue 25's last item: what `make demo` trains, before and after, three seeds each on the demo's own parts
(manifests/industrial-demo.toml, `--manifest`), all evaluated on the same base store's test parts. The demo store
keeps the contract's 10,000 points (SPEC: outside tools read `points` as (10000, 3)), so the demo runs the cpu
preset on it; the 2048-uniform store shows what that costs."""

STAGES = {"search": SEARCH, "final": FINAL, "adaptive": ADAPTIVE, "demo": DEMO}
