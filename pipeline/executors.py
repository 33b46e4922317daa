"""Run shards of per-object jobs: a plain loop (`serial`) or Dask (a LocalCluster sized to the machine, or an
existing cluster). Each shard is written by exactly one task, after all of its objects are computed, so
parallel workers never write the same file."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline import schema
from pipeline.config import PreprocessConfig
from pipeline.process import ObjectFailure, process_object_safe
from pipeline.schema import ObjectMeta

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


def write_shard_outcomes(store_path: str, shard_name: str, *results: schema.ObjectRecord | ObjectFailure
                         ) -> list[Outcome]:
    """Write the objects that succeeded as one shard; report every object, failed ones included."""
    ok = [r for r in results if isinstance(r, schema.ObjectRecord)]
    outcomes: list[Outcome] = []
    if ok:
        start = time.perf_counter()
        try:
            schema.write_shard(store_path, shard_name, ok)
        except Exception as exc:  # noqa: BLE001 - a write failure fails the shard's objects, not the run
            reason = f"writing shard {shard_name}: {type(exc).__name__}: {exc}"
            return [Outcome(r.job if isinstance(r, ObjectFailure) else r.meta, "failed", reason)
                    for r in results]
        for r in ok:
            r.timings["write"] = (time.perf_counter() - start) / len(ok)
    row = 0
    for r in results:
        if isinstance(r, schema.ObjectRecord):
            outcomes.append(Outcome(r.meta, "ok", shard=shard_name, row=row,
                                    seconds=sum(r.timings.values()), timings=dict(r.timings)))
            row += 1
        else:
            outcomes.append(Outcome(r.job, "failed", r.error, seconds=r.seconds))
    return outcomes


ShardPlan = list[tuple[str, list[ObjectMeta]]]
Progress = Callable[[int], None]


def run_serial(store_path: str, plan: ShardPlan, config: PreprocessConfig, on_object: Progress
               ) -> Iterator[list[Outcome]]:
    for shard_name, jobs in plan:
        results = []
        for job in jobs:
            results.append(process_object_safe(job, config))
            on_object(1)
        yield write_shard_outcomes(store_path, shard_name, *results)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_dask(store_path: str, plan: ShardPlan, config: PreprocessConfig, on_object: Progress,
             scheduler: str | None = None, workers: int | None = None) -> Iterator[list[Outcome]]:
    """One task per object and one write task per shard that depends on its objects' tasks.

    `scheduler` is the address of an existing cluster (its workers must see `store_path`); without it a
    LocalCluster of `workers` single-threaded processes is started and closed here.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    # The scheduler and nannies of a LocalCluster live in this process: at INFO they log every connection, and
    # at shutdown an INFO line with a CommClosedError traceback. Our own records say what happened.
    dask_log = logging.getLogger("distributed")
    dask_level = dask_log.level
    dask_log.setLevel(logging.ERROR)
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        n = workers or default_workers()
        # one core per worker process, its numerical libraries included
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR, env={"OMP_NUM_THREADS": "1"})
        client = Client(cluster)
    try:
        shard_futures = {}
        object_futures = []
        for shard_name, jobs in plan:
            futs = [client.submit(process_object_safe, job, config, pure=False, key=f"object-{job.content_hash}")
                    for job in jobs]
            object_futures.extend(futs)
            sf = client.submit(write_shard_outcomes, store_path, shard_name, *futs, pure=False,
                               key=f"shard-{shard_name}")
            shard_futures[sf.key] = sf
        for fut in as_completed(object_futures + list(shard_futures.values())):
            if fut.key in shard_futures:
                yield fut.result()
            else:
                on_object(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        dask_log.setLevel(dask_level)

