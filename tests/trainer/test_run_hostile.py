"""The run folder against careless and hostile use (issue 22): two `aps train` into one --out, `kill -9` between
and during checkpoint writes, a full disk, and checkpoints whose config was edited. Real `aps` processes on the
analytic store, real checkpoints, real signals and a real full filesystem (a small tmpfs; needs root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from inference.predictor import load_predictor, resolve_checkpoint
from trainer.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from trainer.config import from_dict, override, preset, to_dict
from trainer.loop import run_training

APS = [sys.executable, "-c", "from aps.cli import main; main()"]
SMALL = ["--preset", "cpu-test", "--set", "data.repeats=2", "--set", "data.batch_size=2", "--quiet"]
IMPROVES = ["--set", "optim.lr=1e-2"]  # with it, validation F1 rises at epoch 2 on the analytic store (0.23 -> 0.59)


def _train(store: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*APS, "train", "--data", str(store), "--out", str(out), *SMALL, *args],
                          capture_output=True, text=True, timeout=300)


def _start(store: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*APS, "train", "--data", str(store), "--out", str(out), *SMALL, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240.0, every: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"aps train ended (status {proc.returncode}) before {what}")
        time.sleep(every)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# S3: one writer per run folder


def test_a_second_train_into_a_busy_run_folder_is_refused_naming_the_holder(analytic_store, tmp_path):
    out = tmp_path / "run"
    first = _start(analytic_store, out, "--epochs", "1000")
    try:
        _wait_for(lambda: (out / "last.ckpt").is_file(), first, "its first checkpoint")
        started = time.monotonic()
        second = _train(analytic_store, out, "--resume", "--epochs", "3")
        assert second.returncode == 1, second.stderr
        reason = second.stderr.strip().splitlines()[-1]
        assert reason.startswith(f"aps: error: {out}: another `aps train` is writing this run folder: "
                                 f"pid {first.pid} on "), reason
        assert time.monotonic() - started < 60  # refused at once, not after training
        assert first.poll() is None, "the first run must go on"
    finally:
        _kill9(first)
    # the kernel dropped the lock with the killed process: nothing is stuck
    third = _train(analytic_store, out, "--resume", "--epochs", "1")
    assert third.returncode == 0, third.stderr
    assert "nothing was trained" in third.stdout


# S4: best.ckpt agrees with the run's record after a kill between the writes of an epoch


def test_resume_repairs_best_ckpt_left_behind_by_a_kill_between_the_writes(analytic_store, tmp_path):
    """The state a kill between the writes of last.ckpt and best.ckpt leaves (the previous code's order):
    last.ckpt of epoch 2 with a better F1, best.ckpt and metrics.csv still of epoch 1."""
    out, kept = tmp_path / "run", tmp_path / "epoch1"
    assert _train(analytic_store, out, *IMPROVES, "--epochs", "1").returncode == 0
    kept.mkdir()
    for name in ("best.ckpt", "metrics.csv"):
        shutil.copy2(out / name, kept / name)
    assert _train(analytic_store, out, *IMPROVES, "--epochs", "2", "--resume").returncode == 0
    last = load_state(out / "last.ckpt")
    assert last.best_epoch() == 1, f"precondition: epoch 2 improves val F1 ({last.history})"
    for name in ("best.ckpt", "metrics.csv"):
        os.replace(kept / name, out / name)
    assert resolve_checkpoint(out) == out / "last.ckpt"  # before the repair, eval of the folder takes the best

    done = _train(analytic_store, out, *IMPROVES, "--epochs", "2", "--resume")
    assert done.returncode == 0, done.stderr
    assert f"repaired {out / 'best.ckpt'}: it held epoch 1 (val F1 " in done.stderr
    assert f"repaired {out / 'metrics.csv'}" in done.stderr
    best = load_checkpoint(out / "best.ckpt")
    assert best["epoch"] == 1 and _same_weights(best["model"], last.model)
    assert f"best val F1 {best['best_val_f1']:.4f}" in done.stdout
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_kill_9_right_after_last_ckpt_is_replaced_leaves_best_ckpt_agreeing(analytic_store, tmp_path):
    """A real run killed the moment its epoch-2 last.ckpt lands (the previous code then spent a torch.save on
    best.ckpt); after --resume best.ckpt is the record's best epoch, as the summary says."""
    out = tmp_path / "run"
    proc = _start(analytic_store, out, *IMPROVES, "--epochs", "2")
    first = _wait_for(lambda: _inode(out / "last.ckpt"), proc, "epoch 1's last.ckpt")
    _wait_for(lambda: _inode(out / "last.ckpt") not in (None, first), proc, "epoch 2's last.ckpt", every=0.0005)
    _kill9(proc)
    last = load_state(out / "last.ckpt")
    assert last.epoch == 1 and last.best_epoch() == 1, f"precondition: epoch 2 improves ({last.history})"

    done = _train(analytic_store, out, *IMPROVES, "--epochs", "2", "--resume")
    assert done.returncode == 0, done.stderr
    best = load_checkpoint(out / "best.ckpt")
    assert best["epoch"] == last.best_epoch() and _same_weights(best["model"], last.model)
    assert f"best val F1 {best['best_val_f1']:.4f}" in done.stdout


# D3: temporaries of a killed save are removed at the next start, and nothing else


def test_temporary_of_a_save_killed_midway_is_removed_at_the_next_start(analytic_store, tmp_path):
    out = tmp_path / "run"
    proc = _start(analytic_store, out, "--epochs", "1000")
    _wait_for(lambda: (out / "last.ckpt").is_file(), proc, "epoch 1's last.ckpt")
    temporaries = _wait_for(lambda: list(out.glob(".last.*.tmp.ckpt")), proc, "a save in progress", every=0.001)
    _kill9(proc)
    assert all(t.is_file() for t in temporaries), "precondition: the kill left the temporary file"
    foreign = [out / ".last.notours.tmp.ckpt", out / ".last.0123456789ab.tmp.ckpt.keep", out / "notes.txt",
               out / "tensorboard" / ".last.0123456789ab.tmp.ckpt"]
    for path in foreign:
        path.write_bytes(b"not ours")

    done = _train(analytic_store, out, "--resume", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert not any(t.exists() for t in temporaries), sorted(p.name for p in out.iterdir())
    assert f"removed 1 temporary file left by a write that was killed: {temporaries[0].name}" in done.stderr
    assert all(path.read_bytes() == b"not ours" for path in foreign)


# D2: a full disk


def test_a_full_disk_is_named_keeps_the_last_checkpoint_and_resume_finishes(analytic_store, tmp_path):
    """A 200 MB tmpfs holds epoch 1's 135 MB last.ckpt but not epoch 2's temporary beside it."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a real full filesystem needs root to mount a small tmpfs")
    try:
        out = mount / "run"
        done = _train(analytic_store, out, "--epochs", "2")
        assert done.returncode == 1
        reason = done.stderr.strip().splitlines()[-1]
        assert reason.startswith(f"aps: error: {out / 'last.ckpt'}: disk full while writing it ("), reason
        assert reason.endswith("; the previous last.ckpt is kept; free space and rerun with --resume"), reason
        assert "enforce fail" not in done.stderr and "Traceback" not in done.stderr
        assert load_checkpoint(out / "last.ckpt")["epoch"] == 0
        assert not list(out.glob(".*.tmp.*"))

        subprocess.run(["mount", "-o", "remount,size=400m", str(mount)], check=True)
        done = _train(analytic_store, out, "--epochs", "2", "--resume")
        assert done.returncode == 0, done.stderr
        assert load_checkpoint(out / "last.ckpt")["epoch"] == 1
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# S11: a checkpoint's config is checked like a user's, before anything is built


@pytest.fixture(scope="module")
def checkpoint(analytic_store, module_tmp) -> Path:
    out = module_tmp("hostile") / "run"
    run_training(override(preset("cpu-test"), ["optim.epochs=1", "data.repeats=2", "data.batch_size=2"]),
                 analytic_store, out, progress=False)
    return out / "last.ckpt"


def _edited(checkpoint: Path, folder: Path, section: str, key: str | None, value) -> Path:
    payload = load_checkpoint(checkpoint)
    if key is None:
        payload["config"][section] = value
    else:
        payload["config"][section][key] = value
    save_checkpoint(folder / "edited.ckpt", payload)
    return folder / "edited.ckpt"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.decoder_layers", 10**7, "model.decoder_layers must be an integer in [2, 32], got 10000000"),
    ("model.decoder_hidden", 40000, "model.decoder_hidden must be an integer in [1, 2048], got 40000"),
    ("model.decoder_hidden", 10**6, "model.decoder_hidden must be an integer in [1, 2048], got 1000000"),
    ("data.image_size", 10**5, "data.image_size must be an integer in [32, 1024], got 100000"),
    ("model.fpn_channels", -5, "model.fpn_channels must be an integer in [1, 1024], got -5"),
    ("labels.d_star", float("inf"), "labels.d_star must be a number in (0.0, 1.0], got inf"),
])
def test_the_one_checker_bounds_the_fields_of_the_issue(key, value, message):
    """The values of issue 22 (S11), refused by the checker that reads every checkpoint's config."""
    values = to_dict(preset("paper"))
    section, name = key.split(".")
    values[section][name] = value
    with pytest.raises(ValueError) as info:
        from_dict(values)
    assert str(info.value) == message


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("model", "decoder_layers", 33, "model.decoder_layers must be an integer in [2, 32], got 33"),
    ("model", "decoder_hidden", 2049, "model.decoder_hidden must be an integer in [1, 2048], got 2049"),
    ("data", "image_size", 1025, "data.image_size must be an integer in [32, 1024], got 1025"),
    ("model", "point_frame", "world", "model.point_frame must be one of ('camera', 'object'), got 'world'"),
    ("model", None, [1, 2], "config section 'model' must be a dict of fields, got list"),
])
def test_an_edited_checkpoint_config_is_refused_naming_file_and_field(checkpoint, tmp_path, section, key, value,
                                                                      message):
    path = _edited(checkpoint, tmp_path, section, key, value)
    with pytest.raises(CheckpointError) as info:
        load_predictor(path)
    assert str(info.value) == f"{path}: its config does not fit this code ({message})"


def test_aps_reconstruct_and_eval_refuse_an_edited_checkpoint_in_one_line(checkpoint, analytic_store, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"")  # reconstruct needs a file before it reaches the checkpoint
    cases = [
        (("model", "fpn_channels", -5), "model.fpn_channels must be an integer in [1, 1024], got -5",
         ["reconstruct", str(tmp_path / "photo.png"), "--out", str(tmp_path / "o")]),
        (("model", "decoder_hidden", 2049), "model.decoder_hidden must be an integer in [1, 2048], got 2049",
         ["eval", "--data", str(analytic_store), "--out", str(tmp_path / "e")]),
    ]
    for i, (edit, message, command) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        path = _edited(checkpoint, folder, *edit)
        done = subprocess.run([*APS, *command, "--checkpoint", str(path)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (f"aps: error: {path}: its config does not fit this code "
                                                        f"({message})"), done.stderr
