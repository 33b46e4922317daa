"""trainer.checkpoint.TrainingState, the one owner of a checkpoint's entries: the loop saves through it, --resume
and the predictor read through it; and the run's log names a change of s once."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from inference.predictor import load_predictor
from trainer.checkpoint import CheckpointError, TrainingState, load_checkpoint, load_state, save_checkpoint, save_state
from trainer.config import override, preset
from trainer.loop import run_training

ENTRIES = ["checkpoint_version", "config", "model", "optimizer", "scaler", "s_schedule", "epoch", "best_val_f1",
           "history", "rng", "positive_ratio", "data", "data_identity"]
"""a checkpoint's entries in the order every checkpoint so far was written"""


def _cfg(*assignments: str):
    return override(preset("cpu-test"), ["optim.epochs=1", "data.repeats=2", "data.batch_size=2", *assignments])


@pytest.fixture(scope="module")
def run(analytic_store, module_tmp):
    out = module_tmp("state") / "run"
    run_training(_cfg(), analytic_store, out, progress=False)
    return out


def _same(a, b, where: str = "") -> None:
    """a == b, entry by entry in the same order, tensors bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_checkpoint_read_and_written_again_holds_the_same_entries(run, tmp_path):
    payload = load_checkpoint(run / "last.ckpt")
    assert list(payload) == ENTRIES
    state = load_state(run / "last.ckpt")
    assert list(state.to_payload()) == ENTRIES[1:]
    assert (state.epoch, state.best_val_f1, state.history) == (0, payload["best_val_f1"], payload["history"])
    save_state(tmp_path / "again.ckpt", state)
    _same(load_checkpoint(tmp_path / "again.ckpt"), payload)


def test_weights_and_record_only_load_for_inference_but_do_not_resume(run, analytic_store, tmp_path):
    """As exported weights restore them (experiments/gpu_table2/weights.py): no optimiser, scaler, s or RNG."""
    payload = load_checkpoint(run / "last.ckpt")
    folder = tmp_path / "weights"
    folder.mkdir()
    save_checkpoint(folder / "last.ckpt", {k: payload[k] for k in ("config", "model", "epoch", "best_val_f1")})
    predictor = load_predictor(folder / "last.ckpt")
    assert predictor.data == "" and torch.equal(predictor.model.state_dict()["decoder.out.weight"],
                                                payload["model"]["decoder.out.weight"])
    with pytest.raises(CheckpointError, match=r"last.ckpt: holds the weights but no optimizer, scaler, s_schedule, "
                                              r"history, rng \(exported weights\?\); a run cannot resume from it"):
        run_training(_cfg("optim.epochs=2"), analytic_store, folder, resume=True, progress=False)


def test_a_checkpoint_without_its_record_is_named(run, tmp_path):
    payload = load_checkpoint(run / "last.ckpt")
    del payload["epoch"]
    save_checkpoint(tmp_path / "no_epoch.ckpt", payload)
    with pytest.raises(CheckpointError, match="no_epoch.ckpt: not a checkpoint of this toolkit \\(no epoch entry\\)"):
        load_predictor(tmp_path / "no_epoch.ckpt")
    payload["epoch"] = "first"
    save_checkpoint(tmp_path / "text_epoch.ckpt", payload)
    with pytest.raises(CheckpointError, match="text_epoch.ckpt: its record does not fit this code"):
        TrainingState.from_payload(load_checkpoint(tmp_path / "text_epoch.ckpt"), tmp_path / "text_epoch.ckpt")


def test_a_change_of_s_is_logged_once(analytic_store, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run_training(_cfg(), analytic_store, tmp_path / "run", progress=False)
    changes = load_state(tmp_path / "run" / "last.ckpt").s_schedule["changes"]
    assert len(changes) == 1, f"precondition: s moves after epoch 1 of this run ({changes})"
    lines = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert lines == [f"s changed after epoch 1: validation F1 {changes[0][1]:.4f}, s {changes[0][2]:.4f} -> "
                     f"{changes[0][3]:.4f}"]


def test_a_resume_of_an_intact_run_repairs_nothing(run, analytic_store, tmp_path, caplog):
    # metrics.csv's rows end in \r\n: compared as text they never matched, and every resume said "repaired"
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    before = (folder / "metrics.csv").read_bytes()
    with caplog.at_level(logging.INFO):
        run_training(_cfg("optim.epochs=2"), analytic_store, folder, resume=True, progress=False)
    assert not [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert (folder / "metrics.csv").read_bytes().startswith(before)
