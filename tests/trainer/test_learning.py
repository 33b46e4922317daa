"""THE learning test: the paper's network (ResNet-18 + FPN, 5-layer decoder, adaptive labels) must fit a handful
of real objects from one fixed view each, measured on points it never trained on.

Setup (docs/METHOD.md, "Measured while planning": 2 objects, one fixed view, 128 px reached uniform-point IoU 0.92):
two real parts of the demo store, view 0 of each, 128 px, batches of 4 object-views x 2048 points, Adam 1e-3
(1e-4 for the feature extractor), 300 steps, s reconsidered every 5 epochs. Held out: 2000 of each object's
stored points (never drawn for training; they drive s) and 20,000 uniform points of the reference box per
object with winding-number inside flags (the store's ref_uniform_* for the test object; computed here from the
source mesh for the other).

Required: a mean uniform-point IoU of 0.9 over the two objects and at least 0.85 for each. One trajectory of 300
steps is one draw: changes that compute the same function in another order move the second object's IoU by
0.02-0.05 (main before the CPU work 0.961 / 0.945; the folded first layer 0.948 / 0.927, with fused Adam
0.938 / 0.901, in bf16 0.946 / 0.877; on an H200 0.931 / 0.925 in fp32, 0.954 / 0.901 in bf16: docs/TRAINING.md),
so a bound on each object alone at 0.9 tested the draw, not the learning. The network runs in float32
(APS_LEARNING_PRECISION=auto|bf16 to measure the others): auto chooses by timing, so a run would not be one
trajectory on one machine.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from inference.predictor import load_predictor
from pipeline.schema import open_store
from trainer.config import override, preset
from trainer.loop import run_training

IOU_REQUIRED = 0.9  # the mean over the objects
IOU_EACH = 0.85
PRECISION = os.environ.get("APS_LEARNING_PRECISION", "fp32")


def _uniform_reference(store, object_id: str, n: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 3), inside (n,)) uniform in [-0.5, 0.5]^3, from the store or from the source mesh."""
    if "ref_uniform_points" in store.array_names(object_id):
        o = store.load(object_id, ["ref_uniform_points", "ref_uniform_inside"])
        return o["ref_uniform_points"][:n], o["ref_uniform_inside"][:n]
    from pipeline.stages.distances import inside
    from pipeline.stages.load import load_mesh

    o = store.load(object_id, ["scale", "center"])
    vertices, faces = load_mesh(o["source"])
    normalised = (vertices - o["center"]) / o["scale"]  # original = points * scale + center
    points = np.random.default_rng(0).uniform(-0.5, 0.5, size=(n, 3)).astype(np.float32)
    return points, inside(normalised, faces, points)


@pytest.mark.slow
def test_fpn_adaptive_fits_real_objects_from_one_view(demo_store, tmp_path):
    store = open_store(demo_store)
    objects = [store.split("test")[0], store.split("train")[0]]
    cfg = override(preset("paper"), [
        f"data.objects={','.join(objects)}", "data.views=0", "data.image_size=128", "data.batch_size=4",
        "data.repeats=20", "data.num_workers=0", "data.val_split=", "data.val_points=2000",
        "optim.epochs=30", "optim.lr=1e-3", "optim.encoder_lr_scale=0.1", "labels.update_every=5",
        f"precision={PRECISION}",
    ])
    started = time.monotonic()
    summary = run_training(cfg, demo_store, tmp_path / "run", progress=False)
    seconds = time.monotonic() - started
    predictor = load_predictor(tmp_path / "run" / "last.ckpt")
    ious = {}
    for oid in objects:
        views = store.load(oid, ["images", "K", "Rt"])
        points, inside = _uniform_reference(store, oid)
        predicted = predictor.field(views["images"][0], views["K"][0], views["Rt"][0])(points) > 0.5
        ious[oid] = float((predicted & inside).sum() / (predicted | inside).sum())
    print(f"learning test: {seconds:.0f} s, uniform-point IoU {ious}, best held-out F1 "
          f"{summary.best_val_f1:.3f}, final s {summary.final_s}")
    assert summary.final_s < 0.5, "s never moved: the held-out F1 never improved"
    mean = sum(ious.values()) / len(ious)
    assert mean >= IOU_REQUIRED, f"mean uniform-point IoU {mean:.3f} < {IOU_REQUIRED} after {seconds:.0f} s: {ious}"
    for oid, iou in ious.items():
        assert iou >= IOU_EACH, f"{oid}: uniform-point IoU {iou:.3f} < {IOU_EACH} after {seconds:.0f} s"
