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
