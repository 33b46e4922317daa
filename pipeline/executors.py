"""Run shards of per-object jobs: a plain loop (`serial`) or Dask (a LocalCluster sized to the machine, or an
existing cluster: common.cluster, which both stages start). One task computes a shard's objects and writes the
shard, so parallel workers never write the same file, and what crosses the network is the jobs and their outcomes
(a few kB), never the arrays.

Why a task per shard and one thread per worker (docs/PREPROCESS.md, "Speed and size"): with a task per object,
each object's ~2-5 MB of arrays went to the scheduler's bookkeeping and then to the writing worker, and libigl
and open3d started a thread per core in every worker; two workers on two cores then ran no faster than one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from common.cluster import ClusterStart
from common.errors import first_line
from common.threads import keep_freed_memory, pin_library_threads
from pipeline.config import PreprocessConfig
from pipeline.process import ObjectFailure, process_object_safe
from pipeline.schema.layout import ObjectMeta, ObjectRecord
from pipeline.schema.write import write_shard

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one object in this run (one runs.jsonl line)."""

    job: ObjectMeta
    status: str  # ok | failed
    error: str = ""
    shard: str = ""
    row: int = -1
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def write_shard_outcomes(store_path: str, shard_name: str, *results: ObjectRecord | ObjectFailure
                         ) -> list[Outcome]:
    """Write the objects that succeeded as one shard; report every object, failed ones included."""
    ok = [r for r in results if isinstance(r, ObjectRecord)]
    outcomes: list[Outcome] = []
    if ok:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            write_shard(store_path, shard_name, ok)
        except Exception as exc:  # noqa: BLE001 - a write failure fails the shard's objects, not the run
            reason = f"writing shard {shard_name}: {type(exc).__name__}: {exc}"
            return [Outcome(r.job if isinstance(r, ObjectFailure) else r.meta, "failed", reason)
                    for r in results]
        for r in ok:
            r.timings["write"] = (time.perf_counter() - start) / len(ok)
            r.cpu["write"] = (time.process_time() - cpu_start) / len(ok)
    row = 0
    for r in results:
        if isinstance(r, ObjectRecord):
            outcomes.append(Outcome(r.meta, "ok", shard=shard_name, row=row,
                                    seconds=sum(r.timings.values()), timings=dict(r.timings), cpu=dict(r.cpu)))
            row += 1
        else:
            outcomes.append(Outcome(r.job, "failed", r.error, seconds=r.seconds))
    return outcomes


ShardPlan = list[tuple[str, list[ObjectMeta]]]
Progress = Callable[[int], None]


def run_shards_serial(store_path: str, plan: ShardPlan, config: PreprocessConfig, on_object: Progress
                      ) -> Iterator[list[Outcome]]:
    for shard_name, jobs in plan:
        results = []
        for job in jobs:
            results.append(process_object_safe(job, config))
            on_object(1)
        yield write_shard_outcomes(store_path, shard_name, *results)


PROGRESS_TOPIC = "aps-preprocess-object"


def process_shard(store_path: str, shard_name: str, jobs: list[ObjectMeta], config: PreprocessConfig,
                  report: bool = False) -> list[Outcome]:
    """The Dask task: compute a shard's objects one after the other, then write the shard. `report`: tell the
    client about each finished object (a tiny event through the scheduler) so its progress bar moves per object."""
    pin_library_threads(1)  # this worker owns one core (no-op where the cluster set the variables already)
    keep_freed_memory()  # undo the nanny's MALLOC_TRIM_THRESHOLD_ (common.threads), on any cluster
    log_event = None
    if report:
        from distributed import get_worker

        log_event = get_worker().log_event
    results = []
    for job in jobs:
        results.append(process_object_safe(job, config))
        if log_event is not None:
            log_event(PROGRESS_TOPIC, 1)
    return write_shard_outcomes(store_path, shard_name, *results)


def shard_priority(jobs: list[ObjectMeta], config: PreprocessConfig) -> int:
    """Dask runs higher priorities first: the costliest shards (objects with evaluation reference data take ~3x
    longer), so no long shard is left for the end while the other workers sit idle."""
    return len(jobs) * sum(3 if job.split in config.reference_splits else 1 for job in jobs)


# The preprocess's own cluster: a shard whose worker dies (an object beyond the worker's memory) is not run again
# on three more workers, each killed in turn (Dask's default allowed-failures = 3); run_shards_dask retries each
# of its objects alone instead, so every object still gets a second try on a fresh worker, and only one that kills
# a worker on its own fails. The rest of the cluster (its size, malloc, housekeeping) is common.cluster's.
PREPROCESS_CLUSTER = {"distributed.scheduler.allowed-failures": 0}


def warm_worker() -> None:
    """Import what process_shard needs (open3d, libigl, scipy: ~2 s of a worker's first task otherwise; trimesh
    only where a mesh is not binary STL, pipeline.stages.load)."""
    import igl  # noqa: F401
    import open3d  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401
    import scipy.spatial  # noqa: F401

    import pipeline.process  # noqa: F401


def run_shards_dask(store_path: str, plan: ShardPlan, config: PreprocessConfig, on_object: Progress,
                   start: ClusterStart) -> Iterator[list[Outcome]]:
    """One task per shard (process_shard), the costliest first, on the client of `start` (which the caller
    closes). Its workers must see `store_path`.

    A shard whose task fails without outcomes (its worker died: an object beyond the worker's memory, Dask's
    KilledWorker) fails no object yet: once the other shards are done, each of its objects runs again alone, one
    at a time on the whole cluster, so a worker that dies then was computing that object and nothing else (Dask
    sends a worker more tasks than it runs, and marks them all when it dies). An object whose second task fails
    gets that reason, naming its file; the others are written. The run goes on either way."""
    from dask.distributed import as_completed

    client = start.get()
    client.subscribe_topic(PROGRESS_TOPIC, lambda event: on_object(1))
    spare = _spare_shard_names(plan)

    def submit(shard_name: str, jobs: list[ObjectMeta]):
        return client.submit(process_shard, store_path, shard_name, jobs, config, True, pure=False,
                             key=f"shard-{shard_name}", priority=shard_priority(jobs, config))

    try:
        shards = {submit(name, jobs): (name, jobs) for name, jobs in plan}
        again: list[tuple[str, ObjectMeta]] = []
        for fut in as_completed(list(shards)):
            name, jobs = shards.pop(fut)
            try:
                outcomes = fut.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker fails its shard's objects, not the run
                log.warning("shard %s: its task failed (%s); its %d object(s) run again one at a time", name,
                            type(exc).__name__, len(jobs))
                again += [(name, job) for job in jobs]
                continue
            yield outcomes
        for name, job in again:
            try:
                outcomes = submit(spare(name), [job]).result()
            except Exception as exc:  # noqa: BLE001 - this object alone was being computed: it is the cause
                outcomes = [Outcome(job, "failed", _task_failure(job, exc))]
            yield outcomes
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)


def _spare_shard_names(plan: ShardPlan) -> Callable[[str], str]:
    """A new shard name of the run and split of a planned shard, numbered on from the plan's largest, so a retried
    object keeps to the only shard name form ever deleted (pipeline.schema.layout.SHARD_NAME)."""
    next_k: dict[str, int] = {}
    for name, _ in plan:
        prefix, k = name.rsplit("-", 1)
        next_k[prefix] = max(next_k.get(prefix, 0), int(k) + 1)

    def spare(name: str) -> str:
        prefix = name.rsplit("-", 1)[0]
        next_k[prefix] += 1
        return f"{prefix}-{next_k[prefix] - 1:05d}"

    return spare


def _task_failure(job: ObjectMeta, exc: BaseException) -> str:
    """The one-line reason of an object whose task failed without outcomes: a worker that died computing it
    (KilledWorker: past its memory limit, most likely), or whatever else Dask raised."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return (f"{job.source}: the Dask worker computing it died (KilledWorker), most likely needing more memory "
                "than a worker has; give each worker more (fewer --workers) or set a lower max_triangles")
    return f"{job.source}: its Dask task failed ({type(exc).__name__}: {first_line(exc)})"
