"""The ablation orchestrator on a tiny real store: real `aps train` / `aps eval` runs, real tables and plots.

2 variants (fpn+binary, fpn+adaptive) x 1 seed x 1 epoch, plus a one-value fixed-s sweep, on the `demo_store`
fixture (6 real robot parts); then a rerun that must reuse every finished run, and the pure helpers on curves
whose answer is known.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from experiments.ablation.plan import VARIANTS, Layout, Plan, fixed
from experiments.ablation.run import check_plan, run_ablation
from experiments.ablation.tables import epochs_to_reach, mean_std
from pipeline.schema import open_store

TINY = Plan(variants=("fpn+binary", "fpn+adaptive"), seeds=(0,), sweep=(0.5,), train_preset="cpu-test",
            epochs=1, train_set=("data.repeats=2",), device="cpu", threads=2, eval_resolution=32, eval_coarse=8,
            silhouette_views=2, sweep_objects=1)


@pytest.fixture(scope="module")
def ablation(demo_store, module_tmp):
    out = module_tmp("ablation")
    summary = run_ablation(TINY, demo_store, out)
    return out, summary


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_every_run_trained_and_evaluated(ablation, demo_store):
    out, summary = ablation
    assert summary["failed"] == {}
    layout = Layout(out)
    n_test = len(open_store(demo_store).split("test"))
    for variant in (VARIANTS["fpn+binary"], VARIANTS["fpn+adaptive"], fixed(0.5)):
        run = layout.run_dir(variant, 0)
        assert (run / "last.ckpt").is_file()
        config = json.loads((run / "config.json").read_text())
        assert config["optim"]["epochs"] == 1 and config["seed"] == 0 and config["data"]["repeats"] == 2
        with (layout.eval_dir(variant, 0) / "metrics.csv").open() as f:
            assert len(list(csv.DictReader(f))) == n_test
    labels = {v: json.loads((layout.run_dir(VARIANTS[v], 0) / "config.json").read_text())["labels"]["mode"]
              for v in ("fpn+binary", "fpn+adaptive")}
    assert labels == {"fpn+binary": "binary", "fpn+adaptive": "adaptive"}
    assert json.loads((layout.run_dir(fixed(0.5), 0) / "config.json").read_text())["labels"]["s_fixed"] == 0.5


def test_table2_has_one_row_per_variant_with_the_eval_means(ablation):
    out, _ = ablation
    table = _rows(out / "table2.csv")
    assert [r[0] for r in table[1:]] == ["fpn+binary", "fpn+adaptive"]
    assert table[0][1:7] == ["IoU ↑", "F-score@1% ↑", "F-score@2% ↑", "Chamfer-L1 ↓", "ECD ↓",
                             "Normal consistency ↑"]  # IoU and the F-scores first (docs/METRICS.md)
    for row in table[1:]:
        with (Layout(out).eval_dir(VARIANTS[row[0]], 0) / "metrics.csv").open() as f:
            objects = list(csv.DictReader(f))
        iou = sum(float(o["iou"]) for o in objects) / len(objects)
        assert float(row[1]) == pytest.approx(iou, abs=5e-4)  # one seed: the mean alone, 3 decimals
        assert 0 <= float(row[1]) <= 1 and row[-2] == "1" and row[-1] == str(len(objects))
    assert "| fpn+adaptive |" in (out / "table2.md").read_text()
    failures = _rows(out / "table2_failures.csv")
    for row in failures[1:]:
        with (Layout(out).eval_dir(VARIANTS[row[0]], 0) / "metrics.csv").open() as f:
            objects = list(csv.DictReader(f))
        assert row[1:3] == [str(len(objects)), str(sum(o["status"] != "ok" for o in objects))]
    runs = _rows(out / "table2_runs.csv")
    assert [r[0] for r in runs[1:]] == ["fpn+binary seed 0", "fpn+adaptive seed 0"]


def test_learning_curves_and_speed_come_from_the_runs_metrics(ablation, demo_store):
    out, summary = ablation
    image = np.asarray(Image.open(out / "learning_curves.png"))
    assert image.shape[0] > 200 and image.shape[1] > 400 and image[..., :3].std() > 10  # a drawn figure
    (speed,) = summary["speed"]
    with (Layout(out).run_dir(VARIANTS["fpn+binary"], 0) / "metrics.csv").open() as f:
        final = float(list(csv.DictReader(f))[-1]["val_iou"])
    assert speed["binary_final_val_iou"] == pytest.approx(final)
    assert speed["target_val_iou"] == pytest.approx(0.95 * final)
    assert speed["binary_epochs"] == 1  # its own final value is above 95% of itself
    store = open_store(demo_store)
    inside = np.concatenate([store.read(o, "inside") for o in store.split("val")])
    assert speed["all_inside_val_iou"] == pytest.approx(inside.mean()) == summary["all_inside_val_iou"]
    assert 0 < inside.mean() < 1
    assert "| 0 |" in (out / "speed.md").read_text()
    assert _rows(out / "speed.csv")[1][0] == "0"


def test_sweep_table_and_picture(ablation, demo_store):
    out, summary = ablation
    assert [r[0] for r in _rows(out / "sweep.csv")[1:]] == ["fpn+fixed(s=0.5)"]
    test_ids = open_store(demo_store).split("test")
    assert summary["sweep_objects"] == test_ids[:1]
    image = np.asarray(Image.open(out / "sweep.png"))
    # one strip: input | s=0.5 | adaptive | ground truth, square tiles under an 18-px caption
    assert image.shape[1] == 4 * (image.shape[0] - 18)
    tile = image.shape[1] // 4
    gt = image[18:, 3 * tile:]
    assert (gt < 200).any(), "the ground-truth tile shows the part"


def test_rerun_reuses_finished_runs_and_refuses_other_settings(ablation, demo_store):
    out, _ = ablation
    ckpt = Layout(out).run_dir(VARIANTS["fpn+binary"], 0) / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    summary = run_ablation(TINY, demo_store, out)
    assert summary["failed"] == {} and summary["seconds"] < 30
    assert ckpt.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings.*epochs"):
        check_plan(Plan(**{**TINY.__dict__, "epochs": 2}), out, demo_store.resolve())


def test_epochs_to_reach_and_mean_std_on_known_values():
    curve = [{"epoch": 1, "val_iou": 0.2, "seconds": 10.0}, {"epoch": 2, "val_iou": 0.5, "seconds": 11.0},
             {"epoch": 3, "val_iou": 0.45, "seconds": 12.0}]
    assert epochs_to_reach(curve, 0.95 * 0.45) == (2, 21.0)
    assert epochs_to_reach(curve, 0.6) is None
    mean, std = mean_std([1.0, 3.0, math.nan])
    assert (mean, std) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_run_order_puts_the_most_telling_runs_first():
    order = [(v.name, seed) for v, seed in Plan().runs()]
    assert order[:7] == [("global+binary", 0), ("multilevel+binary", 0), ("fpn+binary", 0),
                         ("fpn+fixed(s=0.5)", 0), ("fpn+adaptive", 0), ("fpn+binary", 1), ("fpn+adaptive", 1)]
    assert order[7:11] == [(f"fpn+fixed(s={s})", 0) for s in (0.1, 0.3, 0.7, 0.9)]  # s=0.5 is not run twice
    assert len(order) == len(set(order)) == 14


def test_variant_folders_are_plain_names():
    assert fixed(0.5).slug == "fpn-fixed-s0.5" and VARIANTS["global+binary"].slug == "global-binary"
    with pytest.raises(ValueError, match="unknown variant"):
        Plan(variants=("fpn+nothing",)).runs()


def test_a_plan_whose_eval_grid_cannot_be_made_is_refused_before_any_training():
    # 24 is not a power-of-two multiple of 8: every object's eval failed only after all the trainings
    with pytest.raises(ValueError, match="--coarse must be"):
        Plan(eval_resolution=24, eval_coarse=8)
    with pytest.raises(ValueError, match="--resolution must be"):
        Plan(eval_resolution=0)
    assert Plan(eval_resolution=32, eval_coarse=8).eval_coarse == 8
