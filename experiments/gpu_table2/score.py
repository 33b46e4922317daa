"""Scoring one trained run on every test object with what the GPU machine holds (torch, numpy, scipy,
scikit-image, and the carried zarr and trimesh wheels): IoU of the field at the stored reference points, and the
surface metrics (F-score@1% and @2%, Chamfer-L1, ECD, normal consistency) of a mesh extracted there.

Why not `aps eval`: its silhouettes, pictures and Dask workers need open3d and dask, which that machine lacks
(and cannot install). The numbers come from the same functions `aps eval` calls: evaluation.object_eval.predict_object
(the view encoded once, coarse-to-fine marching cubes at the label's level as `--level auto`, 0.5 for binary; IoU of
the field at ref_uniform_points at the same level) and evaluation.metrics.surface_scores (100,000 points sampled on
the mesh against ref_surface_points), so a row here equals `aps eval --level auto`'s row for the same checkpoint,
view and grid, without the silhouette column.

Writes OUT/metrics.csv (`aps eval`'s columns) and OUT/eval.json after every object, so a run stopped at the time
limit keeps the objects it scored (eval.json says how many of how many).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import first_line
from evaluation import metrics
from evaluation.config import EvalConfig
from evaluation.object_eval import predict_object
from evaluation.report import write_metrics_csv
from evaluation.runner import iou_box
from inference.predictor import load_predictor
from pipeline.schema.read import open_store
from trainer.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SCORE_FILE = "eval.json"  # the name experiments.ablation's tables look for: an eval that has (partly) finished


@dataclass
class ScoreSettings:
    """How each test object is scored (the paper's grid by default)."""

    resolution: int = 256
    """grid cells per axis of the extraction (paper: 256^3)"""
    coarse: int | None = 32
    """first grid of the coarse-to-fine extraction (None: dense)"""
    view: int = 0
    """stored view given to the network"""
    limit: int | None = None
    """only the first N test objects (split order); None: every one"""
    n_samples: int = metrics.N_SURFACE_SAMPLES
    """points sampled on the predicted mesh (OccNet: 100,000)"""
    workers: int = -1
    """KD-tree query threads (-1: every core)"""


def strict_json(value):
    """JSON-safe copy: NaN and infinities -> None, keys as text (table2.json and the records are strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def score_object(store, predictor, object_id: str, config: EvalConfig, workers: int) -> dict[str, object]:
    """One test object's row: IoU of the field at the reference uniform points, surface metrics of the mesh."""
    t0 = time.perf_counter()
    prediction = predict_object(store, object_id,
                                lambda view: predictor.field(view.image, view.K, view.Rt), config)
    ref = store.load(object_id, ["ref_surface_points", "ref_surface_normals"])
    row: dict[str, object] = {"object_id": object_id, "category": store.info(object_id)["category"],
                              "iou": prediction.iou}
    row.update(metrics.surface_scores(prediction.vertices, prediction.faces, ref["ref_surface_points"],
                                      ref["ref_surface_normals"], config.n_samples, config.tau, config.seed,
                                      workers=workers, tau_2=config.tau_2))
    row.update(n_vertices=len(prediction.vertices), n_faces=len(prediction.faces), n_queries=prediction.n_queries,
               seconds=round(time.perf_counter() - t0, 3),
               status="ok" if prediction.status == "ok" else
               f"{prediction.status}: the field never crosses {config.level:g} "
               f"on the {config.resolution}^3 grid (max occupancy at the reference points "
               f"{prediction.max_occupancy:.3f})")
    return row


def score_run(checkpoint: str | Path, data: str | Path, out: str | Path, settings: ScoreSettings,
              device: str = "cpu") -> list[dict[str, object]]:
    """Score `checkpoint` on the store's test objects into OUT (metrics.csv, eval.json) -> the rows.

    An object that fails gets the worst values (docs/METRICS.md, "Failures") and its reason in `status`; the
    others go on.
    """
    started = time.monotonic()
    checkpoint, out = Path(checkpoint), Path(out)
    store = open_store(data)
    object_ids = store.split("test")[: settings.limit]
    if not object_ids:
        raise ValueError(f"{data}: no test objects to score")
    predictor = load_predictor(checkpoint, device)
    # a soft label's network is meshed (and its IoU taken) at its label's own level, as `aps eval --level auto`
    config = EvalConfig(view=settings.view, resolution=settings.resolution, coarse=settings.coarse,
                        n_samples=settings.n_samples, pictures=False, level=predictor.level)
    epoch = int(load_checkpoint(checkpoint, mmap=True)["epoch"]) + 1
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for object_id in object_ids:
        try:
            row = score_object(store, predictor, object_id, config, settings.workers)
        except Exception as exc:  # noqa: BLE001 - one object's failure must not lose the others
            log.error("%s: %s", object_id, first_line(exc))
            row = {"object_id": object_id, "category": store.info(object_id)["category"], "iou": 0.0,
                   **metrics.WORST_SURFACE_SCORES, "status": f"error: {first_line(exc)}"}
        rows.append(row)
        write_metrics_csv(rows, out / "metrics.csv")
        record = {"checkpoint": str(checkpoint), "epoch": epoch, "data": str(data), "split": "test",
                  "objects_scored": len(rows), "objects": len(object_ids), "complete": len(rows) == len(object_ids),
                  "iou_box": iou_box(store), "settings": asdict(settings), "device": device,
                  "level": config.level,
                  "seconds": round(time.monotonic() - started, 1)}
        atomic_write_text(out / SCORE_FILE, json.dumps(strict_json(record), indent=1, allow_nan=False))
        log.info("%s: IoU %.3f, F-score@1%% %.3f (%d/%d)", object_id, row["iou"], row["fscore"], len(rows),
                 len(object_ids))
    return rows
