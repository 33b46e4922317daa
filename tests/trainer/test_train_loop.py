"""The training loop end to end on the analytic store: resume equivalence, refusals, divergence, every variant."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from trainer.checkpoint import CheckpointError, load_checkpoint
from trainer.config import override, preset
from trainer.loop import TrainingDiverged, run_training


def _cfg(*assignments: str):
    cfg = preset("cpu-test")
    return override(cfg, ["data.repeats=2", "data.batch_size=2", *assignments])


def _params(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_resumed_run_equals_uninterrupted_run(analytic_store, tmp_path):
    straight = run_training(_cfg("optim.epochs=2"), analytic_store, tmp_path / "straight", progress=False)
    assert straight.epochs == 2
    run_training(_cfg("optim.epochs=1"), analytic_store, tmp_path / "split", progress=False)
    assert load_checkpoint(tmp_path / "split" / "last.ckpt")["epoch"] == 0
    resumed = run_training(_cfg("optim.epochs=2"), analytic_store, tmp_path / "split", resume=True, progress=False)
    assert resumed.epochs == 2
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    b = load_checkpoint(tmp_path / "split" / "last.ckpt")
    pa, pb = _params(a["model"]), _params(b["model"])
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-6, rtol=0), f"{k} differs after resume"
    assert a["s_schedule"] == b["s_schedule"]
    assert [r["loss"] for r in a["history"]] == pytest.approx([r["loss"] for r in b["history"]], abs=1e-6)
    # one metrics row per epoch, also across the resume
    rows = list(csv.DictReader((tmp_path / "split" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_run_folder_contents(analytic_store, tmp_path):
    out = tmp_path / "run"
    summary = run_training(_cfg("optim.epochs=2", "labels.mode=fixed"), analytic_store, out, progress=False)
    for name in ("config.json", "last.ckpt", "best.ckpt", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    config = json.loads((out / "config.json").read_text())
    assert config["labels"]["mode"] == "fixed" and config["preset"] == "cpu-test"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert set(rows[0]) >= {"epoch", "loss", "train_f1", "val_f1", "val_precision", "val_recall", "val_iou", "s",
                            "lr", "samples_per_s"}
    assert all(float(r["s"]) == 0.5 for r in rows)
    assert summary.best_val_f1 == max(float(r["val_f1"]) for r in rows)
    assert not list(out.glob(".*.tmp")), "a temporary checkpoint was left behind"
    # best.ckpt holds the weights and the record; Adam's moments and the RNG states ride in last.ckpt only
    from trainer.checkpoint import load_state

    best, last = load_checkpoint(out / "best.ckpt"), load_checkpoint(out / "last.ckpt")
    assert last["optimizer"] is not None and last["rng"] is not None
    assert best["optimizer"] is None and best["scaler"] is None and best["rng"] is None
    assert best["history"] and best["s_schedule"] is not None and best["model"].keys() == last["model"].keys()
    assert (out / "best.ckpt").stat().st_size < 0.6 * (out / "last.ckpt").stat().st_size
    assert not os.path.samefile(out / "best.ckpt", out / "last.ckpt")
    with pytest.raises(CheckpointError, match="cannot resume from it"):
        load_state(out / "best.ckpt").check_resumable(out / "best.ckpt")
    # curves.png draws the validation IoU (the test metric's kind) beside F1, from the same history
    from trainer.writer import curve_panels

    history = [{k: (None if v == "" else float(v)) for k, v in r.items()} for r in rows]
    scores = curve_panels(history)["F1 and IoU of D(p) > 0.5"]
    assert scores["val IoU"] == [float(r["val_iou"]) for r in rows] and set(scores) == {"train F1", "val F1",
                                                                                         "val IoU"}
    # TensorBoard pictures of the first validation objects after epoch 1 (then every pictures_every = 5 epochs):
    # each view's stored image (the truth) beside the prediction from that camera, the input view first
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    from pipeline.cameras import picture_views
    from pipeline.schema import open_store
    from trainer.snapshots import VIEWS

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={IMAGES: 0})
    events.Reload()
    store = open_store(analytic_store)
    val_ids = store.split("val")
    assert events.Tags()["images"] == [f"views/{oid}" for oid in val_ids[:2]]
    for oid in val_ids[:2]:
        shots = events.Images(f"views/{oid}")
        assert [s.step for s in shots] == [1]
        picture = np.asarray(Image.open(io.BytesIO(shots[0].encoded_image_string)).convert("RGB"))
        images, Rt = store.read(oid, "images"), store.read(oid, "Rt")
        side = images.shape[1]
        assert picture.shape == (VIEWS * side, 2 * side, 3)
        for row, v in enumerate(picture_views(Rt, 0, VIEWS)):
            truth = images[v].astype(float)
            if truth.shape[-1] == 4:
                truth = truth[..., :3] * truth[..., 3:] / 255 + 255 * (1 - truth[..., 3:] / 255)
            assert np.abs(picture[row * side:(row + 1) * side, :side] - truth).max() <= 1


def test_refusals(analytic_store, tmp_path):
    out = tmp_path / "run"
    run_training(_cfg("optim.epochs=1"), analytic_store, out, progress=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        run_training(_cfg("optim.epochs=1"), analytic_store, out, progress=False)
    with pytest.raises(CheckpointError, match=r"another config \(model.extractor: 'fpn' != 'global'"):
        run_training(_cfg("optim.epochs=2", "model.extractor=global"), analytic_store, out, resume=True,
                     progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_training(_cfg(), analytic_store, tmp_path / "empty", resume=True, progress=False)
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt: not a checkpoint of this toolkit"):
        load_checkpoint(tmp_path / "bad.ckpt")


def test_exploding_loss_stops_and_keeps_the_last_good_checkpoint(analytic_store, tmp_path):
    """Adam at lr 50 throws the weights far after the first step: the next batch's loss explodes."""
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"stopped, keeping .*last.ckpt of epoch 1"):
        run_training(_cfg("optim.epochs=5", "optim.lr=50", "data.repeats=1"), analytic_store, out, progress=False)
    payload = load_checkpoint(out / "last.ckpt")
    assert payload["epoch"] == 0 and len(payload["history"]) == 1


@pytest.mark.parametrize("assignments", [
    ("model.extractor=global", "labels.mode=binary"),
    ("model.extractor=multilevel", "labels.mode=fixed", "labels.s_fixed=0.5"),
    ("model.extractor=fpn", "labels.mode=adaptive"),
    ("model.extractor=fpn", "labels.mode=binary", "model.projection=perspective"),
], ids=lambda a: "-".join(x.split("=")[1] for x in a))
def test_every_variant_trains_and_lowers_its_loss(analytic_store, tmp_path, assignments):
    cfg = _cfg("optim.epochs=4", "data.views=0", "data.repeats=4", "optim.lr=2e-3", "labels.update_every=2",
               *assignments)
    run_training(cfg, analytic_store, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"


def test_data_loader_workers_give_the_same_run(analytic_store, tmp_path):
    a = run_training(_cfg("optim.epochs=1"), analytic_store, tmp_path / "a", progress=False)
    b = run_training(_cfg("optim.epochs=1", "data.num_workers=1"), analytic_store, tmp_path / "b", progress=False)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), f"{k} differs between 0 and 1 loader workers"
