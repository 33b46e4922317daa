"""The eval loop: for every object of a split, reconstruct from one view, mesh, score, draw, write.

The predictor enters as `make_field(view) -> field`, so the loop runs the same on a trained network
(evaluation.cli wires inference.predictor) and on an analytic or ground-truth field (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import first_line
from evaluation import metrics
from evaluation.config import EvalConfig
from evaluation.render import GT_COLOR, PRED_COLOR, compose_strip, load_source_mesh, render_points, save_png
from evaluation.report import category_table, write_metrics_csv, write_report, write_table
from inference.extract_mesh import THRESHOLD, CountingField, Extraction, Field, extract_mesh
from inference.mesh_io import write_mesh
from pipeline.cameras import render_mesh, scale_intrinsics, silhouettes
from pipeline.schema import REFERENCE_ARRAYS, Store

log = logging.getLogger(__name__)



def select_objects(store, object_ids: list[str], config: EvalConfig) -> list[str]:
    """The split's objects that config.objects, config.per_category and config.limit keep, in split order.
    An id not in the split is an error naming it."""
    if config.objects:
        unknown = [o for o in config.objects if o not in set(object_ids)]
        if unknown:
            raise ValueError(f"{store.path}: {unknown[0]!r} is not an object of split {config.split!r}"
                             f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
        wanted = set(config.objects)
        object_ids = [o for o in object_ids if o in wanted]
    if config.per_category is not None:
        taken: dict[str, int] = {}
        kept = []
        for o in object_ids:
            category = store.info(o)["category"]
            if taken.get(category, 0) < config.per_category:
                taken[category] = taken.get(category, 0) + 1
                kept.append(o)
        object_ids = kept
    return object_ids if config.limit is None else object_ids[: config.limit]


@dataclass
class InputView:
    """The single view a prediction starts from: image uint8 (H, W, 3|4), K (3, 3) pixels, Rt (3, 4)."""

    object_id: str
    category: str
    image: np.ndarray
    K: np.ndarray
    Rt: np.ndarray


def _silhouette_views(n_views: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_views - 1, num=min(wanted, n_views)).round().astype(int))


def _check_reference(store: Store, object_id: str) -> None:
    missing = [n for n in REFERENCE_ARRAYS if n not in store.array_names(object_id)]
    if missing:
        raise ValueError(f"{store.path}: object {object_id!r} has no {missing[0]}; evaluation needs the "
                         "reference arrays, which preprocess writes for the splits in "
                         "params['reference_splits']")


def _worst_row() -> dict[str, object]:
    return {"iou": 0.0, "chamfer_l1": metrics.WORST_DISTANCE, "ecd": metrics.WORST_DISTANCE,
            "normal_consistency": metrics.WORST_NORMAL_CONSISTENCY, "fscore": metrics.WORST_FSCORE,
            "silhouette_iou": 0.0, "precision": 0.0, "recall": 0.0}


def evaluate_object(store: Store, object_id: str, make_field: Callable[[InputView], Field], out_dir: Path,
                    config: EvalConfig) -> tuple[dict[str, object], str | None]:
    """Reconstruct, mesh, score and draw one object -> (metrics row, picture path relative to out_dir)."""
    t0 = time.perf_counter()
    info = store.info(object_id)
    n_views = store.read(object_id, "K").shape[0]
    if not 0 <= config.view < n_views:
        raise ValueError(f"object {object_id!r} has {n_views} views; --view {config.view} is out of range")
    view = InputView(object_id, info["category"], store.read(object_id, "images", config.view),
                     store.read(object_id, "K", config.view), store.read(object_id, "Rt", config.view))
    ref = store.load(object_id, [*REFERENCE_ARRAYS, "scale", "center"])

    field_fn = make_field(view)
    extraction: Extraction = extract_mesh(field_fn, config.resolution, config.coarse, THRESHOLD,
                                          config.batch_size)
    # IoU from the field itself, defined even where the mesh is empty (docs/METRICS.md)
    occupancy = CountingField(field_fn, config.batch_size)(ref["ref_uniform_points"])
    row: dict[str, object] = {"object_id": object_id, "category": info["category"],
                              "iou": metrics.volumetric_iou(occupancy > THRESHOLD, ref["ref_uniform_inside"])}
    row.update(metrics.surface_scores(extraction.vertices, extraction.faces, ref["ref_surface_points"],
                                      ref["ref_surface_normals"], config.n_samples, config.tau, config.seed))

    views = _silhouette_views(n_views, config.silhouette_views)
    K_all, Rt_all = store.read(object_id, "K"), store.read(object_id, "Rt")
    ref_masks = np.stack([store.read(object_id, "images", int(v))[..., 3] > 0 for v in views])
    height, width = ref_masks.shape[1:]
    pred_masks = silhouettes(extraction.vertices, extraction.faces, K_all[views], Rt_all[views], height,
                             width)
    row["silhouette_iou"] = metrics.silhouette_iou(pred_masks, ref_masks)

    for fmt in config.formats:
        write_mesh(extraction.vertices, extraction.faces, out_dir / "meshes" / f"{object_id}.{fmt}")
        if config.original_units:
            original = extraction.vertices * float(ref["scale"]) + np.asarray(ref["center"], np.float32)
            write_mesh(original.astype(np.float32), extraction.faces,
                       out_dir / "meshes_original_units" / f"{object_id}.{fmt}")

    picture = _picture(view, extraction, ref, info, config.picture_scale)
    rel = f"pictures/{object_id}.png"
    save_png(picture, out_dir / rel)

    row.update(n_vertices=len(extraction.vertices), n_faces=len(extraction.faces),
               n_queries=extraction.n_queries, seconds=round(time.perf_counter() - t0, 3),
               status="ok" if extraction.status == "ok" else f"{extraction.status}: the field never crosses "
               f"{THRESHOLD} on the {config.resolution}^3 grid (max occupancy at the reference points "
               f"{float(occupancy.max()) if len(occupancy) else 0.0:.3f})")
    return row, rel


def _picture(view: InputView, extraction: Extraction, ref: dict, info: dict, scale: int) -> np.ndarray:
    """Strip: input image | prediction | ground truth, both rendered from the input camera."""
    h, w = view.image.shape[:2]
    K = scale_intrinsics(view.K, scale)
    pred = render_mesh(extraction.vertices, extraction.faces, K, view.Rt, h * scale, w * scale, PRED_COLOR)
    gt_mesh = load_source_mesh(info, float(ref["scale"]), ref["center"])
    if gt_mesh is not None:
        gt = render_mesh(*gt_mesh, K, view.Rt, h * scale, w * scale, GT_COLOR)
        gt_label = "ground truth"
    else:
        gt = render_points(ref["ref_surface_points"], K, view.Rt, h * scale, w * scale,
                           ref["ref_surface_normals"])
        gt_label = "ground truth (points: source mesh missing)"
    pred_label = "prediction" if extraction.status == "ok" else "prediction (no surface)"
    return compose_strip([view.image, pred, gt], [f"input view ({view.object_id})", pred_label, gt_label],
                         tile=h * scale)


def evaluate_store(store: Store, make_field: Callable[[InputView], Field], out_dir: str | os.PathLike,
                   config: EvalConfig, progress: bool = True) -> list[dict[str, object]]:
    """Evaluate every object of config.split; writes meshes/, pictures/, metrics.csv, table1.*, report.md.

    A failure on one object is scored with the worst values (status says why) and the loop goes on;
    metrics.csv is rewritten after every object so an interrupted run keeps what it scored.
    """
    from tqdm import tqdm

    from common.progress import bar_options

    out_dir = Path(out_dir)
    object_ids = store.split(config.split)
    if not object_ids:
        raise ValueError(f"{store.path}: no objects in split {config.split!r} (splits hold "
                         f"{sorted({store.info(o)['split'] for o in store.object_ids})})")
    object_ids = select_objects(store, object_ids, config)
    _check_reference(store, object_ids[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    pictures: dict[str, str] = {}
    for object_id in tqdm(object_ids, desc=f"eval {config.split}", unit="object", disable=not progress,
                          **bar_options(total=len(object_ids))):
        try:
            row, picture = evaluate_object(store, object_id, make_field, out_dir, config)
            pictures[object_id] = picture
        except Exception as exc:  # noqa: BLE001 - one object's failure is scored and reported, not fatal
            log.exception("object %s failed", object_id)
            reason = first_line(exc)
            row = {"object_id": object_id, "category": store.info(object_id)["category"], **_worst_row(),
                   "status": f"error: {reason}"}
        rows.append(row)
        write_metrics_csv(rows, out_dir / "metrics.csv")
    settings = {"data": str(store.path), **{k: v for k, v in asdict(config).items() if k != "extra"},
                **config.extra}
    atomic_write_text(out_dir / "eval.json", json.dumps(settings, indent=1, default=str))
    write_table(category_table(rows), out_dir / "table1")
    write_report(out_dir, rows, settings, pictures)
    return rows
