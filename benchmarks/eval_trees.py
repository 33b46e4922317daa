"""`aps eval` of two code trees side by side, by step: today's path (a checkout of an earlier commit) against this
tree in float32 and in bfloat16 (`bench_eval.py --baseline TREE`).

Each run is a real `aps eval --scheduler serial --threads 1 --no-pictures` process (one core, the per-object
figures of a Dask worker), one at a time, repeated alternately, on the same objects and checkpoint; the seconds
per object by step come from the runner's own summary line, and the metrics of every run are kept so that
experiments/cpu_speed/same_metrics.py can compare them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"eval: (\d+) objects in ([\d.]+) s .*?([\d.]+) s of work per object\); "
                     r"s per object by step: (.*)")


def eval_run(tree: Path, checkpoint: Path, data: Path, out: Path, precision: str | None,
             extra: list[str]) -> dict[str, float]:
    """One `aps eval` of `tree` (PYTHONPATH) -> {"total": work seconds per object, step: seconds, ...}."""
    args = [sys.executable, "-c", "from aps.cli import main; main()", "eval", "--checkpoint", str(checkpoint),
            "--data", str(data), "--out", str(out), "--scheduler", "serial", "--threads", "1", "--no-pictures",
            *extra]
    if precision:
        args += ["--precision", precision]
    done = subprocess.run(args, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True,
                          text=True)
    text = done.stdout + done.stderr
    match = SUMMARY.search(text)
    if done.returncode != 0 or not match:
        raise SystemExit(f"aps eval of {tree} failed (exit {done.returncode}):\n{text[-2000:]}")
    steps = {"total": float(match.group(3))}
    for part in match.group(4).split(","):
        name, value = part.strip().rsplit(" ", 1)
        steps[name] = float(value)
    return steps


def compare(baseline: Path, checkpoint: Path, data: Path, repeat: int, extra: list[str],
            keep: Path | None = None) -> None:
    """Print seconds per object by step for baseline fp32, this tree fp32 and this tree bf16 (where the CPU has
    it), best of `repeat` alternating runs, and the ratios against the baseline."""
    sys.path.insert(0, str(HERE))
    import torch

    from trainer.models.precision import bf16_unavailable

    paths = [("baseline fp32", baseline, None), ("new fp32", HERE, "fp32")]
    if not bf16_unavailable(torch.device("cpu")):
        paths.append(("new bf16", HERE, "bf16"))
    out = keep or Path(tempfile.mkdtemp(prefix="bench-eval-trees-"))
    print(f"load average before: {os.getloadavg()[0]:.2f}; {checkpoint} on {data} {' '.join(extra)}; "
          f"best of {repeat} alternating runs; folders in {out}")
    best: dict[str, dict[str, float]] = {}
    for r in range(repeat):
        for name, tree, precision in paths:
            folder = out / f"{name.replace(' ', '-')}-{r}"
            steps = eval_run(tree, checkpoint.resolve(), data.resolve(), folder, precision, extra)
            print(f"  run {r + 1} {name}: {steps['total']:.2f} s of work per object", flush=True)
            if name not in best or steps["total"] < best[name]["total"]:
                best[name] = steps
    names = [n for n, _, _ in paths]
    steps = [s for s in best[names[0]] if s != "total"] + ["total"]
    print(f"{'step (s per object, one core)':<32}" + "".join(f"{n:>15}" for n in names))
    for step in steps:
        print(f"{step:<32}" + "".join(f"{best[n].get(step, 0.0):15.3f}" for n in names))
    base = best[names[0]]["total"]
    print(f"{'ratio to the baseline':<32}" + "".join(f"{base / best[n]['total']:14.2f}x" for n in names))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
