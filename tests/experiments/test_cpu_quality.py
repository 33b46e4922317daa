"""The quality-per-CPU-hour driver on a tiny real store: a real time-budgeted `aps train`, a real `aps eval`, the
results table read back from their files, a rerun that trains nothing, and the several-views picture."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from experiments.cpu_quality.__main__ import do_run, write_results
from experiments.cpu_quality.figures import views_figure
from experiments.cpu_quality.plan import Run
from pipeline.schema import open_store

TINY = Run("tiny", "the code path", args=("--set", "data.repeats=2", "--labels", "binary"), preset="cpu-test",
           minutes=0.25)


def test_a_budgeted_run_is_trained_evaluated_tabled_and_pictured(demo_store, tmp_path):
    out = tmp_path / "study"
    do_run(TINY, demo_store, out, threads=2, precision="fp32", grid=(32, 8), silhouette_views=2)
    run_dir, eval_dir = out / "runs" / TINY.slug, out / "evals" / TINY.slug
    config = json.loads((run_dir / "config.json").read_text())
    assert config["optim"]["time_budget_s"] == 15.0 and config["labels"]["mode"] == "binary"
    with (run_dir / "metrics.csv").open() as f:
        curve = list(csv.DictReader(f))
    ends = [float(r["elapsed_s"]) for r in curve]
    assert ends and (len(ends) == 1 or ends[-1] <= 15.0 + max(b - a for a, b in zip(ends, ends[1:], strict=False)))

    rows = write_results((TINY,), out, "tiny")
    n_test = len(open_store(demo_store).split("test"))
    assert len(rows) == 1 and rows[0]["epochs"] == len(curve) and 0.0 <= rows[0]["iou"] <= 1.0
    assert rows[0]["minutes"] == float(curve[-1]["elapsed_s"]) / 60
    table = (out / "tiny.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| tiny | 0 |")
    with (eval_dir / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == n_test

    before = (run_dir / "last.ckpt").stat().st_mtime_ns
    do_run(TINY, demo_store, out, threads=2, precision="fp32", grid=(32, 8), silhouette_views=2)
    assert (run_dir / "last.ckpt").stat().st_mtime_ns == before  # the budget is spent: nothing trained

    test_id = open_store(demo_store).split("test")[0]
    png = views_figure(demo_store, {"tiny": eval_dir}, test_id, tmp_path / "views.png", views=(0, 3))
    picture = np.asarray(Image.open(png))
    assert picture.shape[0] > 2 * 137  # two rows of views
    assert (picture < 250).any(axis=2).mean() > 0.02  # something is drawn, not a white page


def _study_run(out, run, val_ious, s, ious, level):
    """A finished run's two files as `aps train` and `aps eval` write them (metrics.csv of each, eval.json)."""
    from evaluation.report import write_metrics_csv

    run_dir, eval_dir = out / "runs" / run.slug, out / "evals" / run.slug
    run_dir.mkdir(parents=True)
    eval_dir.mkdir(parents=True)
    lines = ["epoch,loss,val_iou,s,seconds,elapsed_s"] + [
        f"{i + 1},0.5,{v},{'' if s is None else s},30,{60.0 * (i + 1)}" for i, v in enumerate(val_ious)]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    write_metrics_csv([{"object_id": f"part-{i}", "category": "c", "iou": v, "fscore": v / 2, "chamfer_l1": 0.05,
                        "silhouette_iou": 0.7, "status": "ok"} for i, v in enumerate(ious)], eval_dir / "metrics.csv")
    (eval_dir / "eval.json").write_text(json.dumps({"level": level}))


def test_the_adaptive_study_pools_seeds_pairs_parts_and_times_the_target(tmp_path):
    from experiments.cpu_quality.study import arm_table, paired_table, speed_table, write_study

    out = tmp_path / "study"
    runs = []
    for seed, (base, soft) in enumerate((((0.2, 0.5, 0.6), (0.3, 0.55, 0.58)), ((0.2, 0.4, 0.6), (0.2, 0.3, 0.4)))):
        b, f = Run("binary", "", seed=seed), Run("fixed0.5", "", seed=seed)
        _study_run(out, b, base, None, [0.5, 0.6], 0.5)
        _study_run(out, f, soft, 0.5, [0.6, 0.5 + 0.1 * seed], 0.753)
        runs += [b, f]
    pooled = arm_table(runs, out)
    assert "| binary | 2 | 0.550 ± 0.000 |" in pooled and "| fixed0.5 | 2 | 0.575 ± 0.035 |" in pooled
    assert "0.753 ± 0.000" in pooled and "| 0.500 ± 0.000 |" in pooled  # the soft label's s and its mesh level
    paired = paired_table(runs, out, base="binary")  # pairs: (+0.1, -0.1) on seed 0, (+0.1, 0.0) on seed 1
    assert "| fixed0.5 | 4 | +0.025 (+0.000, +0.050) | 2/4 |" in paired
    alone = paired_table([r for r in runs if r.name != "binary"], out, base="binary")
    assert "fixed0.5" not in alone  # without its binary run a label is not paired (with itself, say)
    # target 0.95 * 0.6 = 0.57: binary at epoch 3 on both seeds, fixed on seed 0 only
    speed = speed_table(runs, out, base="binary")
    assert "val IoU 0.570" in speed and "| binary | 3.0 ± 0.0 | 3.0 ± 0.0 | 2/2 |" in speed
    assert "| fixed0.5 | 3.0 ± 0.0 | 3.0 ± 0.0 | 1/2 |" in speed
    path = write_study(runs, out, "adaptive", base="binary")
    assert sum(line.startswith("|---") for line in path.read_text().splitlines()) == 3  # three tables
    assert (out / "adaptive-study-curves.png").stat().st_size > 10_000
