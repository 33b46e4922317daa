"""The Dask cluster both stages run on, and the executor value `aps preprocess` and `aps eval` build from their
`--scheduler` and `--workers` options: a plain loop in this process, a LocalCluster of one-core worker processes
started for the run, or the client of a running cluster. Each stage passes its own worker settings (its imports to
warm, its malloc thresholds, its Dask settings); the tasks themselves live in each stage's executors module.

dask is imported where a cluster starts, not here: `aps --help` and a serial run never pay for it (~1 s).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from common.threads import malloc_env, single_threaded_env

SERIAL, LOCAL = "serial", "local"

# glibc's malloc in every worker of a LocalCluster, set before the process starts: no trimming and a high mmap
# threshold (common.threads.keep_freed_memory says why). The worker's env overrides both the nanny's
# MALLOC_TRIM_THRESHOLD_=65536 and any value in this process's environment; a stage's own `malloc` goes over it.
WORKER_MALLOC = malloc_env()
# A LocalCluster's housekeeping, measured idle with 2 workers: 19% of a core (each worker's statistical
# profiler samples its task thread every 10 ms; system and memory monitors poll psutil 2-10 times a second).
# With one worker per core that is taken from the objects; with these settings 3%. The memory limit is still
# enforced, within 2 s.
QUIET_CLUSTER = {"distributed.worker.profile.enabled": False, "distributed.admin.system-monitor.interval": "5s",
                 "distributed.worker.memory.monitor-interval": "2s", "distributed.admin.tick.interval": "200ms"}


def default_workers() -> int:
    """The cores this process may run on: a local cluster's size when --workers is not given."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def local_cluster(n_workers: int, malloc: dict[str, str] | None = None, settings: dict | None = None,
                  memory_limit: str | int = "auto"):
    """A LocalCluster of `n_workers` single-threaded processes (the one both stages start): one core per worker
    process, its numerical libraries included (common.threads); glibc's malloc as WORKER_MALLOC with `malloc`'s
    values over it, set before each process starts; little housekeeping (QUIET_CLUSTER, `settings` over it); each
    worker restarted past 95% of `memory_limit` (Dask's "auto": the machine's memory / n_workers)."""
    import dask
    from dask.distributed import LocalCluster

    env = {**single_threaded_env(), **WORKER_MALLOC, **(malloc or {})}
    with dask.config.set({**QUIET_CLUSTER, **(settings or {})}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=logging.ERROR, env=env, memory_limit=memory_limit)


class ClusterStart:
    """The Dask client of a run, connected in a background thread while this process reads the manifest, hashes
    the meshes and verifies the store (seconds on a large dataset): `scheduler` is an existing cluster's address,
    or None for a LocalCluster of `workers` processes (local_cluster, `malloc` over WORKER_MALLOC), whose workers
    then run `warm` (the stage's imports) before the first task reaches them, with `settings` over QUIET_CLUSTER.
    Close it in any case: a cluster started here is closed, an existing one is left running."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None,
                 warm: Callable[[], None] | None = None, malloc: dict[str, str] | None = None,
                 settings: dict | None = None):
        self.cluster = None
        self.client = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aps-cluster-start")
        self._started = self._pool.submit(self._start, scheduler, workers, warm, malloc, settings)

    def _start(self, scheduler: str | None, workers: int | None, warm, malloc, settings):
        from dask.distributed import Client

        if scheduler:
            self.client = Client(scheduler)
        else:
            self.cluster = local_cluster(workers or default_workers(), malloc, settings)
            self.client = Client(self.cluster)
            if warm is not None:
                self.client.run(warm)
        return self.client

    def get(self):
        """The connected client (raises what starting it raised)."""
        return self._started.result()

    def n_workers(self) -> int:
        """Workers of the cluster (waits for its start)."""
        return max(1, len(self.get().scheduler_info()["workers"]))

    def close(self) -> None:
        self._started.exception()  # wait for the start to finish, whatever it did
        self._pool.shutdown()
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextmanager
def quiet_dask_logs():
    """The scheduler and nannies of a LocalCluster live in this process: at INFO they log every connection, and
    at shutdown an INFO line with a CommClosedError traceback. Our own records say what happened."""
    import distributed  # noqa: F401 - its first import sets the level from dask's logging config: before ours

    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    dask_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        dask_log.setLevel(level)


@dataclass(frozen=True)
class Executor:
    """Where a stage runs its per-object tasks, as its `--scheduler` and `--workers` options say. The CLI builds
    it; the stage starts a cluster from it with its own worker settings (start)."""

    scheduler: str = LOCAL
    """'serial' (a plain loop in this process), 'local' (a LocalCluster of `workers` one-core processes, started
    and closed by the run) or the ADDRESS of a running Dask scheduler (its workers must see the stage's files)"""
    workers: int | None = None
    """worker processes of the local cluster (None: one per core, default_workers)"""

    @property
    def serial(self) -> bool:
        return self.scheduler == SERIAL

    @property
    def address(self) -> str | None:
        """The running cluster's scheduler address; None where the run starts its own LocalCluster."""
        return None if self.scheduler == LOCAL else self.scheduler

    def start(self, warm: Callable[[], None] | None = None, malloc: dict[str, str] | None = None,
              settings: dict | None = None) -> ClusterStart:
        """Connect to the cluster (in the background: ClusterStart) with the stage's worker settings; not for a
        serial executor. The caller closes it."""
        return ClusterStart(self.address, self.workers, warm, malloc, settings)
