"""The preprocess driver: plan the work, skip what is done, run the shards, keep the index and run records.

Rerunning is incremental: an object whose content hash (mesh bytes, parameters, code version, split) is
already in a completed shard is skipped. A run killed half-way leaves completed shards (renamed into
place whole) and an index marked in_progress; the next run removes temporary shards, skips what is done,
and finishes with every object exactly once in the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from common.atomic import atomic_write_text
from common.cluster import ClusterStart, Executor, quiet_dask_logs
from common.progress import bar_options
from pipeline.config import CODE_VERSION, DRAWS_VERSION, NOT_IN_DRAWS, PreprocessConfig
from pipeline.executors import (
    PREPROCESS_CLUSTER,
    Outcome,
    run_shards_dask,
    run_shards_serial,
    warm_worker,
)
from pipeline.manifest import Manifest
from pipeline.schema.layout import (
    RUNS_FILE,
    SHARDS_DIR,
    DamagedObjectError,
    ObjectMeta,
    is_shard_name,
    is_tmp_shard_name,
)
from pipeline.schema.read import shard_objects, verify_shard
from pipeline.schema.write import append_run_records, check_store_folder, init_store, write_index, writer_lock
from pipeline.sources import extra_input_files, hash_source
from pipeline.sources.spec import ObjectSpec

log = logging.getLogger(__name__)


@dataclass
class PreprocessSummary:
    """What one `aps preprocess` run did, for the command's last lines and STORE/runs/<run id>.json."""

    run_id: str
    store: Path
    done: int = 0
    skipped: int = 0
    failed: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    step_cpu: dict[str, float] = field(default_factory=dict)
    """core-seconds per step, summed over objects and workers"""
    split_cpu: dict[str, list[float]] = field(default_factory=dict)
    """split -> [objects, core-seconds]"""
    repaired: dict[str, str] = field(default_factory=dict)
    """objects redone because their stored bytes were damaged -> what was wrong"""

    def count_done(self, o: Outcome) -> None:
        """Add one object written by this run: its count and its seconds and core-seconds per step."""
        self.done += 1
        for step, sec in o.timings.items():
            self.step_seconds[step] = self.step_seconds.get(step, 0.0) + sec
        for step, sec in o.cpu.items():
            self.step_cpu[step] = self.step_cpu.get(step, 0.0) + sec
        split = self.split_cpu.setdefault(o.job.split, [0, 0.0])
        split[0] += 1
        split[1] += sum(o.cpu.values())

    @property
    def objects_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        repaired = (f" ({len(self.repaired)} of them redone: damaged or unverifiable in the store)"
                    if self.repaired else "")
        return (f"preprocess {self.run_id}: {self.done} done{repaired}, {self.skipped} skipped, "
                f"{len(self.failed)} failed in {self.seconds:.1f} s ({self.objects_per_second:.2f} objects/s) "
                f"-> {self.store}")


def object_hashes(job: ObjectMeta, config: PreprocessConfig) -> tuple[str, str]:
    """(content_hash, draw_seed) of a unit of work. Both hash the mesh file's bytes (one model's row for an IM-NET
    file), the bytes of the files a source adds (a dataset's views and their cameras) and who the object is.
    content_hash adds every parameter that shapes its arrays and CODE_VERSION: it names what is written, so a
    change to either redoes the object. draw_seed, which seeds the object's random draws, adds DRAWS_VERSION and
    the parameters less NOT_IN_DRAWS instead: a new code version redoes objects with the same points and views."""
    h = hashlib.sha256()
    hash_source(h, job.source)
    for path in extra_input_files(job.extras):
        h.update(path.name.encode())
        if path.is_file():
            hash_source(h, str(path))
        else:  # absent: process_object fails the object with the reason; hashing the absence redoes it once fixed
            h.update(b"<missing>")
    hashes = []
    for version, digest in ((CODE_VERSION, config.digest()), (DRAWS_VERSION, config.digest(omit=NOT_IN_DRAWS))):
        key = [job.object_id, job.category, job.split, digest, version]
        keyed = h.copy()
        keyed.update(json.dumps(key + [job.extras] if job.extras else key).encode())
        hashes.append(keyed.hexdigest()[:32])
    return hashes[0], hashes[1]


def run_preprocess(manifest: Manifest, store: str | Path, config: PreprocessConfig | None = None,
                   scheduler: str = "local", workers: int | None = None,
                   progress: Callable[[int], object] | None = None, replace_dataset: bool = False,
                   executor: Executor | None = None) -> PreprocessSummary:
    """Preprocess every object of `manifest` into `store`. executor: where the objects run (common.cluster.Executor,
    built by `aps preprocess` from its options); without it, one of `scheduler` ('local' (Dask LocalCluster),
    'serial', or the address of a running Dask scheduler) and `workers`.

    Refuses a folder that is not a store (check_store_folder) and a store another run is writing
    (writer_lock), and a store of another dataset unless replace_dataset; objects whose stored bytes are
    damaged are redone like changed ones."""
    store = Path(store)
    config = config or manifest.config()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    check_store_folder(store, manifest.name, replace_dataset)
    store.mkdir(parents=True, exist_ok=True)
    with writer_lock(store, run_id):
        return _run_locked(manifest, store, config, run_id, executor or Executor(scheduler, workers), progress)


def verified_objects(store: Path) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """Objects of the completed shards whose bytes match their checksums, as {object_id:content_hash: (shard,
    row)}, and the damaged ones {object_id: reason}. Reads every stored byte once (crc32c, ~GB/s)."""
    start = time.perf_counter()
    existing: dict[str, tuple[str, int]] = {}
    damaged: dict[str, str] = {}
    shards = shard_objects(store)
    for shard, metas in tqdm(shards.items(), desc="verify stored shards", unit="shard", disable=not shards,
                             **bar_options(total=len(shards))):
        try:
            bad = verify_shard(store, shard)
        except DamagedObjectError as exc:
            bad = dict.fromkeys(range(len(metas)), str(exc))
        for row, meta in enumerate(metas):
            if row in bad:
                damaged[meta["object_id"]] = bad[row]
            else:
                existing[f"{meta['object_id']}:{meta['content_hash']}"] = (shard, row)
    if shards:
        log.info("verified %d shards in %.1f s: %d objects intact, %d damaged", len(shards),
                 time.perf_counter() - start, len(existing), len(damaged))
    return existing, damaged


def _recorded_shards(store: Path) -> set[str]:
    """Shard names this store's runs.jsonl says its runs wrote: with the shard name pattern, what we may delete."""
    names: set[str] = set()
    try:
        with open(store / RUNS_FILE) as f:
            for line in f:
                try:
                    shard = json.loads(line).get("shard")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(shard, str):
                    names.add(shard)
    except FileNotFoundError:
        pass
    return names


def _run_locked(manifest: Manifest, store: Path, config: PreprocessConfig, run_id: str, executor: Executor,
                progress: Callable[[int], object] | None) -> PreprocessSummary:
    if executor.serial:
        return _run(manifest, store, config, run_id, executor.scheduler, progress, None)
    with quiet_dask_logs():
        cluster = executor.start(warm_worker, settings=PREPROCESS_CLUSTER)  # connects while we hash
        try:
            return _run(manifest, store, config, run_id, executor.scheduler, progress, cluster)
        finally:
            cluster.close()


def _run(manifest: Manifest, store: Path, config: PreprocessConfig, run_id: str, scheduler: str,
         progress: Callable[[int], object] | None, cluster: ClusterStart | None) -> PreprocessSummary:
    """Plan (hash every object, keep what the store holds intact), execute (the pending objects, shard by shard),
    finish (the complete index, stale shards deleted, the run file)."""
    start = time.perf_counter()
    summary = PreprocessSummary(run_id, store)
    objects = manifest.objects()
    _prepare_store(store, manifest.name, config)
    base = {"run_id": run_id, "dataset": manifest.name, "params_digest": config.digest(),
            "code_version": CODE_VERSION}

    jobs, failed = hashed_jobs(objects, manifest.refused(), config)
    plan = plan_run(jobs, *verified_objects(store))
    summary.failed += failed
    summary.skipped = len(plan.skipped)
    summary.repaired = dict(plan.repaired)
    for object_id, reason in plan.repaired.items():
        log.warning("%s: stored bytes damaged, redoing it (%s)", object_id, reason)
    append_run_records(store, [_record(base, o) for o in [*failed, *plan.skipped]])
    index = dict(plan.index)
    write_index(store, index, complete=False)

    workers = 1 if cluster is None or not plan.pending else cluster.n_workers()
    shards = plan_shards(plan.pending, run_id, config.shard_size, workers)
    if plan.pending:
        _run_shards(store, shards, config, progress, cluster, base, index, summary)

    wanted = {j.object_id for j in jobs}  # the objects the manifest lists now
    index = {k: v for k, v in index.items() if k in wanted}
    write_index(store, index, complete=True)
    _delete_stale_shards(store, {shard for shard, _ in index.values()})
    summary.seconds = time.perf_counter() - start
    run_file = store / "runs" / f"{run_id}.json"
    run_file.parent.mkdir(exist_ok=True)
    atomic_write_text(run_file, json.dumps(run_file_record(base, manifest, config, scheduler, summary), indent=2))
    return summary


def _prepare_store(store: Path, dataset: str, config: PreprocessConfig) -> None:
    """The store's root group with this run's parameters (init_store), and no temporary shard: those a killed run
    left are never complete, never read."""
    init_store(store, dataset, config.store_params(), CODE_VERSION)
    shards_dir = store / SHARDS_DIR
    shards_dir.mkdir(exist_ok=True)
    for tmp in shards_dir.iterdir():
        if is_tmp_shard_name(tmp.name):
            shutil.rmtree(tmp, ignore_errors=True)


def hashed_jobs(objects: list[tuple[ObjectSpec, str]], refused: list[tuple[ObjectSpec, str]],
                config: PreprocessConfig) -> tuple[list[ObjectMeta], list[Outcome]]:
    """The units of work of a manifest's objects (with their splits), named by their hashes (object_hashes),
    and the failures: the objects the manifest refused, then those whose files cannot be read."""
    failed = [Outcome(ObjectMeta(spec.object_id, spec.category, "", spec.source), "failed", reason)
              for spec, reason in refused]
    jobs: list[ObjectMeta] = []
    for spec, split in objects:
        job = ObjectMeta(spec.object_id, spec.category, split, spec.source, extras=spec.extras)
        try:
            content, draws = object_hashes(job, config)
        except OSError as exc:
            failed.append(Outcome(job, "failed", f"{job.source}: cannot read file ({exc.strerror or exc})"))
            continue
        jobs.append(replace(job, content_hash=content, draw_seed=draws))
    return jobs, failed


@dataclass
class RunPlan:
    """What a run does with each object, decided before any runs."""

    index: dict[str, tuple[str, int]]
    """object_id -> (shard, row) of the objects the store holds intact with the same content hash"""
    skipped: list[Outcome]
    """those objects, as the records of this run"""
    pending: list[ObjectMeta]
    """the objects to run: new, changed, or damaged in the store"""
    repaired: dict[str, str]
    """the pending objects whose stored bytes were damaged -> what was wrong"""


def plan_run(jobs: list[ObjectMeta], existing: dict[str, tuple[str, int]], damaged: dict[str, str]) -> RunPlan:
    """Skip each job whose object and content hash the store holds intact (existing, from verified_objects: keyed
    `object_id:content_hash`); run the others."""
    plan = RunPlan({}, [], [], {})
    for job in jobs:
        hit = existing.get(f"{job.object_id}:{job.content_hash}")
        if hit is not None:
            plan.index[job.object_id] = hit
            plan.skipped.append(Outcome(job, "skipped", shard=hit[0], row=hit[1]))
        else:
            if job.object_id in damaged:
                plan.repaired[job.object_id] = damaged[job.object_id]
            plan.pending.append(job)
    return plan


def _run_shards(store: Path, shards: list[tuple[str, list[ObjectMeta]]], config: PreprocessConfig,
                progress: Callable[[int], object] | None, cluster: ClusterStart | None, base: dict,
                index: dict[str, tuple[str, int]], summary: PreprocessSummary) -> None:
    """Run the planned shards, serially or on the cluster. As each one ends, its objects join `index` and
    `summary`, their records go to runs.jsonl and index.json is rewritten (in_progress): a killed run keeps them."""
    on_object = progress or (lambda n: None)
    if cluster is None:
        shard_results = run_shards_serial(str(store), shards, config, on_object)
    else:
        shard_results = run_shards_dask(str(store), shards, config, on_object, cluster)
    for outcomes in shard_results:
        for o in outcomes:
            if o.status == "ok":
                index[o.job.object_id] = (o.shard, o.row)
                summary.count_done(o)
            else:
                summary.failed.append(o)
        append_run_records(store, [_record(base, o) for o in outcomes])
        write_index(store, index, complete=False)


def _delete_stale_shards(store: Path, used: set[str]) -> None:
    """Delete our shards that hold no indexed object (every object redone or dropped from the manifest): only
    folders of our shard name pattern that a run of this store wrote."""
    ours = set(shard_objects(store)) | _recorded_shards(store)
    for d in (store / SHARDS_DIR).iterdir():
        if d.name not in used and is_shard_name(d.name) and d.name in ours:
            shutil.rmtree(d, ignore_errors=True)


def run_file_record(base: dict, manifest: Manifest, config: PreprocessConfig, scheduler: str,
                    summary: PreprocessSummary) -> dict:
    """STORE/runs/<run id>.json: the run's parameters and totals."""
    return {**base, "manifest": str(manifest.path or ""), "params": config.to_dict(), "scheduler": scheduler,
            "done": summary.done, "skipped": summary.skipped, "failed": len(summary.failed),
            "repaired": sorted(summary.repaired), "seconds": summary.seconds, "step_seconds": summary.step_seconds,
            "step_cpu_seconds": summary.step_cpu}


TAIL_SHARD_DIVISOR = 4  # the last round of work goes in shards of shard_size / 4 objects


def plan_shards(pending: list[ObjectMeta], run_id: str, shard_size: int, workers: int
                ) -> list[tuple[str, list[ObjectMeta]]]:
    """Shards of at most `shard_size` objects, never mixing splits (a shard's objects have the same arrays).

    The largest split's last `workers` x shard_size objects go in shards a quarter that size, which the executors
    run last (executors.shard_priority): measured on 266 parts with 2 workers, one worker otherwise sat idle for
    ~2 s while the other finished a full shard; a small shard costs ~0.1 s more to write.
    """
    size = max(1, shard_size)
    small = max(1, size // TAIL_SHARD_DIVISOR)
    groups = {split: [j for j in pending if j.split == split] for split in sorted({j.split for j in pending})}
    tail_split = max(groups, key=lambda split: len(groups[split]), default=None)
    plan = []
    for split, group in groups.items():
        tail = min(len(group), workers * size) if workers > 1 and split == tail_split else 0
        head, rest = group[:len(group) - tail], group[len(group) - tail:]
        pieces = [head[i:i + size] for i in range(0, len(head), size)] + [rest[i:i + small]
                                                                          for i in range(0, len(rest), small)]
        plan += [(f"{run_id}-{split}-{k:05d}", piece) for k, piece in enumerate(pieces)]
    return plan


def _record(base: dict, o: Outcome) -> dict:
    return {**base, "time": datetime.now(UTC).isoformat(timespec="seconds"), "object_id": o.job.object_id,
            "category": o.job.category, "split": o.job.split, "source": o.job.source,
            "content_hash": o.job.content_hash, "status": o.status, "error": o.error or None,
            "shard": o.shard or None, "row": o.row if o.row >= 0 else None, "seconds": round(o.seconds, 4),
            "timings": {k: round(v, 4) for k, v in o.timings.items()},
            "cpu": {k: round(v, 4) for k, v in o.cpu.items()}}
