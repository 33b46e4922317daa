"""How many threads the numerical libraries may use in this process.

A Dask worker is given one core, so libigl (IGL_NUM_THREADS), OpenMP (OMP_NUM_THREADS) and open3d's ray casting
(APS_LIBRARY_THREADS, passed as `nthreads`) must each use one thread there: with their defaults every worker
starts one thread per core of the machine, and N workers on N cores run N^2 threads that slow each other down
(measured: every step of preprocess took ~2x its serial time with 2 workers on 2 cores).
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("APS_LIBRARY_THREADS", "IGL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")


def single_threaded_env() -> dict[str, str]:
    """Environment for a worker process that owns one core."""
    return dict.fromkeys(THREAD_VARIABLES, "1")


def pin_library_threads(n: int = 1) -> None:
    """Set the thread variables this process has not set yet. libigl reads IGL_NUM_THREADS at its first
    parallel call, so this works in a worker of an existing cluster as long as it runs before any igl call."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(n))


def library_threads() -> int:
    """open3d's `nthreads` argument: APS_LIBRARY_THREADS, or 0 (all cores) when unset."""
    try:
        return max(0, int(os.environ.get("APS_LIBRARY_THREADS", "0")))
    except ValueError:
        return 0


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap and are reused
TRIM_THRESHOLD = 256 << 20  # free heap kept before any is handed back


def malloc_env() -> dict[str, str]:
    """keep_freed_memory's settings as glibc's environment variables, for a process not started yet."""
    return {"MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Let glibc keep and reuse freed memory in this process instead of handing every large array back to the
    kernel. Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins the mmap threshold at
    128 kB: each of the many MB-sized numpy temporaries of a preprocess step is then mmap'd and page-faulted
    afresh (measured: every step 1.36x slower, 492 vs 362 core-ms an object). Returns whether it could be set
    (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
