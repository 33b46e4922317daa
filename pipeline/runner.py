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

from common.atomic import atomic_write_text
from common.cluster import ClusterStart, Executor, quiet_dask_logs
from pipeline import schema
from pipeline.config import CODE_VERSION, DRAWS_VERSION, NOT_IN_DRAWS, PreprocessConfig
from pipeline.executors import (
    PREPROCESS_CLUSTER,
    Outcome,
    run_shards_dask,
    run_shards_serial,
    warm_worker,
)
from pipeline.manifest import Manifest
from pipeline.schema import ObjectMeta
from pipeline.sources import extra_input_files, hash_source

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
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


def _append_records(store: Path, lines: list[dict]) -> None:
    schema.append_run_records(store, lines)


def run_preprocess(manifest: Manifest, store: str | Path, config: PreprocessConfig | None = None,
                   scheduler: str = "local", workers: int | None = None,
                   progress: Callable[[int], object] | None = None, replace_dataset: bool = False,
                   executor: Executor | None = None) -> RunSummary:
    """Preprocess every object of `manifest` into `store`. executor: where the objects run (common.cluster.Executor,
    built by `aps preprocess` from its options); without it, one of `scheduler` ('local' (Dask LocalCluster),
    'serial', or the address of a running Dask scheduler) and `workers`.

    Refuses a folder that is not a store (schema.check_store_folder) and a store another run is writing
    (schema.writer_lock), and a store of another dataset unless replace_dataset; objects whose stored bytes are
    damaged are redone like changed ones."""
    store = Path(store)
    config = config or manifest.config()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    schema.check_store_folder(store, manifest.name, replace_dataset)
    store.mkdir(parents=True, exist_ok=True)
    with schema.writer_lock(store, run_id):
        return _run_locked(manifest, store, config, run_id, executor or Executor(scheduler, workers), progress)


def verified_objects(store: Path) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """Objects of the completed shards whose bytes match their checksums, as {object_id:content_hash: (shard,
    row)}, and the damaged ones {object_id: reason}. Reads every stored byte once (crc32c, ~GB/s)."""
    start = time.perf_counter()
    existing: dict[str, tuple[str, int]] = {}
    damaged: dict[str, str] = {}
    from tqdm import tqdm

    from common.progress import bar_options

    shards = schema.shard_objects(store)
    for shard, metas in tqdm(shards.items(), desc="verify stored shards", unit="shard", disable=not shards,
                             **bar_options(total=len(shards))):
        try:
            bad = schema.verify_shard(store, shard)
        except schema.DamagedObjectError as exc:
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
        with open(store / schema.RUNS_FILE) as f:
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
                progress: Callable[[int], object] | None) -> RunSummary:
    if executor.serial:
        return _run(manifest, store, config, run_id, executor.scheduler, progress, None)
    with quiet_dask_logs():
        cluster = executor.start(warm_worker, settings=PREPROCESS_CLUSTER)  # connects while we hash
        try:
            return _run(manifest, store, config, run_id, executor.scheduler, progress, cluster)
        finally:
            cluster.close()


def _run(manifest: Manifest, store: Path, config: PreprocessConfig, run_id: str, scheduler: str,
         progress: Callable[[int], object] | None, cluster: ClusterStart | None) -> RunSummary:
    start = time.perf_counter()
    summary = RunSummary(run_id, store)
    objects = manifest.objects()

    schema.init_store(store, manifest.name, config.store_params(), CODE_VERSION)
    shards_dir = store / schema.SHARDS_DIR
    shards_dir.mkdir(exist_ok=True)
    for tmp in shards_dir.iterdir():  # left by a killed run: never complete, never read
        if schema.is_tmp_shard_name(tmp.name):
            shutil.rmtree(tmp, ignore_errors=True)

    base = {"run_id": run_id, "dataset": manifest.name, "params_digest": config.digest(),
            "code_version": CODE_VERSION}
    records: list[dict] = []
    for spec, reason in manifest.refused():
        outcome = Outcome(ObjectMeta(spec.object_id, spec.category, "", spec.source), "failed", reason)
        summary.failed.append(outcome)
        records.append(_record(base, outcome))
    jobs: list[ObjectMeta] = []
    for spec, split in objects:
        job = ObjectMeta(spec.object_id, spec.category, split, spec.source, extras=spec.extras)
        try:
            content, draws = object_hashes(job, config)
            job = replace(job, content_hash=content, draw_seed=draws)
        except OSError as exc:
            outcome = Outcome(job, "failed", f"{job.source}: cannot read file ({exc.strerror or exc})")
            summary.failed.append(outcome)
            records.append(_record(base, outcome))
            continue
        jobs.append(job)

    existing, damaged = verified_objects(store)
    index: dict[str, tuple[str, int]] = {}
    pending: list[ObjectMeta] = []
    for job in jobs:
        hit = existing.get(f"{job.object_id}:{job.content_hash}")
        if hit is not None:
            index[job.object_id] = hit
            summary.skipped += 1
            records.append(_record(base, Outcome(job, "skipped", shard=hit[0], row=hit[1])))
        else:
            if job.object_id in damaged:
                summary.repaired[job.object_id] = damaged[job.object_id]
                log.warning("%s: stored bytes damaged, redoing it (%s)", job.object_id, damaged[job.object_id])
            pending.append(job)
    _append_records(store, records)
    schema.write_index(store, index, complete=False)

    plan = plan_shards(pending, run_id, config.shard_size, 1 if cluster is None or not pending else cluster.n_workers())
    on_object = progress or (lambda n: None)
    if pending:
        if cluster is None:
            shard_results = run_shards_serial(str(store), plan, config, on_object)
        else:
            shard_results = run_shards_dask(str(store), plan, config, on_object, cluster)
        for outcomes in shard_results:
            for o in outcomes:
                if o.status == "ok":
                    index[o.job.object_id] = (o.shard, o.row)
                    summary.done += 1
                    for step, sec in o.timings.items():
                        summary.step_seconds[step] = summary.step_seconds.get(step, 0.0) + sec
                    for step, sec in o.cpu.items():
                        summary.step_cpu[step] = summary.step_cpu.get(step, 0.0) + sec
                    split = summary.split_cpu.setdefault(o.job.split, [0, 0.0])
                    split[0] += 1
                    split[1] += sum(o.cpu.values())
                else:
                    summary.failed.append(o)
            _append_records(store, [_record(base, o) for o in outcomes])
            schema.write_index(store, index, complete=False)

    wanted = {j.object_id for j in jobs}
    index = {k: v for k, v in index.items() if k in wanted}
    schema.write_index(store, index, complete=True)
    used = {shard for shard, _ in index.values()}
    ours = set(schema.shard_objects(store)) | _recorded_shards(store)
    for d in shards_dir.iterdir():  # our shards whose every object was redone or dropped from the manifest
        if d.name not in used and schema.is_shard_name(d.name) and d.name in ours:
            shutil.rmtree(d, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    run_file = store / "runs" / f"{run_id}.json"
    run_file.parent.mkdir(exist_ok=True)
    atomic_write_text(run_file, json.dumps({
        **base, "manifest": str(manifest.path or ""), "params": config.to_dict(), "scheduler": scheduler,
        "done": summary.done, "skipped": summary.skipped, "failed": len(summary.failed),
        "repaired": sorted(summary.repaired), "seconds": summary.seconds, "step_seconds": summary.step_seconds,
        "step_cpu_seconds": summary.step_cpu},
        indent=2))
    return summary


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
