"""The ablation's command line: `python -m experiments.ablation [options]` (`make ablation`).

It only turns the options into a Plan (CPU_PLAN, or FULL_PLAN with --full, with the given settings replaced),
runs it and prints table2.md and speed.md; docs/RESULTS.md shows the options in use.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import typer

from experiments.ablation.plan import CPU_PLAN, FULL_PLAN
from experiments.ablation.run import run_ablation


def main(
    data: Path = typer.Option(Path("data/industrial-parts"), "--data", help="preprocessed store"),
    out: Path = typer.Option(Path("reports/ablation"), "--out", help="output folder (runs, evals, tables, plots)"),
    manifest: Path = typer.Option(None, "--manifest", help="preprocess this manifest into --data if it is missing"),
    full: bool = typer.Option(False, "--full", help="the paper's settings (GPU): paper preset, 50 epochs, "
                                                    "24 repeats, 3 seeds, meshes at 256^3"),
    variants: list[str] = typer.Option([], "--variant", help="only these variants (repeatable); default: all"),
    seeds: list[int] = typer.Option([], "--seed", help="seeds (repeatable); default: the plan's"),
    sweep: list[float] = typer.Option([], "--sweep-s", help="fixed-s sweep values (repeatable); default: plan's"),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="skip the fixed-s sweep"),
    epochs: int = typer.Option(None, "--epochs", help="epochs per run (default: the plan's)"),
    preset: str = typer.Option(None, "--preset", help="`aps train` preset (default: cpu-demo, --full: paper)"),
    set_: list[str] = typer.Option([], "--set", help="`aps train --set` for every run, replacing the plan's"),
    resolution: int = typer.Option(None, "--resolution", help="eval grid cells per axis"),
    coarse: int = typer.Option(None, "--coarse", help="eval coarse grid (0: dense)"),
    limit: int = typer.Option(None, "--limit", help="evaluate only the first N test objects (0: all)"),
    sweep_limit: int = typer.Option(None, "--sweep-limit", help="the same for the sweep runs (0: all)"),
    silhouette_views: int = typer.Option(None, "--silhouette-views", help="views of the silhouette IoU"),
    sweep_objects: int = typer.Option(None, "--sweep-objects", help="test objects pictured in sweep.png"),
    device: str = typer.Option(None, "--device", help="training device (cpu plan: cpu, --full: auto)"),
    threads: int = typer.Option(None, "--threads", help="torch threads per run"),
) -> None:
    """The paper's ablation (Table 2), fixed-s sweep (Fig. 6) and training-speed claim; see docs/RESULTS.md."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = FULL_PLAN if full else CPU_PLAN
    changes = {"variants": tuple(variants) or None, "seeds": tuple(seeds) or None, "epochs": epochs,
               "sweep": () if no_sweep else (tuple(sweep) or None), "train_preset": preset,
               "train_set": tuple(set_) or None, "eval_resolution": resolution, "eval_coarse": coarse,
               "eval_limit": limit, "silhouette_views": silhouette_views, "sweep_objects": sweep_objects,
               "sweep_limit": sweep_limit, "device": device, "threads": threads}
    plan = replace(plan, **{k: v for k, v in changes.items() if v is not None})
    plan = replace(plan, eval_limit=plan.eval_limit or None, sweep_limit=plan.sweep_limit or None)  # 0: all
    if not plan.seeds:
        raise typer.BadParameter("need at least one seed")
    summary = run_ablation(plan, data, out, manifest)
    typer.echo((out / "table2.md").read_text())
    typer.echo((out / "speed.md").read_text())
    typer.echo(f"ablation done in {summary['seconds']:.0f} s; tables and plots in {out}")
    if summary["failed"]:
        typer.echo(f"{len(summary['failed'])} run(s) failed: " + "; ".join(summary["failed"]), err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
