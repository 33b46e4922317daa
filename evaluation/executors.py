"""Run the eval's objects (evaluation.object_eval) as an EvalExecutor says: a plain loop (`serial`) or Dask (a
LocalCluster of one-core worker processes, common.cluster's as `aps preprocess` starts it, or an existing cluster),
with the network on the workers or in this process.

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
written its files and its record. dask is imported where a cluster runs (~1 s), so a serial run never loads it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from common.cluster import SERIAL, Executor, local_cluster, quiet_dask_logs
from evaluation.object_eval import EvalJob, Prediction, error_result, evaluate_one, predict_one, score_one
from evaluation.results import ObjectResult
from pipeline.schema.read import Store, open_store

log = logging.getLogger(__name__)

NETWORKS = ("workers", "client")
WAITING_PER_WORKER = 2  # network='client': predictions queued per worker before this process waits
PREDICT_THREADS = 4  # network='client': objects predicted at once (2 threads: 1.4-1.5x on a 2-core CPU, replayed field)
# Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at 128 KiB:
# every few-MB tensor of a decoder call is then a fresh mmap, its pages faulted in and zeroed, and the network
# runs at less than half its speed (45k against 112k points/s on this machine). With blocks below 16 MiB from
# the heap, those buffers are reused; the big grids and KD-trees (tens of MB) are still mmapped and handed back
# whole when freed. (It goes over common.cluster.WORKER_MALLOC, whose threshold is 64 MiB.)
EVAL_WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20)}


@dataclass(frozen=True)
class EvalExecutor(Executor):
    """Where `aps eval` runs its objects: common.cluster.Executor's scheduler and workers, and where the network
    runs. The CLI builds it from --scheduler, --workers and --device."""

    scheduler: str = SERIAL
    """'serial' (a plain loop here), 'local' (a LocalCluster of `workers` one-core processes) or the ADDRESS of a
    running Dask scheduler (its workers must see the store and the output folder)"""
    network: str = "workers"
    """'workers' (each Dask worker calls make_field itself: make_field must pickle, e.g.
    evaluation.fields.CheckpointFields) or 'client' (this process runs make_field and every query, the workers
    score: for one GPU)"""

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {list(NETWORKS)}, got {self.network!r}")


def run_objects(job: EvalJob, store: Store, object_ids: list[str], executor: EvalExecutor
                ) -> Iterator[ObjectResult]:
    """Each object's result, as objects finish, where `executor` says."""
    if not object_ids:
        return iter(())
    if executor.serial:
        return evaluate_serial(job, store, object_ids)
    return evaluate_dask(job, store, object_ids, executor)


def evaluate_serial(job: EvalJob, store: Store, object_ids: list[str]) -> Iterator[ObjectResult]:
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
    with ThreadPoolExecutor(PREDICT_THREADS, thread_name_prefix="predict") as pool:
        running: deque = deque()
        for oid in object_ids:
            running.append(pool.submit(predict_one, store, job, oid))
            if len(running) >= PREDICT_THREADS:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


def eval_local_cluster(workers: int):
    """common.cluster.local_cluster with this stage's mmap threshold (EVAL_WORKER_MALLOC)."""
    return local_cluster(workers, malloc=EVAL_WORKER_MALLOC)


def evaluate_dask(job: EvalJob, store: Store, object_ids: list[str], executor: EvalExecutor
                  ) -> Iterator[ObjectResult]:
    """On the cluster executor.scheduler names (its workers must see the store and the output folder), or on a
    LocalCluster of executor.workers single-threaded processes started and closed here."""
    with quiet_dask_logs():
        start = executor.start(malloc=EVAL_WORKER_MALLOC)
        try:
            client = start.get()
            # a worker runs one task at a time: the metrics' KD-trees get one thread too
            shipped = client.scatter(replace(job, neighbour_workers=1), broadcast=True, hash=False)
            on_cluster = _whole_objects if executor.network == "workers" else _predicted_here
            yield from on_cluster(client, shipped, job, store, object_ids)
        finally:
            start.close()


def _whole_objects(client, shipped, job: EvalJob, store: Store, object_ids: list[str]) -> Iterator[ObjectResult]:
    """network='workers': one task per object, predicted and scored on a worker."""
    from dask.distributed import as_completed

    run = uuid.uuid4().hex[:8]
    futures = {client.submit(_evaluate_task, shipped, oid, pure=False, key=f"eval-{oid}-{run}-{k}"): oid
               for k, oid in enumerate(object_ids)}
    for future in as_completed(futures):
        yield _collect(store, future, futures[future])
        futures.pop(future)


def _predicted_here(client, shipped, job: EvalJob, store: Store, object_ids: list[str]
                    ) -> Iterator[ObjectResult]:
    """network='client': this process predicts (_predictions), a worker scores each prediction."""
    from dask.distributed import as_completed

    run = uuid.uuid4().hex[:8]
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
