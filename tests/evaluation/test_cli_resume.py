"""`aps eval` on a real checkpoint file: Dask workers load it themselves, a rerun resumes, another checkpoint
into the same folder is refused. The network is an untrained cpu-test one (its meshes do not matter here)."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from evaluation.cli import evaluate
from evaluation.fields import CheckpointFields
from evaluation.results import file_sha256
from trainer.checkpoint import save_checkpoint
from trainer.config import preset, to_dict
from trainer.models import build_model


def untrained_checkpoint(path, seed: int):
    torch.manual_seed(seed)
    cfg = preset("cpu-test")
    model = build_model(cfg.model, load_pretrained=False)
    save_checkpoint(path, {"config": to_dict(cfg), "model": model.state_dict(), "epoch": 0, "best_val_f1": 0.0})
    return path


@pytest.fixture(scope="module")
def checkpoints(module_tmp):
    root = module_tmp("ckpt")
    return untrained_checkpoint(root / "a.ckpt", 0), untrained_checkpoint(root / "b.ckpt", 1)


def aps_eval(*args):
    app = typer.Typer()
    app.command()(evaluate)
    return CliRunner().invoke(app, [*map(str, args), "--resolution", "16", "--coarse", "8",
                                    "--silhouette-views", "2", "--no-pictures"])


def test_a_checkpoint_loads_once_per_process_and_pickles_as_its_path(checkpoints):
    import pickle

    a = CheckpointFields(str(checkpoints[0]), threads=1)
    assert a.predictor() is CheckpointFields(str(checkpoints[0]), threads=1).predictor()
    assert len(pickle.dumps(a)) < 300
    # a checkpoint rewritten in place (training went on) is loaded again, even by a process that kept the old one
    path = checkpoints[0].with_name("rewritten.ckpt")
    path.write_bytes(checkpoints[0].read_bytes())
    old = CheckpointFields(str(path), threads=1).predictor()
    untrained_checkpoint(path, 2)
    new = CheckpointFields(str(path), threads=1).predictor()
    assert new is not old
    assert not all(torch.equal(x, y) for x, y in zip(new.model.state_dict().values(),
                                                     old.model.state_dict().values()))
    # ... and refused when the eval's results are named by the bytes it had before
    with pytest.raises(RuntimeError, match="rewritten.ckpt changed since this eval started"):
        CheckpointFields(str(path), threads=1, sha256=file_sha256(checkpoints[0])).predictor()


def test_threads_that_load_a_checkpoint_at_once_share_one_network(checkpoints):
    # network='client' predicts PREDICT_THREADS objects at once: their first calls must not each load a copy
    import threading
    from concurrent.futures import ThreadPoolExecutor

    path = checkpoints[0].with_name("shared.ckpt")
    path.write_bytes(checkpoints[0].read_bytes())
    start = threading.Barrier(4)

    def load(_):
        start.wait()
        return CheckpointFields(str(path), threads=1).predictor()

    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(load, range(4)))
    assert len({id(p) for p in loaded}) == 1


def test_aps_eval_on_workers_resumes_and_refuses_another_checkpoint(eval_store, checkpoints, tmp_path):
    out = tmp_path / "eval"
    first = aps_eval("--checkpoint", checkpoints[0], "--data", eval_store, "--out", out, "--workers", "1")
    assert first.exit_code == 0, first.output
    records = sorted((out / "objects").glob("*.json"))
    assert len(records) == 2 and not (out / "pictures").exists()
    stamps = [p.stat().st_mtime_ns for p in records]
    identity = json.loads((out / "resume.json").read_text())["identity"]
    assert identity["field"].startswith("checkpoint sha256 ") and identity["settings"]["pictures"] is False

    # the same arguments (the scheduler is no argument of the results): nothing is redone, the tables are rebuilt
    (out / "metrics.csv").unlink()
    again = aps_eval("--checkpoint", checkpoints[0], "--data", eval_store, "--out", out, "--scheduler", "serial")
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in records] == stamps
    assert len((out / "metrics.csv").read_text().splitlines()) == 3

    other = aps_eval("--checkpoint", checkpoints[1], "--data", eval_store, "--out", out, "--scheduler", "serial")
    assert other.exit_code != 0
    assert "holds 2 object result(s) of an eval with other settings (field: 'checkpoint sha256" in \
        str(other.exception)


def test_an_eval_in_another_precision_is_another_eval(eval_store, checkpoints, tmp_path):
    """fp32 is the default; a bf16 (or auto) eval predicts another field, so it is refused in a folder of fp32
    results instead of being mixed with them, and the identity names the precision the workers ran in."""
    from trainer.models.precision import bf16_unavailable

    out = tmp_path / "eval"
    first = aps_eval("--checkpoint", checkpoints[0], "--data", eval_store, "--out", out, "--scheduler", "serial")
    assert first.exit_code == 0, first.output
    assert "network: fp32 (--precision fp32)" in first.output
    assert json.loads((out / "resume.json").read_text())["identity"]["field"].endswith(" in fp32")
    if bf16_unavailable(torch.device("cpu")):
        refused = aps_eval("--checkpoint", checkpoints[0], "--data", eval_store, "--out", out, "--precision", "bf16")
        assert refused.exit_code != 0 and "precision bf16: this CPU has neither" in str(refused.exception)
        return
    other = aps_eval("--checkpoint", checkpoints[0], "--data", eval_store, "--out", out, "--scheduler", "serial",
                     "--precision", "bf16")
    assert other.exit_code != 0
    assert "of an eval with other settings" in str(other.exception) and " in fp32" in str(other.exception)
