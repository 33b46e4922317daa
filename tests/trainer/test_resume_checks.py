"""`--resume` continues only the run's own data (wherever its store now lies), and says when there is nothing
left to train."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from pipeline.schema import write_index
from trainer.checkpoint import CheckpointError, load_checkpoint
from trainer.cli import train
from trainer.config import override, preset
from trainer.loop import run_training

app = typer.Typer()
app.command()(train)


def _cfg(*assignments: str):
    return override(preset("cpu-test"), ["data.repeats=2", "data.batch_size=2", *assignments])


def _epochs(run) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader((run / "metrics.csv").open())]


def test_resume_on_another_dataset_is_refused_naming_both_stores(analytic_store, demo_store, tmp_path):
    out = tmp_path / "run"
    run_training(_cfg("optim.epochs=1"), analytic_store, out, progress=False)
    before = (out / "last.ckpt").read_bytes()
    with pytest.raises(CheckpointError) as info:
        run_training(_cfg("optim.epochs=2"), demo_store, out, resume=True, progress=False)
    message = str(info.value)
    assert message.startswith(f"{out / 'last.ckpt'}: --data {demo_store.resolve()} (dataset 'demo-fixture', 4 "
                              "training / 1 validation objects"), message
    assert f"is not the store the run was trained on, {analytic_store.resolve()} (dataset 'analytic', 2 / 1" in message
    assert "\n" not in message
    assert _epochs(out) == [1] and (out / "last.ckpt").read_bytes() == before, "the refused resume wrote something"


def test_a_moved_store_resumes_and_a_changed_one_is_refused(analytic_store, tmp_path):
    import zarr

    store = tmp_path / "store"
    shutil.copytree(analytic_store, store)
    out = tmp_path / "run"
    run_training(_cfg("optim.epochs=1"), store, out, progress=False)
    moved = tmp_path / "elsewhere" / "store"
    moved.parent.mkdir()
    store.rename(moved)
    run_training(_cfg("optim.epochs=2"), moved, out, resume=True, progress=False)
    assert _epochs(out) == [1, 2]
    identity = load_checkpoint(out / "last.ckpt")["data_identity"]
    assert identity["path"] == str(moved.resolve()) and identity["dataset"] == "analytic"
    # the same folder, preprocessed again with other parameters: other data under the same name
    root = zarr.open_group(str(moved), mode="a", zarr_format=3)
    root.attrs["params"] = {**root.attrs["params"], "n_views": 3}
    objects = json.loads((moved / "index.json").read_text())["objects"]  # and its index, as preprocess writes it
    write_index(moved, {oid: tuple(where) for oid, where in objects.items()}, complete=True)
    with pytest.raises(CheckpointError, match=rf"--data {moved.resolve()} .* has changed since the store the run "
                                              rf"was trained on, {moved.resolve()} "):
        run_training(_cfg("optim.epochs=3"), moved, out, resume=True, progress=False)
    assert _epochs(out) == [1, 2]


def test_resume_with_the_epochs_already_reached_trains_nothing_and_says_so(analytic_store, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(analytic_store), "--out", str(out), "--preset", "cpu-test", "--quiet",
            "--set", "data.repeats=2", "--set", "data.batch_size=2"]
    first = CliRunner().invoke(app, [*args, "--epochs", "2"])
    assert first.exit_code == 0, first.output
    files = {name: (out / name).read_bytes() for name in ("last.ckpt", "metrics.csv", "config.json")}
    for epochs in ("2", "1"):
        again = CliRunner().invoke(app, [*args, "--epochs", epochs, "--resume"])
        assert again.exit_code == 0, again.output
        assert f"nothing was trained: the run in {out} already has 2 epochs" in again.output, again.output
        assert "trained 2 epochs in" not in again.output
        assert {name: (out / name).read_bytes() for name in files} == files, "a run with nothing to do changed"
