"""Run the eval's objects: a plain loop (`serial`) or Dask (a LocalCluster of one-core worker processes, as
`aps preprocess` starts, or an existing cluster), with the network on the workers or in this process.

network='workers' (the CPU path): one task per object, end to end, on a worker. The job (config, make_field)
reaches each worker once; the worker opens the store and loads the network itself on its first task and keeps
both for the others (evaluation.fields.CheckpointFields), so tasks carry an object id and nothing heavy. An
object takes seconds, the scheduler a millisecond per task.

network='client' (one GPU): this process owns the network and predicts the objects (every query goes to its
device in large batches), PREDICT_THREADS objects at a time: the grid bookkeeping and marching cubes of one run
on the CPU while another's queries run on the device (numpy and torch release the GIL in their long calls).
Each prediction (a mesh, a few MB) goes to a worker that scores it and writes its files. At most two
predictions per worker wait, so memory stays bounded when scoring is the slower half.

Each yields ObjectResult as objects finish (in any order); the worker that scored an object has already
written its files and its record.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterator

from evaluation.results import ObjectResult
from evaluation.runner import EvalJob, Prediction, error_result, evaluate_one, predict_one, score_one
from pipeline.executors import QUIET_CLUSTER, ClusterStart, quiet_dask_logs
from pipeline.executors import local_cluster as _local_cluster
from pipeline.schema import Store, open_store

log = logging.getLogger(__name__)

NETWORKS = ("workers", "client")
WAITING_PER_WORKER = 2  # network='client': predictions queued per worker before this process waits
PREDICT_THREADS = 4  # network='client': objects predicted at once (2 threads: 1.4-1.5x on a 2-core CPU, replayed field)
# Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at 128 KiB:
# every few-MB tensor of a decoder call is then a fresh mmap, its pages faulted in and zeroed, and the network
# runs at less than half its speed (45k against 112k points/s on this machine). With blocks below 16 MiB from
# the heap, those buffers are reused; the big grids and KD-trees (tens of MB) are still mmapped and handed back
# whole when freed.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20)}
__all__ = ["QUIET_CLUSTER", "WORKER_MALLOC", "local_cluster", "run_objects"]


def run_objects(job: EvalJob, store: Store, object_ids: list[str], scheduler: str = "serial",
                workers: int | None = None, network: str = "workers") -> Iterator[ObjectResult]:
    """scheduler 'serial' | 'local' | the ADDRESS of a Dask scheduler; network 'workers' | 'client'."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}, got {network!r}")
    if not object_ids:
        return iter(())
    if scheduler == "serial":
        return run_serial(job, store, object_ids)
    return run_dask(job, store, object_ids, None if scheduler == "local" else scheduler, workers, network)


def run_serial(job: EvalJob, store: Store, object_ids: list[str]) -> Iterator[ObjectResult]:
    for object_id in object_ids:
        yield evaluate_one(store, job, object_id)


@functools.lru_cache(maxsize=4)
def _worker_store(path: str) -> Store:
    """The store, opened once per worker process (its index and shard metadata are read once)."""
    return open_store(path)


def _evaluate_task(job: EvalJob, object_id: str) -> ObjectResult:
    return evaluate_one(_worker_store(job.store_path), job, object_id)


def _score_task(job: EvalJob, prediction: Prediction) -> ObjectResult:
    return score_one(_worker_store(job.store_path), job, prediction)


def _collect(store: Store, future, object_id: str) -> ObjectResult:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a lost worker (killed, out of memory) fails its object only
        return error_result(store, object_id, exc)


def _predictions(store: Store, job: EvalJob, object_ids: list[str]) -> Iterator[Prediction | ObjectResult]:
    """predict_one of each object in order, PREDICT_THREADS at a time in this process (no more are held)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(PREDICT_THREADS, thread_name_prefix="predict") as pool:
        running: deque = deque()
        for oid in object_ids:
            running.append(pool.submit(predict_one, store, job, oid))
            if len(running) >= PREDICT_THREADS:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


def local_cluster(workers: int):
    """pipeline.executors.local_cluster with this stage's mmap threshold (WORKER_MALLOC)."""
    return _local_cluster(workers, malloc=WORKER_MALLOC)


def run_dask(job: EvalJob, store: Store, object_ids: list[str], scheduler: str | None = None,
             workers: int | None = None, network: str = "workers") -> Iterator[ObjectResult]:
    """`scheduler` is the address of an existing cluster (its workers must see the store and the output
    folder); without it a LocalCluster of `workers` single-threaded processes is started and closed here."""
    with quiet_dask_logs():
        start = ClusterStart(scheduler, workers, malloc=WORKER_MALLOC)
        try:
            yield from _run_on_cluster(job, store, object_ids, start.get(), network)
        finally:
            start.close()


def _run_on_cluster(job: EvalJob, store: Store, object_ids: list[str], client, network: str
                    ) -> Iterator[ObjectResult]:
    import dataclasses

    from dask.distributed import as_completed

    run = uuid.uuid4().hex[:8]
    # a worker runs one task at a time: the metrics' KD-trees get one thread too
    shipped = client.scatter(dataclasses.replace(job, neighbour_workers=1), broadcast=True, hash=False)
    if network == "workers":
        futures = {client.submit(_evaluate_task, shipped, oid, pure=False, key=f"eval-{oid}-{run}-{k}"): oid
                   for k, oid in enumerate(object_ids)}
        for future in as_completed(futures):
            yield _collect(store, future, futures[future])
            futures.pop(future)
        return
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    waiting = as_completed()
    names: dict = {}
    for k, (oid, prediction) in enumerate(zip(object_ids, _predictions(store, job, object_ids), strict=True)):
        if isinstance(prediction, ObjectResult):
            yield prediction
            continue
        future = client.submit(_score_task, shipped, prediction, pure=False, key=f"score-{oid}-{run}-{k}")
        names[future] = oid
        waiting.add(future)
        while waiting.count() >= WAITING_PER_WORKER * n_workers:
            done = next(waiting)
            yield _collect(store, done, names.pop(done))
    for done in waiting:
        yield _collect(store, done, names.pop(done))
