"""The GPU Table 2 (scripts/gpu_table2.sh) rehearsed on the demo store, as the GPU machine would run it: every
process with the packages that machine lacks made unimportable, trainings stopped by the time limit, the files
for $OUT within its limits, and the bf16 networks that come back restored into a checkpoint here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.ablation.plan import KNOWN_VARIANTS
from experiments.gpu_table2.drive import MISSING_THERE, write_import_blocker
from experiments.gpu_table2.weights import FILE_LIMIT, find_parts, restore_checkpoint
from trainer.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def _env(blocker: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(blocker), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def test_trainer_and_scoring_import_without_the_packages_the_gpu_machine_lacks():
    # trimesh blocked too: the trainer's path must not need it (the scoring samples meshes with the carried wheel)
    blocked = (*MISSING_THERE, "trimesh")
    code = (f"import sys\nfor n in {blocked!r}:\n    sys.modules[n] = None\n"
            "import aps.cli, trainer.cli, trainer.loop, inference.predictor, evaluation.metrics\n"
            "import experiments.gpu_table2.drive, experiments.gpu_table2.score, experiments.gpu_table2.weights\n"
            "from aps.cli import _register\n_register()\n"
            f"loaded = sorted(n for n in sys.modules if n.split('.')[0] in {blocked!r} and sys.modules[n])\n"
            "assert not loaded, loaded\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_the_blocker_makes_the_missing_packages_unimportable(tmp_path):
    blocker = write_import_blocker(tmp_path / "blocker")
    done = subprocess.run([sys.executable, "-c", "import open3d"], cwd=ROOT, env=_env(blocker),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


@pytest.fixture(scope="module")
def one_call(demo_store, module_tmp):
    """The rehearsal of one GPU call on the demo store: 2 variants side by side with far more epochs than the
    budget allows, so the time limit stops both; 1 test object scored; fpn+adaptive-gain (the variant beyond the
    paper's five) exported."""
    tmp = module_tmp("gpu_table2")
    work, out = tmp / "work", tmp / "out"
    blocker = write_import_blocker(tmp / "blocker")
    command = [sys.executable, "-m", "experiments.gpu_table2", "run", "--rehearse", "--data", str(demo_store),
               "--work", str(work), "--out", str(out), "--variant", "fpn+binary",
               "--variant", "fpn+adaptive-gain", "--epochs", "1000", "--budget", "80", "--scoring-reserve", "25",
               "--limit", "1", "--samples", "5000", "--export", "fpn+adaptive-gain"]
    done = subprocess.run(command, cwd=ROOT, env=_env(blocker), capture_output=True, text=True, timeout=300)
    return done, work, out


def test_the_time_limit_stops_the_trainings_and_what_they_did_is_scored(one_call):
    done, work, out = one_call
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "table2.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert record["final"] is True
    for name in ("fpn+binary", "fpn+adaptive-gain"):
        run = record["runs"][name]
        epochs = run["epochs"]
        assert run["training"] == f"stopped at the time limit after {epochs} of 1000 epochs"
        assert 1 <= epochs < 1000 and len(record["curves"][name]) == epochs
        # last.ckpt is written before metrics.csv: a stop between the two leaves the checkpoint one epoch ahead
        assert run["scored_epoch"] in (epochs, epochs + 1)
        assert run["scoring"] == "finished" and run["objects_scored"] == run["objects"] == 1
        (row,) = record["objects"][name]
        assert row["status"] == "ok" or row["status"].startswith("no_surface")
        assert 0.0 <= float(row["iou"]) <= 1.0 and 0.0 <= float(row["fscore"]) <= 1.0
    table = record["table2"]
    assert [r[0] for r in table[1:]] == ["fpn+binary", "fpn+adaptive-gain"] and table[0][1].startswith("IoU")


def test_a_soft_label_is_scored_at_its_own_level(one_call):
    """As `aps eval --level auto`: binary at 0.5, the gain schedule's network at the level of the s it trained
    against (s starts at s_max, far from binary), so its IoU is not read at a level its label never meant."""
    from inference.predictor import load_predictor

    _, work, _ = one_call
    for slug, binary in (("fpn-binary", True), ("fpn-adaptive-gain", False)):
        scored = json.loads((work / "eval" / slug / "seed0" / "eval.json").read_text())
        expected = load_predictor(scored["checkpoint"], "cpu").level
        assert scored["level"] == pytest.approx(expected)
        assert (expected == 0.5) == binary


def test_out_holds_what_the_gpu_machine_returns(one_call):
    _, _, out = one_call
    files = sorted(p.name for p in out.iterdir())
    assert files == ["fpn-adaptive-gain.bf16-1of2.pt", "fpn-adaptive-gain.bf16-2of2.pt", "gpu_table2.tar.gz",
                     "learning_curves.png", "table2.json", "table2.md"]
    assert all((out / f).is_file() and (out / f).stat().st_size <= FILE_LIMIT for f in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    with tarfile.open(out / "gpu_table2.tar.gz") as tar:
        names = set(tar.getnames())
    for slug in ("fpn-binary", "fpn-adaptive-gain"):
        assert f"gpu_table2/eval/{slug}/seed0/metrics.csv" in names
        assert f"gpu_table2/runs/{slug}/seed0/metrics.csv" in names
    assert not any(n.endswith(".ckpt") for n in names)
    assert "| fpn+adaptive-gain |" in (out / "table2.md").read_text()


def test_the_bf16_network_that_comes_back_restores_to_a_checkpoint(one_call, demo_store, tmp_path):
    from inference.predictor import load_predictor
    from pipeline.schema import open_store

    _, work, out = one_call
    parts = find_parts(out, KNOWN_VARIANTS["fpn+adaptive-gain"].slug)
    assert len(parts) == 2
    with pytest.raises(CheckpointError, match="missing or repeated"):
        restore_checkpoint(parts[:1], tmp_path / "half.ckpt")
    restored = load_predictor(restore_checkpoint(parts, tmp_path / "restored.ckpt"))
    original = load_predictor(work / "runs" / "fpn-adaptive-gain" / "seed0" / "last.ckpt")
    store = open_store(demo_store)
    oid = store.split("test")[0]
    view = [store.read(oid, name, 0) for name in ("images", "K", "Rt")]
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (2000, 3)).astype(np.float32)
    # bf16 keeps 8 significant bits of each weight: occupancies within 0.02 of the float32 network's (at most
    # 0.003 measured on the rehearsal's nearly untrained networks)
    np.testing.assert_allclose(restored.field(*view)(points), original.field(*view)(points), atol=0.02)


def test_a_training_dies_with_its_driver_however_the_driver_ends(tmp_path):
    # a driver killed from outside (a CI timeout, kill -9) must not leave its trainings running on the machine
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
              "from experiments.gpu_table2.drive import _start\n"
              "p = _start([sys.executable, '-c', 'import time; time.sleep(120)'], {}, Path(sys.argv[2]))\n"
              "print(p.pid, flush=True); time.sleep(120)\n")
    driver = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(tmp_path / "log")],
                              stdout=subprocess.PIPE, text=True)
    child = int(driver.stdout.readline())
    os.kill(child, 0)  # running
    driver.kill()
    driver.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the training outlived its driver")
