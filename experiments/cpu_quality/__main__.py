"""`python -m experiments.cpu_quality --stage search`: train every run of a stage with `aps train --time-budget`,
evaluate its last.ckpt on all test parts with `aps eval`, and rewrite OUT/<stage>.csv and <stage>.md after each.

Resumable: a run folder that holds a checkpoint is resumed (`aps train --resume` trains nothing once its budget
is spent), an eval folder with eval.json is kept. Numbers come from the commands a user runs (subprocesses),
never from code of this folder.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import typer

from common.atomic import atomic_write_text
from evaluation.report import read_metrics_csv
from experiments.ablation.run import ROOT, last_line, run_aps
from experiments.ablation.tables import object_mean
from experiments.cpu_quality.figures import curves_figure, stage_pictures
from experiments.cpu_quality.plan import STAGES, STORES, Run
from experiments.cpu_quality.study import write_study

log = logging.getLogger("experiments.cpu_quality")
MANIFEST = ROOT / "manifests" / "industrial-parts.toml"
PRECISION = "bf16"
"""every run's arithmetic: auto's timed probe sits near its 1.10x bar for these small networks (it chose fp32 in 2 of
the first 6 runs, at 1.08x and 0.99x), and runs in two arithmetics at one budget would not compare"""
COLUMNS = ("run", "seed", "minutes", "epochs", "samples", "val_f1", "iou", "fscore", "fscore_2pct", "chamfer_l1",
           "normal_consistency", "silhouette_iou", "empty", "level", "why", "command")


def store_path(name: str, data: Path) -> Path:
    return data if name == "base" else data.with_name(f"{data.name}-{name}")


def ensure_store(name: str, data: Path, out: Path, threads: int, manifest: Path = MANIFEST) -> Path:
    """The store of that name, preprocessed when missing: base from the manifest as written when it leaves
    n_uniform at the contract's 128, any other from a copy of it with the store's n_uniform (written to
    OUT/manifests)."""
    path = store_path(name, data)
    if (path / "index.json").is_file():
        return path
    text = manifest.read_text()
    if name != "base" or re.search(r"^n_uniform\s*=", text, re.M):
        manifest = _with_n_uniform(manifest, text, STORES[name], out / "manifests" / f"{path.name}.toml")
    _aps(["preprocess", "--manifest", str(manifest), "--out", str(path)], out / "logs" / f"preprocess-{name}.log",
         threads, ok_codes=(0, 1))  # 1: robosuite's two empty STL files fail alone
    return path


def _with_n_uniform(manifest: Path, text: str, n_uniform: int, copy: Path) -> Path:
    """A copy of the manifest's text whose [params] set n_uniform (replacing the manifest's own value)."""
    line = f"n_uniform = {n_uniform}"
    if re.search(r"^n_uniform\s*=", text, re.M):
        text = re.sub(r"^n_uniform\s*=.*$", line, text, count=1, flags=re.M)
    elif "\n[params]\n" in text:
        text = text.replace("\n[params]\n", f"\n[params]\n{line}\n", 1)
    else:
        raise ValueError(f"{manifest}: no [params] table to add n_uniform to")
    copy.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(copy, text)
    return copy


def _aps(args: list[str], log_path: Path, threads: int, ok_codes: tuple[int, ...] = (0,)) -> None:
    """experiments.ablation.run.run_aps, raising with the log's last line unless the exit status is in ok_codes."""
    rc = run_aps(args, log_path, threads)
    if rc not in ok_codes:
        raise RuntimeError(f"aps {args[0]} exited {rc}: {last_line(log_path)} (log: {log_path})")


def train_args(run: Run, store: Path, run_dir: Path, threads: int, precision: str = PRECISION) -> list[str]:
    """`aps train` of one run (with --resume when its folder holds a checkpoint)."""
    args = ["train", "--data", str(store), "--out", str(run_dir), "--preset", run.preset, *run.args,
            "--time-budget", f"{run.minutes:g}m", "--seed", str(run.seed), "--quiet", "--set", f"threads={threads}",
            "--precision", precision]
    return args + (["--resume"] if (run_dir / "last.ckpt").is_file() else [])


def do_run(run: Run, data: Path, out: Path, threads: int, precision: str = PRECISION,
           grid: tuple[int, int] = (256, 32), silhouette_views: int = 8, manifest: Path = MANIFEST) -> None:
    """Train one run to its budget (resuming a cut-short one; a spent budget trains nothing), then evaluate its
    last.ckpt on every test part of the base store `data` at grid = (resolution, coarse) unless its eval folder is
    finished. Every run is evaluated on the base store, whichever store it trained on: a store preprocessed with
    other params drew other cameras and reference points (one random stream per object), and runs compared on
    other input views would differ by the views too."""
    store = ensure_store(run.store, data, out, threads, manifest)
    run_dir, eval_dir = out / "runs" / run.slug, out / "evals" / run.slug
    t0 = time.monotonic()
    _aps(train_args(run, store, run_dir, threads, precision), out / "logs" / f"{run.slug}-train.log", threads)
    if not (eval_dir / "eval.json").is_file():
        _aps(["eval", "--checkpoint", str(run_dir / "last.ckpt"), "--data", str(data), "--out", str(eval_dir),
              "--split", "test", "--resolution", str(grid[0]), "--coarse", str(grid[1]),
              "--silhouette-views", str(silhouette_views), "--threads", str(threads), "--device", "cpu"],
             out / "logs" / f"{run.slug}-eval.log", threads, ok_codes=(0, 1))
    log.info("%s done in %.0f s", run.slug, time.monotonic() - t0)


def result_row(run: Run, out: Path) -> dict | None:
    run_dir, eval_dir = out / "runs" / run.slug, out / "evals" / run.slug
    if not (eval_dir / "metrics.csv").is_file() or not (run_dir / "metrics.csv").is_file():
        return None
    rows = read_metrics_csv(eval_dir / "metrics.csv")
    with (run_dir / "metrics.csv").open() as f:
        curve = list(csv.DictReader(f))
    config = json.loads((run_dir / "config.json").read_text())
    samples = sum(float(r["samples_per_s"]) * float(r["seconds"]) for r in curve)
    return {"run": run.name, "seed": run.seed, "minutes": float(curve[-1]["elapsed_s"]) / 60, "epochs": len(curve),
            "samples": int(round(samples)), "val_f1": float(curve[-1]["val_f1"]),
            **{k: object_mean(rows, k) for k in ("iou", "fscore", "fscore_2pct", "chamfer_l1",
                                                  "normal_consistency", "silhouette_iou")},
            "empty": sum(1 for r in rows if r.get("status") != "ok"),
            "level": float(json.loads((eval_dir / "eval.json").read_text()).get("level", 0.5))
            if (eval_dir / "eval.json").is_file() else 0.5, "why": run.why,
            "command": "aps train --preset " + config.get("preset", run.preset) + " " + " ".join(run.args)
                       + f" --time-budget {run.minutes:g}m" + (f" [store {run.store}]" if run.store != "base" else "")}


def write_results(runs: tuple[Run, ...], out: Path, stage: str) -> list[dict]:
    rows = [r for r in (result_row(run, out) for run in runs) if r is not None]
    lines = [",".join(COLUMNS)] + [",".join(_cell(r[c]) for c in COLUMNS) for r in rows]
    atomic_write_text(out / f"{stage}.csv", "\n".join(lines) + "\n")
    head = "| run | seed | min | epochs | samples | IoU | F@1% | F@2% | Chamfer-L1 | NC | silhouette IoU | empty |"
    md = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        md.append(f"| {r['run']} | {r['seed']} | {r['minutes']:.1f} | {r['epochs']} | {r['samples']} | "
                  f"{r['iou']:.3f} | {r['fscore']:.3f} | {r['fscore_2pct']:.3f} | {r['chamfer_l1']:.4f} | "
                  f"{r['normal_consistency']:.3f} | {r['silhouette_iou']:.3f} | {r['empty']} |")
    atomic_write_text(out / f"{stage}.md", "\n".join(md) + "\n")
    return rows


def _cell(value: object) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text else text


def main(
    stage: str = typer.Option("search", "--stage", help=f"which runs: {', '.join(STAGES)}"),
    only: list[str] = typer.Option([], "--only", help="only runs of these names (repeatable)"),
    manifest: Path = typer.Option(MANIFEST, "--manifest", help="the dataset the stores are preprocessed from"),
    data: Path = typer.Option(Path("data/industrial-parts"), "--data", help="the base store (128 uniform points)"),
    out: Path = typer.Option(Path("reports/cpu_quality"), "--out", help="runs, evals, logs and tables"),
    threads: int = typer.Option(2, "--threads", help="torch threads of each run (1 on a shared machine)"),
    minutes: float = typer.Option(None, "--minutes", help="every run's budget instead of the plan's (its own "
                                  "folders: the minutes are in their names)"),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if stage not in STAGES:
        raise typer.BadParameter(f"unknown stage {stage!r}; choose one of {sorted(STAGES)}", param_hint="--stage")
    plan = STAGES[stage] if minutes is None else tuple(replace(r, minutes=minutes) for r in STAGES[stage])
    for run in (r for r in plan if not only or r.name in only):
        do_run(run, data, out, threads, manifest=manifest)
        write_results(plan, out, stage)
    write_figures(plan, data, out, stage)
    print((out / f"{stage}.md").read_text())
    if len({r.seed for r in plan}) > 1:
        print(write_study(plan, out, stage, base=plan[0].name).read_text())


def write_figures(runs: tuple[Run, ...], data: Path, out: Path, stage: str) -> None:
    """OUT/<stage>-curves.png (validation IoU against wall minutes) and OUT/<stage>-views/ (test parts from four
    views, each store's runs against its own ground truth)."""
    curves = {}
    for run in runs:
        if (out / "runs" / run.slug / "metrics.csv").is_file():
            with (out / "runs" / run.slug / "metrics.csv").open() as f:
                curves[f"{run.name} {run.minutes:g}m"] = list(csv.DictReader(f))
    curves_figure(curves, out / f"{stage}-curves.png")
    first_seed = min(run.seed for run in runs)  # one seed pictured
    evals = {f"{run.name} {run.minutes:g}m": (out / "evals" / run.slug, data) for run in runs if run.seed == first_seed}
    stage_pictures(evals, out / f"{stage}-views")


if __name__ == "__main__":
    typer.run(main)
