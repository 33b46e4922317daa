"""Does the faster network learn the same? Short cpu-demo runs of two code trees side by side, three seeds each.

    python experiments/cpu_speed/learning.py --baseline /tmp/base --out experiments/cpu_speed/runs \\
        [--data data/industrial-demo] [--seeds 0 1 2] [--epochs 16] [--precision auto]

--baseline is a checkout of the commit to compare with (e.g. `git archive efc8e35 | tar -x -C /tmp/base`); the
new code is this tree. Each run is a real `aps train` process of its tree (PYTHONPATH set to it), one at a time,
alternating trees, so both see the same machine. A run whose folder already holds its last epoch is kept:
rerunning the script after a kill does only what is missing. It writes learning.md (final and best validation
IoU and F1 per run, mean and spread per tree, samples/s) and learning.png (validation IoU by epoch), small
files meant to be committed; the run folders (checkpoints) are not.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
THREADS = 1
"""torch threads of every run: two threads that spin at OpenMP barriers slow down 10-30x on a 2-core machine
whenever anything else runs on the other core (seen while running this), one does not"""


def run_one(tree: Path, data: Path, out: Path, seed: int, epochs: int, precision: str | None) -> list[dict]:
    """Train one run (unless its folder already holds `epochs` epochs) and return its metrics.csv rows."""
    if _rows(out) and len(_rows(out)) >= epochs:
        print(f"kept {out} ({epochs} epochs)", flush=True)
        return _rows(out)
    if out.exists() and (out / "last.ckpt").exists():
        resume = ["--resume"]
    else:
        resume = []
    args = [sys.executable, "-c", "from aps.cli import main; main()", "train", "--data", str(data.resolve()),
            "--out", str(out.resolve()), "--preset", "cpu-demo", "--epochs", str(epochs), "--seed", str(seed),
            "--quiet", "--set", f"threads={THREADS}", *resume]
    if precision:
        args += ["--precision", precision]
    env = dict(os.environ, PYTHONPATH=str(tree))
    print(f"training {out} ...", flush=True)
    subprocess.run(args, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return _rows(out)


def _rows(folder: Path) -> list[dict]:
    path = folder / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def summary(results: dict[str, dict[int, list[dict]]]) -> str:
    lines = ["| tree | seed | final val IoU | final val F1 | best val F1 | samples/s (median epoch) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for tree, runs in results.items():
        finals = []
        for seed, rows in runs.items():
            last = rows[-1]
            finals.append(last["val_iou"])
            rate = statistics.median(r["samples_per_s"] for r in rows)
            lines.append(f"| {tree} | {seed} | {last['val_iou']:.4f} | {last['val_f1']:.4f} | "
                         f"{max(r['val_f1'] for r in rows):.4f} | {rate:.1f} |")
        spread = f"{min(finals):.4f}-{max(finals):.4f}"
        lines.append(f"| **{tree}** | mean | **{statistics.mean(finals):.4f}** (range {spread}) | | | |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[int, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = {"baseline": "tab:grey", "new": "tab:blue"}
    for tree, runs in results.items():
        for seed, rows in runs.items():
            epochs = [r["epoch"] for r in rows]
            label = f"{tree}" if seed == min(runs) else None
            axes[0].plot(epochs, [r["val_iou"] for r in rows], color=colours.get(tree), label=label, alpha=0.8)
            axes[1].plot(epochs, [r["samples_per_s"] for r in rows], color=colours.get(tree), label=label, alpha=0.8)
    axes[0].set(xlabel="epoch", ylabel="validation IoU", title="learning (3 seeds each)")
    axes[1].set(xlabel="epoch", ylabel="samples/s", title=f"aps train speed ({THREADS} torch thread, 2-core CPU)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the commit to compare with")
    parser.add_argument("--data", type=Path, default=HERE / "data/industrial-demo")
    parser.add_argument("--out", type=Path, default=HERE / "experiments/cpu_speed/runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--precision", default="auto", help="--precision of the new tree's runs")
    args = parser.parse_args()
    results: dict[str, dict[int, list[dict]]] = {"baseline": {}, "new": {}}
    for seed in args.seeds:
        for tree, path, precision in (("baseline", args.baseline, None), ("new", HERE, args.precision)):
            results[tree][seed] = run_one(path, args.data, args.out / f"{tree}-seed{seed}", seed, args.epochs,
                                          precision)
    table = summary(results)
    print(table)
    report = Path(__file__).with_name("learning.md")
    report.write_text(f"# cpu-demo, {args.epochs} epochs, seeds {args.seeds}: baseline {args.baseline} against "
                      f"this tree (--precision {args.precision})\n\n{table}")
    plot(results, Path(__file__).with_name("learning.png"))
    print(f"wrote {report} and learning.png")


if __name__ == "__main__":
    main()
