"""Memory of a command's processes over its run: resident memory of the process and every child (Dask's nanny and
worker processes included), sampled every few seconds.

    python benchmarks/sample_memory.py [--every 2] -- aps preprocess --manifest manifests/industrial-cad.toml ...

Prints, when the command ends: its exit status and wall time; per process (by its role: the command itself, a
Dask worker process, other) the peak and median resident MiB over the samples it was alive in; and the peak of
all of them together. The command's own output goes through unchanged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import psutil


def role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "command"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "spawn_main" in cmd and "resource_tracker" not in cmd:
        return "worker"  # Dask's LocalCluster workers are spawned children of their nannies
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given (put it after --)")
    start = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    samples: dict[int, tuple[str, list[float]]] = {}
    totals: list[float] = []
    while child.poll() is None:
        total = 0.0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for proc in procs:
            try:
                mib = proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += mib
            if proc.pid not in samples:
                samples[proc.pid] = (role(proc, root.pid), [])
            samples[proc.pid][1].append(mib)
        totals.append(total)
        time.sleep(args.every)
    rc = child.wait()
    wall = time.perf_counter() - start
    print(f"\nmemory of `{' '.join(command[:3])} ...`: exit {rc}, {wall:.0f} s, {len(totals)} samples every "
          f"{args.every:g} s")
    for pid, (kind, values) in sorted(samples.items(), key=lambda kv: (kv[1][0], kv[0])):
        if len(values) >= 2 or kind != "other":
            print(f"  {kind:7s} pid {pid}: peak {max(values):7.0f} MiB, median {np.median(values):7.0f} MiB "
                  f"over {len(values)} samples")
    if totals:
        print(f"  all processes together: peak {max(totals):.0f} MiB")
    return rc


if __name__ == "__main__":
    sys.exit(main())
