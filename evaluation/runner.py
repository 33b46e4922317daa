"""The eval run: which objects (objects_to_evaluate), run where an EvalExecutor says (evaluation.executors, each
object's work in evaluation.object_eval), its progress, and the tables and reports of the results
(metrics.csv, table1, report.md, report.html, eval.json). A rerun into the same folder skips the objects already
finished (evaluation.results); the values are the same on every executor.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from common.atomic import atomic_write_text
from common.progress import bar_options
from evaluation.config import EvalConfig
from evaluation.executors import EvalExecutor, run_objects
from evaluation.object_eval import STEPS, EvalJob, InputView
from evaluation.report import category_table, write_metrics_csv, write_report, write_table
from evaluation.report_page import write_report_page
from evaluation.results import ObjectResult, ResultFolder, run_identity
from inference.extract_mesh import Field
from pipeline.config import reference_half
from pipeline.schema.layout import REFERENCE_ARRAYS
from pipeline.schema.read import Store

log = logging.getLogger(__name__)

CSV_REFRESH_SECONDS = 30.0  # metrics.csv is rewritten this often while a run goes on (and at its end)


def objects_to_evaluate(store, object_ids: list[str], config: EvalConfig) -> list[str]:
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


def _check_reference(store: Store, object_id: str) -> None:
    missing = [n for n in REFERENCE_ARRAYS if n not in store.array_names(object_id)]
    if missing:
        split = store.info(object_id).get("split", "?")
        raise ValueError(f"{store.path}: object {object_id!r} (split {split}) has no {missing[0]}: evaluation "
                         f"needs the reference arrays, which `aps preprocess` writes for the splits of "
                         f"reference_splits ({list(store.params.get('reference_splits', ['test']))} here); "
                         "evaluate --split test, or rerun aps preprocess with --set "
                         f"reference_splits=test,{split} into the same store")


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


# ---- the run ----------------------------------------------------------------------------------------------
class _Tracker:
    """The progress bar and the per-object log line (which object, how long, the running mean), and the
    periodic metrics.csv of what is finished so far."""

    def __init__(self, object_ids: list[str], done: dict[str, ObjectResult], out_dir: Path, desc: str,
                 progress: bool):
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
                   workers: int | None = None, network: str = "workers", field_id: str = "",
                   executor: EvalExecutor | None = None) -> list[dict[str, object]]:
    """Evaluate every object of config.split; writes meshes/, pictures/, objects/, metrics.csv, table1.*,
    report.md, report.html and, once every object is done, eval.json. Returns the metrics rows in split order.

    executor: where the objects run (evaluation.executors.EvalExecutor: serial, a local cluster or an existing
    one, and the network on the workers or in this process; `aps eval` builds it from its options). Without it,
    the EvalExecutor of `scheduler`, `workers` and `network` (the arguments scripts pass; same meanings).
    field_id: what the field is (a checkpoint's sha256); with config and the store it names the results, so a
    rerun into out_dir skips the objects already finished and refuses results of other settings
    (evaluation.results). A failure on one object is scored with the worst values (status says why).
    """
    executor = executor or EvalExecutor(scheduler, workers, network)
    out_dir = Path(out_dir)
    object_ids = store.split(config.split)
    if not object_ids:
        raise ValueError(f"{store.path}: no objects in split {config.split!r} (splits hold "
                         f"{sorted({store.info(o)['split'] for o in store.object_ids})})")
    object_ids = objects_to_evaluate(store, object_ids, config)
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
                for result in run_objects(job, store, todo, executor):
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
    path, size = write_report_page(out_dir, rows, settings, pictures, config.page_faces)
    log.info("%s: %d objects, %.1f MB (meshes at <= %d faces)", path, len(rows), size / 1e6, config.page_faces)
    per_object = {s: tracker.steps[s] / tracker.n for s in STEPS if s in tracker.steps} if tracker.n else {}
    # last: experiments/ablation takes eval.json as the mark of a finished eval
    atomic_write_text(out_dir / "eval.json", json.dumps(
        {**settings, "objects": len(rows), "scored_this_run": tracker.n,
         "seconds_per_object_by_step": {k: round(v, 4) for k, v in per_object.items()},
         "failed": sum(str(r.get("status", "")).startswith("error") for r in rows)},
        indent=1, default=str, allow_nan=False))
