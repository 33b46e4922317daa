"""Running the ablation: preprocess the store if it is missing, train and evaluate every (variant, seed) of
the plan with `aps train` / `aps eval` as subprocesses (skipping finished runs, refusing a different plan in the
same OUT), and rewrite the tables, figures and summary after every run.

Why subprocesses: every number must come from the same code a user runs, so this room holds no training or
evaluation code; it only decides which commands to start and reads back what they wrote.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from common.atomic import atomic_write_text
from evaluation.report import compare_table, load_runs, write_table
from experiments.ablation.figures import plot_curves, sweep_picture
from experiments.ablation.plan import (
    KNOWN_VARIANTS,
    SPEED_BASE,
    SPEED_TEST,
    Layout,
    Plan,
    Variant,
    fixed,
    read_curve,
)
from experiments.ablation.tables import all_inside_val_iou, failure_table, speed_markdown, speed_rows, variant_table

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository root: `python -m aps` runs from here


def aps_command(args: Sequence[str], threads: int, module: str = "aps") -> tuple[list[str], dict[str, str]]:
    """(`python -m MODULE ARGS`, its environment): this Python, the repository root first on PYTHONPATH (what
    was on it stays, e.g. the GPU machine's carried wheels), `threads` OpenMP/MKL threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return [sys.executable, "-m", module, *args], env


def run_aps(args: Sequence[str], log_path: Path, threads: int) -> int:
    """Run `python -m aps ARGS` from the repository root with its output in log_path -> exit status."""
    command, env = aps_command(args, threads)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        return subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                              check=False).returncode


def last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.exists() else []
    return lines[-1].strip() if lines else "(no output)"


def ensure_store(data: Path, manifest: Path | None, threads: int, log_dir: Path) -> None:
    """Preprocess the dataset unless data/index.json exists.

    `aps preprocess` exits 1 when some objects fail (robosuite ships 2 empty STL files); the store is still
    complete with the other objects, which `open_store` checks, so that exit status is only logged.
    """
    from pipeline.schema.read import open_store

    if (data / "index.json").is_file():
        return
    if manifest is None:
        raise FileNotFoundError(f"{data}: no preprocessed store here (index.json missing); pass --manifest "
                                "to preprocess it first")
    log_path = log_dir / "preprocess.log"
    log.info("preprocessing %s -> %s (log: %s)", manifest, data, log_path)
    rc = run_aps(["preprocess", "--manifest", str(manifest), "--out", str(data)], log_path, threads)
    store = open_store(data)  # raises with the reason when the store is incomplete
    if rc != 0:
        log.warning("aps preprocess exited %d (%s); the store is complete with %d objects", rc,
                    last_line(log_path), len(store.object_ids))


def train_args(plan: Plan, data: Path, layout: Layout, variant: Variant, seed: int) -> list[str]:
    """The `aps train` arguments of one (variant, seed) of the plan (with --resume when its run folder holds a
    last.ckpt)."""
    run_dir = layout.run_dir(variant, seed)
    args = ["train", "--data", str(data), "--out", str(run_dir), "--preset", plan.train_preset,
            "--epochs", str(plan.epochs), "--seed", str(seed), "--device", plan.device, "--quiet",
            *variant.train_args, "--set", f"threads={plan.threads}"]
    for assignment in plan.train_set:
        args += ["--set", assignment]
    if (run_dir / "last.ckpt").is_file():
        args.append("--resume")
    return args


def train_run(plan: Plan, data: Path, layout: Layout, variant: Variant, seed: int) -> None:
    """Train one (variant, seed) with `aps train`, resuming a cut-short run and skipping a finished one."""
    if len(read_curve(layout.run_dir(variant, seed))) >= plan.epochs:
        return
    args = train_args(plan, data, layout, variant, seed)
    log_path = layout.log_file(variant, seed, "train")
    t0 = time.monotonic()
    rc = run_aps(args, log_path, plan.threads)
    if rc != 0:
        raise RuntimeError(f"aps train of {variant.name} seed {seed} exited {rc}: {last_line(log_path)} "
                           f"(log: {log_path})")
    log.info("trained %s seed %d in %.0f s: %s", variant.name, seed, time.monotonic() - t0, last_line(log_path))


def eval_run(plan: Plan, data: Path, layout: Layout, variant: Variant, seed: int, limit: int | None) -> None:
    """Evaluate one trained run's last.ckpt on the test split with `aps eval` (skipped when eval.json exists).

    last.ckpt, not best.ckpt: every variant is compared after the same fixed budget (best.ckpt is chosen by
    validation F1, which the soft labels of fixed/adaptive shift, so it would not be a like-for-like pick).
    """
    out = layout.eval_dir(variant, seed)
    if (out / "eval.json").is_file():
        return
    args = ["eval", "--checkpoint", str(layout.run_dir(variant, seed) / "last.ckpt"), "--data", str(data),
            "--out", str(out), "--split", "test", "--view", str(plan.eval_view),
            "--resolution", str(plan.eval_resolution), "--coarse", str(plan.eval_coarse),
            "--silhouette-views", str(plan.silhouette_views), "--threads", str(plan.threads),
            "--device", "cuda" if plan.device.startswith("cuda") else "cpu"]
    if plan.device == "auto":
        import torch

        args[-1] = "cuda" if torch.cuda.is_available() else "cpu"
    if limit is not None:
        args += ["--limit", str(limit)]
    log_path = layout.log_file(variant, seed, "eval")
    t0 = time.monotonic()
    rc = run_aps(args, log_path, plan.threads)
    if not (out / "eval.json").is_file():
        raise RuntimeError(f"aps eval of {variant.name} seed {seed} exited {rc} without finishing: "
                           f"{last_line(log_path)} (log: {log_path})")
    if rc != 0:  # some objects failed: they are scored with the worst values, as docs/METRICS.md says
        log.warning("aps eval of %s seed %d exited %d: %s", variant.name, seed, rc, last_line(log_path))
    log.info("evaluated %s seed %d in %.0f s", variant.name, seed, time.monotonic() - t0)


def _plan_dict(plan: Plan) -> dict:
    return json.loads(json.dumps(asdict(plan)))


def check_plan(plan: Plan, out: Path, data: Path) -> None:
    """Refuse to mix runs of another plan into OUT (a finished run is reused, so it must be the same)."""
    wanted = {"data": str(data.resolve()), "plan": _plan_dict(plan)}
    path = out / "plan.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        old, new = saved.get("plan", {}), wanted["plan"]
        # which runs to make, and how many threads make them, may change; what a run is may not
        free = ("variants", "seeds", "sweep", "threads")
        same_runs = {k: v for k, v in old.items() if k not in free} == {k: v for k, v in new.items() if k not in free}
        if saved.get("data") != wanted["data"] or not same_runs:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["data"]
            raise ValueError(f"{out}: holds an ablation with other settings ({', '.join(diff)}); use another "
                             "--out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=1))


def run_ablation(plan: Plan, data: Path, out: Path, manifest: Path | None = None) -> dict:
    """Make every run of the plan that is not finished yet, then write the tables and plots -> summary.

    A failing run is logged and skipped (its error is in summary['failed']); the tables are rewritten after
    every run, so an ablation that is stopped keeps tables of what finished.
    """
    data, out = Path(data).resolve(), Path(out).resolve()
    layout = Layout(out)
    ensure_store(data, manifest, plan.threads, out / "logs")
    check_plan(plan, out, data)
    failed: dict[str, str] = {}
    runs = plan.runs()
    started = time.monotonic()
    for i, (variant, seed) in enumerate(runs, 1):
        in_sweep = variant.name not in plan.variants
        log.info("[%d/%d] %s seed %d", i, len(runs), variant.name, seed)
        try:
            train_run(plan, data, layout, variant, seed)
            eval_run(plan, data, layout, variant, seed, plan.sweep_limit if in_sweep else plan.eval_limit)
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            log.error("%s", exc)
            failed[f"{variant.name} seed {seed}"] = str(exc)
        write_reports(plan, data, out)
    summary = write_reports(plan, data, out)
    summary["failed"] = failed
    summary["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _write_csv(rows: Sequence[dict[str, object]], path: Path) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_reports(plan: Plan, data: Path, out: Path) -> dict:
    """Write table2, table2_runs, learning_curves.png, speed, sweep from whatever has finished -> summary."""
    layout = Layout(out)
    summary: dict[str, object] = {"plan": _plan_dict(plan), "data": str(data)}
    write_table(variant_table(layout, plan.variants, plan.seeds), out / "table2")
    write_table(failure_table(layout, plan.variants, plan.seeds), out / "table2_failures")
    finished = [(f"{name} seed {s}", layout.eval_dir(KNOWN_VARIANTS[name], s)) for name in plan.variants
                for s in plan.seeds if (layout.eval_dir(KNOWN_VARIANTS[name], s) / "eval.json").is_file()]
    if finished:
        runs = load_runs([p for _, p in finished])
        write_table(compare_table([(n, rows) for (n, _), (_, rows) in zip(finished, runs, strict=True)]),
                    out / "table2_runs")
    summary["table2_runs"] = [n for n, _ in finished]
    from trainer.config import override, preset

    val_on = override(preset(plan.train_preset), list(plan.train_set)).data.val_on  # what `aps train` trained with
    reference = all_inside_val_iou(data, on=val_on)
    summary["all_inside_val_iou"] = reference
    summary["learning_curves"] = plot_curves(layout, plan.variants, plan.seeds, out / "learning_curves.png",
                                             reference)
    speed = speed_rows(layout, plan.seeds, reference) if {SPEED_BASE, SPEED_TEST} <= set(plan.variants) else []
    _write_csv(speed, out / "speed.csv")
    atomic_write_text(out / "speed.md", speed_markdown(speed))
    summary["speed"] = speed
    if plan.sweep:
        names = [fixed(s).name for s in plan.sweep]
        # the same objects for every s (the s=0.5 run of the variants was evaluated on more)
        write_table(variant_table(layout, names, plan.seeds[:1], plan.sweep_limit), out / "sweep")
        write_table(failure_table(layout, names, plan.seeds[:1], plan.sweep_limit), out / "sweep_failures")
        summary["sweep_objects"] = sweep_picture(plan, data, layout, out / "sweep.png")
    return summary
