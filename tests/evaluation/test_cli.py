"""`aps eval` end to end as a user runs it: a checkpoint left by `aps train`, then `aps eval` on it."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

APS = [sys.executable, "-c", "from aps.cli import main; main()"]


@pytest.mark.slow
def test_aps_eval_on_a_checkpoint_of_aps_train(eval_store, tmp_path):
    run = tmp_path / "run"
    subprocess.run([*APS, "train", "--data", str(eval_store), "--out", str(run), "--preset", "cpu-test",
                    "--epochs", "1", "--quiet"], check=True, capture_output=True, timeout=300)
    assert (run / "last.ckpt").is_file()
    out = tmp_path / "eval"
    done = subprocess.run([*APS, "eval", "--checkpoint", str(run / "last.ckpt"), "--data", str(eval_store),
                           "--out", str(out), "--resolution", "32", "--coarse", "8", "--silhouette-views", "2",
                           "--format", "ply", "--format", "stl"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["category"] for r in rows} == {"arm_link", "gripper_part"}
    for row in rows:  # a one-epoch network: any score, but every object scored and drawn
        assert 0.0 <= float(row["iou"]) <= 1.0
        assert (out / "pictures" / f"{row['object_id']}.png").is_file()
        assert (out / "meshes" / f"{row['object_id']}.stl").is_file() or row["status"] != "ok"
    assert "![" in (out / "report.md").read_text()


def test_aps_eval_errors_are_one_line(tmp_path):
    done = subprocess.run([*APS, "eval", "--checkpoint", str(tmp_path / "none.ckpt"), "--data", str(tmp_path),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("aps: error: ") and "none.ckpt" in done.stderr
