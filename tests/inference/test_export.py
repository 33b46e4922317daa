"""`aps export` on a real run of the demo store: the network alone, in fp32 (the same field) and bf16 (half the
file, the field within bf16 rounding), loadable by eval and reconstruct, refused by a resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.predictor import load_predictor
from pipeline.schema import open_store
from trainer.checkpoint import CheckpointError, load_checkpoint, load_state
from trainer.config import override, preset
from trainer.loop import run_training

ROOT = Path(__file__).resolve().parents[2]
APS = [sys.executable, "-c", "from aps.cli import main; main()"]


@pytest.fixture(scope="module")
def run(demo_store, module_tmp):
    out = module_tmp("export") / "run"
    run_training(override(preset("cpu-test"), ["optim.epochs=1", "data.repeats=1"]), demo_store, out,
                 progress=False)
    return out


def _field(path, demo_store) -> np.ndarray:
    store = open_store(demo_store)
    oid = store.split("test")[0]
    view = [store.read(oid, name, 0) for name in ("images", "K", "Rt")]
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (3000, 3)).astype(np.float32)
    return load_predictor(path).field(*view)(points)


def test_export_writes_the_network_alone_in_fp32_and_bf16(run, demo_store, tmp_path):
    done = subprocess.run([*APS, "export", str(run), "--out", str(tmp_path / "net.ckpt")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"from {run / 'best.ckpt'}" in done.stdout  # a run folder means its best.ckpt, as for eval
    done = subprocess.run([*APS, "export", str(run / "last.ckpt"), "--out", str(tmp_path / "net16.ckpt"),
                           "--precision", "bf16"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fp32, bf16, last = (load_checkpoint(p) for p in (tmp_path / "net.ckpt", tmp_path / "net16.ckpt",
                                                         run / "last.ckpt"))
    for payload in (fp32, bf16):
        assert payload["optimizer"] is None and payload["rng"] is None and payload["config"] == last["config"]
        assert payload["history"] == last["history"]
    assert str(bf16["model"]["decoder.out.weight"].dtype) == "torch.bfloat16"
    size = {p: (tmp_path / p).stat().st_size for p in ("net.ckpt", "net16.ckpt")}
    assert size["net16.ckpt"] < 0.6 * size["net.ckpt"] < 0.6 * (run / "last.ckpt").stat().st_size
    reference = _field(run / "best.ckpt", demo_store)
    np.testing.assert_array_equal(_field(tmp_path / "net.ckpt", demo_store), reference)
    np.testing.assert_allclose(_field(tmp_path / "net16.ckpt", demo_store), reference, atol=0.02)
    with pytest.raises(CheckpointError, match="cannot resume from it"):
        load_state(tmp_path / "net16.ckpt").check_resumable(tmp_path / "net16.ckpt")


@pytest.mark.parametrize(("out", "reason"), [
    ("net.pt", "must be a file name ending in .ckpt"),
    ("run/best.ckpt", "is the checkpoint being exported"),
])
def test_export_refuses_an_out_it_must_not_write(run, tmp_path, out, reason):
    target = run / "best.ckpt" if out == "run/best.ckpt" else tmp_path / out
    before = target.read_bytes() if target.exists() else None
    done = subprocess.run([*APS, "export", str(run), "--out", str(target)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and reason in done.stderr.strip().splitlines()[-1]
    assert (target.read_bytes() if target.exists() else None) == before
