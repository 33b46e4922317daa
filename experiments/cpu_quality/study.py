"""The adaptive study's analysis (issue 25, item 3): seeds pooled per label, paired per-object differences against
binary, the time each label takes to reach 95% of binary's final validation IoU, and its learning curves.

Reads only what the commands wrote: each run's metrics.csv (one row per epoch, validated on uniform points) and
its eval's metrics.csv (one row per test part) and eval.json (the level it was meshed at).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from evaluation.report import markdown, read_metrics_csv
from experiments.ablation.plan import SPEED_FRACTION, read_curve
from experiments.ablation.tables import mean_std, object_mean
from experiments.cpu_quality.figures import save_panels
from experiments.cpu_quality.plan import Run

BASE = "cpu+binary"
"""the label every other one is paired against"""
METRICS = (("iou", "IoU"), ("fscore", "F@1%"), ("chamfer_l1", "Chamfer-L1"), ("silhouette_iou", "silhouette IoU"))


def _arms(runs: Sequence[Run]) -> dict[str, list[Run]]:
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(run.name, []).append(run)
    return arms


def _eval(run: Run, out: Path) -> tuple[list[dict], dict] | None:
    folder = out / "evals" / run.slug
    if not (folder / "eval.json").is_file():
        return None
    return read_metrics_csv(folder / "metrics.csv"), json.loads((folder / "eval.json").read_text())


def _pm(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def arm_table(runs: Sequence[Run], out: Path) -> str:
    """Markdown: one row per label, each metric as mean ± sample std over its finished seeds, with the final s,
    the level its meshes were extracted at and the final validation IoU."""
    table = [["label", "seeds", *(name for _, name in METRICS), "empty", "final s", "mesh level",
              "final val IoU"]]
    for name, arm in _arms(runs).items():
        done = [(run, e) for run in arm if (e := _eval(run, out)) is not None]
        curves = [read_curve(out / "runs" / run.slug) for run, _ in done]
        finals_s = [c[-1]["s"] for c in curves if c]
        table.append([name, str(len(done)),
                      *(_pm([object_mean(rows, key) for _, (rows, _) in done], 4 if key == "chamfer_l1" else 3)
                        for key, _ in METRICS),
                      str(sum(1 for _, (rows, _) in done for r in rows if r.get("status") != "ok")),
                      "binary" if all(math.isnan(s) for s in finals_s) else _pm(finals_s),
                      _pm([float(e.get("level", 0.5)) for _, (_, e) in done]),
                      _pm([c[-1]["val_iou"] for c in curves if c])])
    return markdown(table)


def paired_table(runs: Sequence[Run], out: Path, base: str = BASE) -> str:
    """Markdown: each label against `base` on the same seed and the same test part: the mean difference of IoU and
    F@1% over all (seed, part) pairs, the spread of the per-seed means, and how many pairs are better."""
    arms = _arms(runs)
    table = [[f"label - {base}", "pairs", "IoU diff (mean; per-seed means)", "better IoU", "F@1% diff", "better F"]]
    for name, arm in arms.items():
        if name == base:
            continue
        diffs: dict[str, list[float]] = {"iou": [], "fscore": []}
        seed_means: list[float] = []
        for run in arm:
            partner = next((r for r in arms.get(base, ()) if r.seed == run.seed), None)
            ours, theirs = _eval(run, out), None if partner is None else _eval(partner, out)
            if ours is None or theirs is None:
                continue
            by_id = {r["object_id"]: r for r in theirs[0]}
            pairs = [(r, by_id[r["object_id"]]) for r in ours[0] if r["object_id"] in by_id]
            seed_iou = [float(a["iou"]) - float(b["iou"]) for a, b in pairs]
            diffs["iou"] += seed_iou
            diffs["fscore"] += [float(a["fscore"]) - float(b["fscore"]) for a, b in pairs]
            if seed_iou:
                seed_means.append(statistics.fmean(seed_iou))
        n = len(diffs["iou"])
        if not n:
            continue
        table.append([name, str(n),
                      f"{statistics.fmean(diffs['iou']):+.3f} ({', '.join(f'{m:+.3f}' for m in seed_means)})",
                      f"{sum(d > 0 for d in diffs['iou'])}/{n}", f"{statistics.fmean(diffs['fscore']):+.3f}",
                      f"{sum(d > 0 for d in diffs['fscore'])}/{n}"])
    return markdown(table)


def first_reach(curve: Sequence[dict[str, float]], target: float) -> tuple[int, float] | None:
    """(epoch, wall minutes) of the first validation at or above target (elapsed_s: training and validation)."""
    for row in curve:
        if row["val_iou"] >= target:
            return int(row["epoch"]), row["elapsed_s"] / 60
    return None


def speed_table(runs: Sequence[Run], out: Path, base: str = BASE) -> str:
    """Markdown: the paper's training-speed claim at equal wall time. The target is SPEED_FRACTION of binary's
    final validation IoU (mean over its seeds); per label, the epochs and minutes each seed took to reach it."""
    arms = _arms(runs)
    base_finals = [c[-1]["val_iou"] for run in arms.get(base, ()) if (c := read_curve(out / "runs" / run.slug))]
    if not base_finals:
        return ""
    target = SPEED_FRACTION * statistics.fmean(base_finals)
    table = [["label", f"epochs to val IoU {target:.3f} ({SPEED_FRACTION:.0%} of {base}'s final)", "minutes",
              "reached"]]
    for name, arm in arms.items():
        hits, total = [], 0
        for run in arm:
            curve = read_curve(out / "runs" / run.slug)
            if curve:
                total += 1
                if (hit := first_reach(curve, target)) is not None:
                    hits.append(hit)
        table.append([name, _pm([h[0] for h in hits], 1), _pm([h[1] for h in hits], 1), f"{len(hits)}/{total}"])
    return markdown(table)


def study_curves(runs: Sequence[Run], out: Path, path: Path) -> bool:
    """path (PNG): validation IoU and s against wall minutes, one colour per label, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_iou, ax_s) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    drawn = False
    for i, (name, arm) in enumerate(_arms(runs).items()):
        for j, run in enumerate(arm):
            curve = read_curve(out / "runs" / run.slug)
            if not curve:
                continue
            minutes = [r["elapsed_s"] / 60 for r in curve]
            label = name if j == 0 else None
            ax_iou.plot(minutes, [r["val_iou"] for r in curve], color=f"C{i}", lw=1.2, alpha=0.8, label=label)
            ax_s.plot(minutes, [0.0 if math.isnan(r["s"]) else r["s"] for r in curve], color=f"C{i}", lw=1.2,
                      alpha=0.8, label=label, drawstyle="steps-post")
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax_iou.set(xlabel="wall minutes", ylabel="validation IoU (uniform points)", title="validation IoU, 3 seeds")
    ax_s.set(xlabel="wall minutes", ylabel="s trained with (0: binary)", title="the label's s")
    return save_panels(fig, (ax_iou, ax_s), path)


def write_study(runs: Sequence[Run], out: Path, stage: str, base: str = BASE) -> Path:
    """OUT/<stage>-study.md (the three tables) and OUT/<stage>-study-curves.png."""
    from common.atomic import atomic_write_text

    study_curves(runs, out, out / f"{stage}-study-curves.png")
    text = "\n".join(["## Seeds pooled (mean ± std over seeds)", "", arm_table(runs, out), "",
                      f"## Paired against {base} (same seed, same test part)", "", paired_table(runs, out, base), "",
                      "## Training speed", "", speed_table(runs, out, base), ""])
    path = out / f"{stage}-study.md"
    atomic_write_text(path, text)
    return path
