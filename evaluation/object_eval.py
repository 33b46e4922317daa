"""One object's eval, predict and score: what each executor runs per object, on its own (evaluation.executors).

predict_object is the field's work: encode the input view, extract the mesh coarse-to-fine, query the field at the
IoU points. score_object is everything after it: surface metrics, silhouettes, mesh files, picture, and the
object's record (evaluation.results). predict_one, score_one and evaluate_one are the same as tasks: an object
that fails becomes its error result (the worst values, its status saying why), never an exception.

The predictor enters as `make_field(view) -> field`, so the same code runs on a trained network
(evaluation.fields.CheckpointFields) and on an analytic or ground-truth field (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import first_line
from common.timing import LapTimer
from evaluation import metrics
from evaluation.config import EvalConfig
from evaluation.mesh_page import GT_RGB, PRED_RGB, decimate, encode_meshes, png_data_url, view_from_camera
from evaluation.render import GT_COLOR, PRED_COLOR, compose_strip, load_source_mesh, render_points, save_png
from evaluation.results import ObjectResult, ResultFolder
from inference.extract_mesh import CountingField, Extraction, Field, extract_mesh
from inference.mesh_io import vertex_normals, write_mesh
from pipeline.cameras import picture_views, render_mesh, scale_intrinsics, silhouettes
from pipeline.schema.layout import object_file
from pipeline.schema.read import Store

log = logging.getLogger(__name__)

# The steps of one object, in order, as the `timings` of its record name them (benchmarks/bench_eval.py):
# predict: read (its inputs), encode (make_field: the image encoder, once per object), queries (the field at the
# extraction's grid points), grid (the coarse-to-fine bookkeeping), marching_cubes, iou_queries (the field at
# the reference uniform points); score: read, sampling (points on the predicted mesh), nearest (the KD-trees
# behind Chamfer-L1, normal consistency and F-score), ecd, silhouettes, write (mesh files), pictures, page (the
# decimated meshes of report.html), record.
STEPS = ("read", "encode", "queries", "grid", "marching_cubes", "iou_queries", "sampling", "nearest", "ecd",
         "silhouettes", "write", "pictures", "page", "record")


@dataclass
class InputView:
    """The single view a prediction starts from: image uint8 (H, W, 3|4), K (3, 3) pixels, Rt (3, 4)."""

    object_id: str
    category: str
    image: np.ndarray
    K: np.ndarray
    Rt: np.ndarray


@dataclass
class Prediction:
    """What the field decided for one object: the mesh (normalised frame; vertices (V, 3) float32, faces (F, 3)
    int64), the extraction's status and queries, and the volumetric IoU of the field at the reference points."""

    object_id: str
    vertices: np.ndarray
    faces: np.ndarray
    status: str
    n_queries: int
    iou: float
    max_occupancy: float
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class EvalJob:
    """What every task of one eval run shares; Dask ships it to each worker once, not with every task.

    neighbour_workers: the KD-tree query threads of the metrics (-1 all cores; the executor sets 1 on a one-core
    Dask worker).
    """

    store_path: str
    out_dir: str
    config: EvalConfig
    make_field: Callable[[InputView], Field]
    digest: str = ""
    neighbour_workers: int = -1


def _silhouette_views(n_views: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_views - 1, num=min(wanted, n_views)).round().astype(int))


def _worst_row() -> dict[str, object]:
    return {"iou": 0.0, **metrics.WORST_SURFACE_SCORES, "silhouette_iou": 0.0}


def read_view(store: Store, object_id: str, index: int) -> InputView:
    """The stored view `index` of an object as the network's input."""
    n_views = store.read(object_id, "K").shape[0]
    if not 0 <= index < n_views:
        raise ValueError(f"object {object_id!r} has {n_views} views; --view {index} is out of range")
    return InputView(object_id, store.info(object_id)["category"], store.read(object_id, "images", index),
                     store.read(object_id, "K", index), store.read(object_id, "Rt", index))


def predict_object(store: Store, object_id: str, make_field: Callable[[InputView], Field],
                   config: EvalConfig) -> Prediction:
    """The field's half of one object: encode the view, extract the mesh at config.level, IoU of the field
    itself at the same level."""
    timings: dict[str, float] = {}
    clock = LapTimer(timings)
    view = read_view(store, object_id, config.view)
    ref = store.load(object_id, ["ref_uniform_points", "ref_uniform_inside"])
    clock.lap("read")
    field_fn = make_field(view)
    clock.lap("encode")
    extraction: Extraction = extract_mesh(field_fn, config.resolution, config.coarse, config.level,
                                          config.batch_size)
    clock.lap("extraction")
    timings["queries"] = extraction.query_seconds
    timings["marching_cubes"] = extraction.marching_seconds
    timings["grid"] = timings.pop("extraction") - extraction.query_seconds - extraction.marching_seconds
    # IoU from the field itself, defined even where the mesh is empty (docs/METRICS.md)
    occupancy = CountingField(field_fn, config.batch_size)(ref["ref_uniform_points"])
    iou = metrics.volumetric_iou(occupancy > config.level, ref["ref_uniform_inside"])
    clock.lap("iou_queries")
    return Prediction(object_id, extraction.vertices, extraction.faces, extraction.status, extraction.n_queries,
                      iou, float(occupancy.max()) if len(occupancy) else 0.0, timings, clock.elapsed)


def score_object(store: Store, prediction: Prediction, job: EvalJob) -> ObjectResult:
    """Everything after the field: surface metrics, silhouette IoU, mesh files and the picture of one object,
    with the run's settings (job.config), into its folder (job.out_dir), the metrics' KD-trees queried by
    job.neighbour_workers threads."""
    out_dir, config = Path(job.out_dir), job.config
    object_id = prediction.object_id
    timings = dict(prediction.timings)
    clock = LapTimer(timings)
    info = store.info(object_id)
    ref = store.load(object_id, ["ref_surface_points", "ref_surface_normals", "scale", "center"])
    clock.lap("read")
    # own copies: arrays that arrived from another process (Dask) may wrap a buffer open3d refuses ("=f")
    prediction = replace(prediction, vertices=np.array(prediction.vertices, np.float32, copy=True),
                         faces=np.array(prediction.faces, np.int64, copy=True))
    vertices, faces = prediction.vertices, prediction.faces
    row: dict[str, object] = {"object_id": object_id, "category": info["category"], "iou": prediction.iou}
    row.update(metrics.surface_scores(vertices, faces, ref["ref_surface_points"], ref["ref_surface_normals"],
                                      config.n_samples, config.tau, config.seed, workers=job.neighbour_workers,
                                      timings=timings, tau_2=config.tau_2))
    clock.skip()  # surface_scores timed its own steps

    K_all, Rt_all = store.read(object_id, "K"), store.read(object_id, "Rt")
    views = _silhouette_views(len(K_all), config.silhouette_views)
    # the object's views are stored together: one read decodes them once (a read per view decoded them 8 times)
    images_all = store.read(object_id, "images")
    ref_masks = images_all[views, ..., 3] > 0
    height, width = ref_masks.shape[1:]
    pred_masks = silhouettes(vertices, faces, K_all[views], Rt_all[views], height, width)
    row["silhouette_iou"] = metrics.silhouette_iou(pred_masks, ref_masks)
    clock.lap("silhouettes")

    files = []
    # the files at --faces, if asked; every metric above and the pictures below use the full mesh
    file_v, file_f = (vertices, faces) if config.faces is None else decimate(vertices, faces, config.faces)
    normals = vertex_normals(file_v, file_f)  # once for every file: the original units are a scale and a shift
    for fmt in config.formats:
        path = object_file(out_dir / "meshes", object_id, f".{fmt}")
        write_mesh(file_v, file_f, path, normals)
        files.append(path.relative_to(out_dir).as_posix())
        if config.original_units:
            original = file_v * float(ref["scale"]) + np.asarray(ref["center"], np.float32)
            path = object_file(out_dir / "meshes_original_units", object_id, f".{fmt}")
            write_mesh(original.astype(np.float32), file_f, path, normals)
            files.append(path.relative_to(out_dir).as_posix())
    clock.lap("write")

    picture = None
    if config.pictures:
        gt_mesh = load_source_mesh(info, float(ref["scale"]), ref["center"])
        shown = picture_views(Rt_all, config.view, PICTURE_VIEWS)
        path = object_file(out_dir / "pictures", object_id, ".png")
        save_png(_picture(object_id, images_all, K_all, Rt_all, shown, prediction, ref, gt_mesh,
                          config.picture_scale), path)
        picture = path.relative_to(out_dir).as_posix()
        files.append(picture)
        clock.lap("pictures")
        path = object_file(out_dir / PAGE_FOLDER, object_id, ".json")
        atomic_write_text(path, json.dumps(page_payload(images_all[config.view], Rt_all[config.view], prediction,
                                                        gt_mesh, config), allow_nan=False))
        files.append(path.relative_to(out_dir).as_posix())
        clock.lap("page")

    row.update(n_vertices=len(vertices), n_faces=len(faces), n_queries=prediction.n_queries,
               seconds=round(prediction.seconds + clock.elapsed, 3),
               status="ok" if prediction.status == "ok" else f"{prediction.status}: the field never crosses "
               f"{config.level:g} on the {config.resolution}^3 grid (max occupancy at the reference points "
               f"{prediction.max_occupancy:.3f})")
    return ObjectResult(object_id, row, picture, files, timings, content_hash=info.get("content_hash", ""))


PICTURE_VIEWS = 4
"""stored views in each object's picture: the input and three spread around the object, where a single-view
prediction shows what it lost (thickness, depth, the far side)"""


PAGE_FOLDER = "page"
"""OUT/page/<object_id>.json: one object's part of report.html (evaluation.report_page), written with its picture"""


def page_payload(image: np.ndarray, Rt: np.ndarray, prediction: Prediction,
                 gt_mesh: tuple[np.ndarray, np.ndarray] | None, config: EvalConfig) -> dict[str, object]:
    """The input image, the prediction and the ground truth decimated to config.page_faces faces each (the
    normalised frame), and the input camera the page starts from (evaluation.mesh_page)."""
    meshes = [("prediction", PRED_RGB, prediction.vertices, prediction.faces)]
    if gt_mesh is not None:
        meshes.append(("ground truth", GT_RGB, *gt_mesh))
    return {"images": [[f"input view {config.view}", png_data_url(image)]],
            "meshes": encode_meshes(meshes, config.page_faces), "view": view_from_camera(Rt)}


def _picture(object_id: str, images: np.ndarray, K: np.ndarray, Rt: np.ndarray, shown: list[int],
             prediction: Prediction, ref: dict, gt_mesh: tuple[np.ndarray, np.ndarray] | None,
             scale: int) -> np.ndarray:
    """One row per view in `shown` (the input first): the stored image | the prediction | the ground truth, both
    meshes rendered alike from that view's camera; gt_mesh None: the reference points stand in."""
    h, w = images.shape[1:3]
    gt_label = "ground truth" if gt_mesh is not None else "ground truth (points: source mesh missing)"
    pred_label = "prediction" if prediction.status == "ok" else "prediction (no surface)"
    rows = []
    for v in shown:
        Kv, Rtv = scale_intrinsics(K[v], scale), Rt[v]
        pred = render_mesh(prediction.vertices, prediction.faces, Kv, Rtv, h * scale, w * scale, PRED_COLOR)
        if gt_mesh is not None:
            gt = render_mesh(*gt_mesh, Kv, Rtv, h * scale, w * scale, GT_COLOR)
        else:
            gt = render_points(ref["ref_surface_points"], Kv, Rtv, h * scale, w * scale, ref["ref_surface_normals"])
        name = f"INPUT view {v} ({object_id})" if v == shown[0] else f"view {v}"
        rows.append(compose_strip([images[v], pred, gt], [name, pred_label, gt_label], tile=h * scale))
    return np.concatenate(rows)


# ---- one object as a task: errors become a scored row (docs/METRICS.md, "Failures"), never an exception ----
def error_result(store: Store, object_id: str, exc: BaseException, seconds: float = 0.0) -> ObjectResult:
    """The worst-values row of an object whose prediction or scoring raised; the traceback goes to the log."""
    log.error("object %s failed", object_id, exc_info=(type(exc), exc, exc.__traceback__))
    row = {"object_id": object_id, "category": store.info(object_id)["category"], **_worst_row(),
           "seconds": round(seconds, 3), "status": f"error: {first_line(exc)}"}
    return ObjectResult(object_id, row)


def _score_and_record(store: Store, job: EvalJob, prediction: Prediction) -> ObjectResult:
    result = score_object(store, prediction, job)
    result.digest = job.digest
    t0 = time.perf_counter()
    ResultFolder(job.out_dir).write(result)
    result.timings["record"] = time.perf_counter() - t0
    return result


def predict_one(store: Store, job: EvalJob, object_id: str) -> Prediction | ObjectResult:
    """predict_object, or the error result of the object."""
    t0 = time.perf_counter()
    try:
        return predict_object(store, object_id, job.make_field, job.config)
    except Exception as exc:  # noqa: BLE001 - one object's failure is scored and reported, not fatal
        return error_result(store, object_id, exc, time.perf_counter() - t0)


def score_one(store: Store, job: EvalJob, prediction: Prediction) -> ObjectResult:
    """score_object and the object's record on disk, or the error result of the object."""
    t0 = time.perf_counter()
    try:
        return _score_and_record(store, job, prediction)
    except Exception as exc:  # noqa: BLE001 - as predict_one
        return error_result(store, prediction.object_id, exc, prediction.seconds + time.perf_counter() - t0)


def evaluate_one(store: Store, job: EvalJob, object_id: str) -> ObjectResult:
    """One object end to end (predict, score, record); a failure is its error result."""
    prediction = predict_one(store, job, object_id)
    return prediction if isinstance(prediction, ObjectResult) else score_one(store, job, prediction)

