"""Pooling the GPU Table 2's calls, on the three table2.json files the H200 brought back (committed results)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from experiments.gpu_table2.pool import POOLED_JSON, POOLED_MD, POOLED_PNG, load_calls, write_pooled

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "gpu_table2" / "results"
CALLS = [RESULTS / f"seed{k}" for k in (0, 1, 2)]


def test_pooled_means_are_the_seeds_means_and_pairs_are_per_part(tmp_path):
    calls = load_calls(CALLS)
    record = write_pooled(calls, tmp_path)
    assert record["seeds"] == [0, 1, 2]
    assert all((tmp_path / f).is_file() for f in (POOLED_MD, POOLED_JSON, POOLED_PNG))
    per_seed = [statistics.fmean(float(r["iou"]) for r in c["objects"]["fpn+adaptive"]) for c in calls]
    row = next(r for r in record["pooled"] if r[0] == "fpn+adaptive")
    mean, std = row[2].split(" ± ")
    assert float(mean) == pytest.approx(statistics.fmean(per_seed), abs=6e-4)
    assert float(std) == pytest.approx(statistics.stdev(per_seed), abs=6e-4)
    assert row[-1] == "0.10 / 0.10 / 0.10"  # the paper's schedule ends at s_min in every seed
    paired = {r[0]: r for r in record["paired"]}
    assert "fpn+binary" not in paired and paired["fpn+adaptive"][1] == "60"  # 3 seeds x 20 test parts
    better, pairs = map(int, paired["global+binary"][3].split("/"))
    assert pairs == 60 and better < 30  # the global vector loses to the FPN on most parts
    assert "## Paired against fpn+binary" in (tmp_path / POOLED_MD).read_text()


def test_a_seed_given_twice_is_refused(tmp_path):
    copy = tmp_path / "again"
    copy.mkdir()
    shutil.copy(CALLS[0] / "table2.json", copy / "table2.json")
    with pytest.raises(ValueError, match="same seed"):
        load_calls([CALLS[0], copy])
    assert json.loads((copy / "table2.json").read_text())["settings"]["plan"]["seeds"] == [0]
