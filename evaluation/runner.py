"""The eval loop: for every object of a split, reconstruct from one view, mesh, score, draw, write.

Each object is two halves. predict_object is the field's work: encode the input view, extract the mesh
coarse-to-fine, query the field at the IoU points. score_object is everything after it: surface metrics,
silhouettes, mesh files, picture, and the object's record (evaluation.results). evaluation.executors runs them
as a plain loop, on Dask workers that each do whole objects with their own copy of the network, or with this
process owning the network (a GPU) and predicting while the workers score; the values are the same either way.

The predictor enters as `make_field(view) -> field`, so the loop runs the same on a trained network
(evaluation.fields.CheckpointFields) and on an analytic or ground-truth field (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import first_line
from evaluation import metrics
from evaluation.config import EvalConfig
from evaluation.render import GT_COLOR, PRED_COLOR, compose_strip, load_source_mesh, render_points, save_png
from evaluation.report import category_table, write_metrics_csv, write_report, write_table
from evaluation.results import ObjectResult, ResultFolder, run_identity
from inference.extract_mesh import THRESHOLD, CountingField, Extraction, Field, extract_mesh
from inference.mesh_io import write_mesh
from pipeline.cameras import render_mesh, scale_intrinsics, silhouettes
from pipeline.config import reference_half
from pipeline.schema import REFERENCE_ARRAYS, Store, object_file

log = logging.getLogger(__name__)

# The steps of one object, in order, as the `timings` of its record name them (benchmarks/bench_eval.py):
# predict: read (its inputs), encode (make_field: the image encoder, once per object), queries (the field at the
# extraction's grid points), grid (the coarse-to-fine bookkeeping), marching_cubes, iou_queries (the field at
# the reference uniform points); score: read, sampling (points on the predicted mesh), nearest (the KD-trees
# behind Chamfer-L1, normal consistency and F-score), ecd, silhouettes, write (mesh files), pictures, record.
STEPS = ("read", "encode", "queries", "grid", "marching_cubes", "iou_queries", "sampling", "nearest", "ecd",
         "silhouettes", "write", "pictures", "record")
CSV_REFRESH_SECONDS = 30.0  # metrics.csv is rewritten this often while a run goes on (and at its end)


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

    neighbour_workers: the KD-tree query threads of the metrics (-1 all cores; 1 on a one-core Dask worker).
    """

    store_path: str
    out_dir: str
    config: EvalConfig
    make_field: Callable[[InputView], Field]
    digest: str = ""
    neighbour_workers: int = -1


class _Clock:
    def __init__(self, timings: dict[str, float]):
        self.timings = timings
        self.start = self.t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = self.timings.get(step, 0.0) + now - self.t
        self.t = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _silhouette_views(n_views: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_views - 1, num=min(wanted, n_views)).round().astype(int))


def _check_reference(store: Store, object_id: str) -> None:
    missing = [n for n in REFERENCE_ARRAYS if n not in store.array_names(object_id)]
    if missing:
        raise ValueError(f"{store.path}: object {object_id!r} has no {missing[0]}; evaluation needs the "
                         "reference arrays, which preprocess writes for the splits in "
                         "params['reference_splits']")


def _worst_row() -> dict[str, object]:
    return {"iou": 0.0, **metrics.WORST_SURFACE_SCORES, "silhouette_iou": 0.0}


def iou_box(store: Store) -> str:
    """The box of the store's reference uniform points, where IoU is estimated, as the report states it; a store
    written before the padding (pipeline-4 and older) is named as such, since its IoU is not OccNet's."""
    padding = store.params.get("reference_padding")
    if padding is None:
        return ("[-0.5, 0.5]^3, the unit cube unpadded: this store was written before pipeline-5, so volume "
                "predicted outside the object's box is not counted and IoU reads higher than OccNet's; rerun "
                "`aps preprocess` on it (docs/METRICS.md)")
    half = reference_half(padding)
    return f"[-{half:g}, {half:g}]^3, the unit cube padded by {float(padding):g}" + (
        " (OccNet's box)" if float(padding) == 0.1 else "")


def read_view(store: Store, object_id: str, index: int) -> InputView:
    """The stored view `index` of an object as the network's input."""
    n_views = store.read(object_id, "K").shape[0]
    if not 0 <= index < n_views:
        raise ValueError(f"object {object_id!r} has {n_views} views; --view {index} is out of range")
    return InputView(object_id, store.info(object_id)["category"], store.read(object_id, "images", index),
                     store.read(object_id, "K", index), store.read(object_id, "Rt", index))


def predict_object(store: Store, object_id: str, make_field: Callable[[InputView], Field],
                   config: EvalConfig) -> Prediction:
    """The field's half of one object: encode the view, extract the mesh at 0.5, IoU of the field itself."""
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    view = read_view(store, object_id, config.view)
    ref = store.load(object_id, ["ref_uniform_points", "ref_uniform_inside"])
    clock.lap("read")
    field_fn = make_field(view)
    clock.lap("encode")
    extraction: Extraction = extract_mesh(field_fn, config.resolution, config.coarse, THRESHOLD,
                                          config.batch_size)
    clock.lap("extraction")
    timings["queries"] = extraction.query_seconds
    timings["marching_cubes"] = extraction.marching_seconds
    timings["grid"] = timings.pop("extraction") - extraction.query_seconds - extraction.marching_seconds
    # IoU from the field itself, defined even where the mesh is empty (docs/METRICS.md)
    occupancy = CountingField(field_fn, config.batch_size)(ref["ref_uniform_points"])
    iou = metrics.volumetric_iou(occupancy > THRESHOLD, ref["ref_uniform_inside"])
    clock.lap("iou_queries")
    return Prediction(object_id, extraction.vertices, extraction.faces, extraction.status, extraction.n_queries,
                      iou, float(occupancy.max()) if len(occupancy) else 0.0, timings, clock.elapsed)


def score_object(store: Store, prediction: Prediction, out_dir: str | os.PathLike, config: EvalConfig,
                 neighbour_workers: int = -1) -> ObjectResult:
    """Everything after the field: surface metrics, silhouette IoU, mesh files and the picture of one object."""
    out_dir = Path(out_dir)
    object_id = prediction.object_id
    timings = dict(prediction.timings)
    clock = _Clock(timings)
    info = store.info(object_id)
    ref = store.load(object_id, ["ref_surface_points", "ref_surface_normals", "scale", "center"])
    clock.lap("read")
    # own copies: arrays that arrived from another process (Dask) may wrap a buffer open3d refuses ("=f")
    prediction = replace(prediction, vertices=np.array(prediction.vertices, np.float32, copy=True),
                         faces=np.array(prediction.faces, np.int64, copy=True))
    vertices, faces = prediction.vertices, prediction.faces
    row: dict[str, object] = {"object_id": object_id, "category": info["category"], "iou": prediction.iou}
    row.update(metrics.surface_scores(vertices, faces, ref["ref_surface_points"], ref["ref_surface_normals"],
                                      config.n_samples, config.tau, config.seed, workers=neighbour_workers,
                                      timings=timings, tau_2=config.tau_2))
    clock.t = time.perf_counter()

    K_all, Rt_all = store.read(object_id, "K"), store.read(object_id, "Rt")
    views = _silhouette_views(len(K_all), config.silhouette_views)
    ref_masks = np.stack([store.read(object_id, "images", int(v))[..., 3] > 0 for v in views])
    height, width = ref_masks.shape[1:]
    pred_masks = silhouettes(vertices, faces, K_all[views], Rt_all[views], height, width)
    row["silhouette_iou"] = metrics.silhouette_iou(pred_masks, ref_masks)
    clock.lap("silhouettes")

    files = []
    for fmt in config.formats:
        path = object_file(out_dir / "meshes", object_id, f".{fmt}")
        write_mesh(vertices, faces, path)
        files.append(path.relative_to(out_dir).as_posix())
        if config.original_units:
            original = vertices * float(ref["scale"]) + np.asarray(ref["center"], np.float32)
            path = object_file(out_dir / "meshes_original_units", object_id, f".{fmt}")
            write_mesh(original.astype(np.float32), faces, path)
            files.append(path.relative_to(out_dir).as_posix())
    clock.lap("write")

    picture = None
    if config.pictures:
        view = read_view(store, object_id, config.view)
        path = object_file(out_dir / "pictures", object_id, ".png")
        save_png(_picture(view, prediction, ref, info, config.picture_scale), path)
        picture = path.relative_to(out_dir).as_posix()
        files.append(picture)
        clock.lap("pictures")

    row.update(n_vertices=len(vertices), n_faces=len(faces), n_queries=prediction.n_queries,
               seconds=round(prediction.seconds + clock.elapsed, 3),
               status="ok" if prediction.status == "ok" else f"{prediction.status}: the field never crosses "
               f"{THRESHOLD} on the {config.resolution}^3 grid (max occupancy at the reference points "
               f"{prediction.max_occupancy:.3f})")
    return ObjectResult(object_id, row, picture, files, timings, content_hash=info.get("content_hash", ""))


def _picture(view: InputView, prediction: Prediction, ref: dict, info: dict, scale: int) -> np.ndarray:
    """Strip: input image | prediction | ground truth, both rendered from the input camera."""
    h, w = view.image.shape[:2]
    K = scale_intrinsics(view.K, scale)
    pred = render_mesh(prediction.vertices, prediction.faces, K, view.Rt, h * scale, w * scale, PRED_COLOR)
    gt_mesh = load_source_mesh(info, float(ref["scale"]), ref["center"])
    if gt_mesh is not None:
        gt = render_mesh(*gt_mesh, K, view.Rt, h * scale, w * scale, GT_COLOR)
        gt_label = "ground truth"
    else:
        gt = render_points(ref["ref_surface_points"], K, view.Rt, h * scale, w * scale,
                           ref["ref_surface_normals"])
        gt_label = "ground truth (points: source mesh missing)"
    pred_label = "prediction" if prediction.status == "ok" else "prediction (no surface)"
    return compose_strip([view.image, pred, gt], [f"input view ({view.object_id})", pred_label, gt_label],
                         tile=h * scale)


# ---- one object as a task: errors become a scored row (docs/METRICS.md, "Failures"), never an exception ----
def error_result(store: Store, object_id: str, exc: BaseException, seconds: float = 0.0) -> ObjectResult:
    """The worst-values row of an object whose prediction or scoring raised; the traceback goes to the log."""
    log.error("object %s failed", object_id, exc_info=(type(exc), exc, exc.__traceback__))
    row = {"object_id": object_id, "category": store.info(object_id)["category"], **_worst_row(),
           "seconds": round(seconds, 3), "status": f"error: {first_line(exc)}"}
    return ObjectResult(object_id, row)


def _finish(store: Store, job: EvalJob, prediction: Prediction) -> ObjectResult:
    result = score_object(store, prediction, job.out_dir, job.config, job.neighbour_workers)
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
        return _finish(store, job, prediction)
    except Exception as exc:  # noqa: BLE001 - as predict_one
        return error_result(store, prediction.object_id, exc, prediction.seconds + time.perf_counter() - t0)


def evaluate_one(store: Store, job: EvalJob, object_id: str) -> ObjectResult:
    """One object end to end (predict, score, record); a failure is its error result."""
    prediction = predict_one(store, job, object_id)
    return prediction if isinstance(prediction, ObjectResult) else score_one(store, job, prediction)


# ---- the run ----------------------------------------------------------------------------------------------
class _Tracker:
    """The progress bar and the per-object log line (which object, how long, the running mean), and the
    periodic metrics.csv of what is finished so far."""

    def __init__(self, object_ids: list[str], done: dict[str, ObjectResult], out_dir: Path, desc: str,
                 progress: bool):
        from tqdm import tqdm

        from common.progress import bar_options

        self.object_ids, self.results, self.out_dir = object_ids, dict(done), out_dir
        self.bar = tqdm(total=len(object_ids), initial=len(done), desc=desc, unit="object",
                        disable=not progress, **bar_options(total=len(object_ids)))
        self.start = self.last_csv = time.perf_counter()
        self.n = 0
        self.work = 0.0
        self.steps: dict[str, float] = {}

    def add(self, result: ObjectResult) -> None:
        self.results[result.object_id] = result
        self.n += 1
        self.work += result.seconds
        for step, seconds in result.timings.items():
            self.steps[step] = self.steps.get(step, 0.0) + seconds
        wall = time.perf_counter() - self.start
        status = str(result.row.get("status", ""))
        log.info("%s: %s in %.1f s (%d/%d; mean %.1f s per object, %.2f objects/s)", result.object_id,
                 status if status == "ok" or status.startswith("error") else status.split(":")[0],
                 result.seconds, len(self.results), len(self.object_ids), self.work / self.n, self.n / wall)
        self.bar.set_postfix_str(f"{result.object_id} {result.seconds:.1f}s, mean {self.work / self.n:.1f}s",
                                 refresh=False)
        self.bar.update(1)
        if time.perf_counter() - self.last_csv > CSV_REFRESH_SECONDS:
            write_metrics_csv(self.rows(), self.out_dir / "metrics.csv")
            self.last_csv = time.perf_counter()

    def rows(self) -> list[dict[str, object]]:
        return [self.results[o].row for o in self.object_ids if o in self.results]

    def summary(self) -> str:
        wall = time.perf_counter() - self.start
        skipped = len(self.results) - self.n
        line = (f"eval: {self.n} objects in {wall:.1f} s ({self.n / wall if wall else 0.0:.2f} objects/s, "
                f"{self.work / max(self.n, 1):.2f} s of work per object)"
                f"{f', {skipped} finished earlier and skipped' if skipped else ''}")
        if self.n:
            steps = ", ".join(f"{s} {self.steps[s] / self.n:.2f}" for s in STEPS if s in self.steps)
            line += f"; s per object by step: {steps}"
        return line


def evaluate_store(store: Store, make_field: Callable[[InputView], Field], out_dir: str | os.PathLike,
                   config: EvalConfig, progress: bool = True, scheduler: str = "serial",
                   workers: int | None = None, network: str = "workers", field_id: str = ""
                   ) -> list[dict[str, object]]:
    """Evaluate every object of config.split; writes meshes/, pictures/, objects/, metrics.csv, table1.*,
    report.md and, once every object is done, eval.json. Returns the metrics rows in split order.

    scheduler: 'serial' (a plain loop here), 'local' (a Dask LocalCluster of `workers` one-core processes) or
    the address of a running Dask scheduler (its workers must see the store and out_dir). network: 'workers'
    (each Dask worker calls make_field itself: make_field must pickle, e.g. evaluation.fields.CheckpointFields)
    or 'client' (this process runs make_field and every query, the workers score: for one GPU).
    field_id: what the field is (a checkpoint's sha256); with config and the store it names the results, so a
    rerun into out_dir skips the objects already finished and refuses results of other settings
    (evaluation.results). A failure on one object is scored with the worst values (status says why).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from evaluation.executors import run_objects

    out_dir = Path(out_dir)
    object_ids = store.split(config.split)
    if not object_ids:
        raise ValueError(f"{store.path}: no objects in split {config.split!r} (splits hold "
                         f"{sorted({store.info(o)['split'] for o in store.object_ids})})")
    object_ids = select_objects(store, object_ids, config)
    _check_reference(store, object_ids[0])
    if "reference_padding" not in store.params:
        log.warning("%s: IoU in %s", store.path, iou_box(store))
    folder = ResultFolder(out_dir)
    with folder.lock():
        digest = folder.claim(run_identity(config, field_id, store))
        done = folder.finished(store, object_ids, digest)
        todo = [o for o in object_ids if o not in done]
        if done:
            log.info("%s: %d of %d objects finished by an earlier run with the same settings; %d to do", out_dir,
                     len(done), len(object_ids), len(todo))
        job = EvalJob(str(store.path), str(out_dir), config, make_field, digest)
        tracker = _Tracker(object_ids, done, out_dir, f"eval {config.split}", progress)
        try:
            with logging_redirect_tqdm():  # the per-object lines go above a live bar, not through it
                for result in run_objects(job, store, todo, scheduler, workers, network):
                    tracker.add(result)
        finally:
            tracker.bar.close()
        log.info("%s", tracker.summary())
        rows = tracker.rows()
        _write_tables(store, out_dir, config, rows, tracker.results.values(), tracker)
    return rows


def _write_tables(store: Store, out_dir: Path, config: EvalConfig, rows: list[dict[str, object]],
                  results: Iterable[ObjectResult], tracker: _Tracker) -> None:
    write_metrics_csv(rows, out_dir / "metrics.csv")
    settings = {"data": str(store.path), "iou_box": iou_box(store),
                **{k: v for k, v in asdict(config).items() if k != "extra"}, **config.extra}
    write_table(category_table(rows), out_dir / "table1")
    pictures = {r.object_id: r.picture for r in results if r.picture}
    write_report(out_dir, rows, settings, pictures)
    per_object = {s: tracker.steps[s] / tracker.n for s in STEPS if s in tracker.steps} if tracker.n else {}
    # last: experiments/ablation takes eval.json as the mark of a finished eval
    atomic_write_text(out_dir / "eval.json", json.dumps(
        {**settings, "objects": len(rows), "scored_this_run": tracker.n,
         "seconds_per_object_by_step": {k: round(v, 4) for k, v in per_object.items()},
         "failed": sum(str(r.get("status", "")).startswith("error") for r in rows)},
        indent=1, default=str, allow_nan=False))
