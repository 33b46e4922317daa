"""The mesh of a soft-label network at the label's own level (docs/METHOD.md, "The iso-level of a soft label"):
the level itself, the checkpoint it is read from, and `aps eval` meshing and scoring at it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from evaluation.config import EvalConfig
from evaluation.object_eval import predict_object
from evaluation.results import run_identity
from inference.predictor import load_predictor
from pipeline.schema import open_store
from trainer.checkpoint import save_checkpoint
from trainer.config import preset, to_dict
from trainer.labels import ISO_OFFSET, iso_level, label_v
from trainer.models import build_model

APS = [sys.executable, "-c", "from aps.cli import main; main()"]
D_STAR = 5 / 256


@pytest.mark.parametrize("s", [0.95, 0.5, 0.264])
def test_the_level_is_the_labels_value_half_a_voxel_outside(s):
    level = iso_level(s, D_STAR)
    v = float(label_v(torch.tensor([ISO_OFFSET]), torch.tensor([False]), s, D_STAR)[0])
    assert level == pytest.approx(v, abs=1e-4) and level > 0.5


def test_binary_and_nearly_binary_labels_keep_half():
    assert iso_level(None, D_STAR) == 0.5
    assert iso_level(0.1, D_STAR) == 0.5  # v(ISO_OFFSET, 0.1) = 0.23: its 0.5-level is already on the surface


def _checkpoint(path, mode: str, history_s: float | None, **labels):
    cfg = preset("cpu-test")
    cfg.labels.mode = mode
    for key, value in labels.items():
        setattr(cfg.labels, key, value)
    history = [] if history_s is False else [{"epoch": 1, "s": history_s, "val_f1": 0.5}]
    save_checkpoint(path, {"config": to_dict(cfg), "model": build_model(cfg.model, load_pretrained=False)
                           .state_dict(), "epoch": 0, "best_val_f1": 0.5, "history": history})
    return path


def checkpoint_level(path) -> float:
    return load_predictor(path).level


def test_a_checkpoint_is_meshed_at_the_s_its_weights_trained_against(tmp_path):
    assert checkpoint_level(_checkpoint(tmp_path / "b.ckpt", "binary", None)) == 0.5
    assert checkpoint_level(_checkpoint(tmp_path / "f.ckpt", "fixed", 0.5, s_fixed=0.5)) == iso_level(0.5, D_STAR)
    adaptive = _checkpoint(tmp_path / "a.ckpt", "adaptive", 0.264)
    assert checkpoint_level(adaptive) == iso_level(0.264, D_STAR) == pytest.approx(0.559, abs=1e-3)
    # no history row (an old or hand-made checkpoint): a fixed label's own s
    assert checkpoint_level(_checkpoint(tmp_path / "o.ckpt", "fixed", False, s_fixed=0.95)) == iso_level(0.95,
                                                                                                         D_STAR)


def test_half_keeps_the_digest_every_earlier_eval_folder_was_written_with(eval_store):
    store = open_store(eval_store)
    settings = run_identity(EvalConfig(), "f", store)["settings"]
    assert "level" not in settings
    assert run_identity(EvalConfig(level=0.753), "f", store)["settings"]["level"] == 0.753
    with pytest.raises(ValueError, match="--level"):
        EvalConfig(level=1.0)


def _soft_sphere(radius: float, s: float):
    """make_field of a perfectly trained soft-label network on a sphere: v(d, s) of its exact distance."""
    def make_field(view):
        def field(p):
            r = np.linalg.norm(p, axis=1)
            d = torch.from_numpy(np.abs(r - radius))
            return label_v(d, torch.from_numpy(r < radius), s, D_STAR).numpy()
        return field
    return make_field


def test_eval_meshes_a_soft_field_on_its_surface_at_its_level_and_a_wall_too_far_out_at_half(eval_store):
    store = open_store(eval_store)
    object_id = store.split("test")[0]
    radius, s = 0.3, 0.5
    radii = {}
    for level in (0.5, iso_level(s, D_STAR)):
        config = EvalConfig(resolution=128, coarse=16, level=level)
        prediction = predict_object(store, object_id, _soft_sphere(radius, s), config)
        assert prediction.status == "ok"
        radii[level] = float(np.linalg.norm(prediction.vertices, axis=1).mean()) - radius
    half, own = radii[0.5], radii[iso_level(s, D_STAR)]
    assert half == pytest.approx(1.35 / 256, abs=0.4 / 256)  # docs/METHOD.md: 1.35 voxels of 256^3 outside
    assert own == pytest.approx(ISO_OFFSET, abs=0.4 / 256) and own < half - 0.6 / 256


@pytest.mark.slow
def test_aps_eval_says_and_records_the_level_it_meshed_at(eval_store, tmp_path):
    ckpt = _checkpoint(tmp_path / "fixed.ckpt", "fixed", 0.5, s_fixed=0.5)
    runs = {}
    for name, extra in (("auto", []), ("half", ["--level", "0.5"])):
        out = tmp_path / name
        done = subprocess.run([*APS, "eval", "--checkpoint", str(ckpt), "--data", str(eval_store), "--out", str(out),
                               "--limit", "1", "--resolution", "16", "--coarse", "8", "--silhouette-views", "1",
                               "--no-pictures", "--scheduler", "serial", *extra],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = (done.stdout, json.loads((out / "eval.json").read_text()))
    assert "meshes at occupancy 0.753 (--level auto)" in runs["auto"][0]
    assert runs["auto"][1]["level"] == 0.753 and runs["half"][1]["level"] == 0.5
    done = subprocess.run([*APS, "eval", "--checkpoint", str(ckpt), "--data", str(eval_store), "--out",
                           str(tmp_path / "bad"), "--level", "high"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--level must be auto or a number" in done.stderr


def test_aps_reconstruct_meshes_at_the_predictors_level_and_says_so(eval_store, tmp_path):
    from reconstruct.framing import Framing
    from reconstruct.reconstruction import metadata, reconstruct_image

    store = open_store(eval_store)
    image = store.read(store.split("test")[0], "images", 0)  # a stored render: an RGBA cut-out
    for mode, s, level in (("fixed", 0.5, 0.753), ("binary", None, 0.5)):
        predictor = load_predictor(_checkpoint(tmp_path / f"{mode}.ckpt", mode, s, s_fixed=0.5))
        assert predictor.level == level
        result = reconstruct_image(predictor, image, Framing(), resolution=16, coarse=8)
        assert metadata(result, Framing())["extraction"]["level"] == level
