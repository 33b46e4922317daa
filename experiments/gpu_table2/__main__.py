"""`python -m experiments.gpu_table2 run|score|restore|pool|blocker`: the GPU Table 2's command line.

`run` is what scripts/gpu_table2.sh starts (the paper's settings, or --rehearse: the tiny CPU version); `score`
is the subprocess `run` starts per trained variant; `restore` turns the bf16 parts that came back into a
checkpoint here; `pool` pools the seeds of several calls; `blocker` writes the rehearsal's sitecustomize.py
(docs/TRAINING.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def run(
    data: Path = typer.Option(Path("data/industrial-parts-gpu"), "--data", help="preprocessed store"),
    work: Path = typer.Option(..., "--work", help="folder of the runs, scorings and logs (stays on the machine)"),
    out: Path = typer.Option(..., "--out", help="folder of the files to bring back (<= 8, <= 16 MiB each)"),
    rehearse: bool = typer.Option(False, "--rehearse", help="the tiny CPU version (cpu-test, 2 epochs, 32^3)"),
    variants: list[str] = typer.Option([], "--variant", help="only these variants (repeatable); default: all 5"),
    epochs: int = typer.Option(None, "--epochs", help="epochs per variant (paper: 50)"),
    repeats: int = typer.Option(None, "--repeats", help="draws of each training object per epoch (data.repeats)"),
    set_: list[str] = typer.Option([], "--set", help="more `aps train --set` assignments for every variant"),
    budget: float = typer.Option(None, "--budget", help="seconds until the last file is in OUT"),
    scoring: float = typer.Option(None, "--scoring-reserve", help="seconds kept for scoring after the trainings"),
    parallel: int = typer.Option(None, "--parallel", help="processes at once (trainings and scorings)"),
    export: list[str] = typer.Option([], "--export", help="variants whose network comes back (repeatable; 'none')"),
    resolution: int = typer.Option(None, "--resolution", help="scoring grid cells per axis (paper: 256)"),
    coarse: int = typer.Option(None, "--coarse", help="first grid of the coarse-to-fine extraction (0: dense)"),
    limit: int = typer.Option(None, "--limit", help="score only the first N test objects (0: all)"),
    samples: int = typer.Option(None, "--samples", help="points sampled on each predicted mesh"),
    seed: int = typer.Option(None, "--seed", help="the one seed of every variant"),
) -> None:
    """Train the Table-2 variants side by side, score every test object, write the tables and the networks."""
    from experiments.gpu_table2.drive import PAPER, REHEARSAL, run_gpu_table2

    _logging()
    settings = REHEARSAL if rehearse else PAPER
    plan = settings.plan
    train_set = tuple(a for a in plan.train_set if not (repeats and a.startswith("data.repeats=")))
    train_set += ((f"data.repeats={repeats}",) if repeats else ()) + tuple(set_)
    changes = {"variants": tuple(variants) or None, "epochs": epochs, "eval_resolution": resolution,
               "eval_coarse": coarse, "eval_limit": limit, "seeds": (seed,) if seed is not None else None}
    plan = replace(plan, train_set=train_set, **{k: v for k, v in changes.items() if v is not None})
    plan = replace(plan, eval_limit=plan.eval_limit or None)  # 0: all
    budget_ = replace(settings.budget, **{k: v for k, v in {"total": budget, "scoring": scoring}.items()
                                          if v is not None})
    chosen = () if export == ["none"] else (tuple(export) or settings.export)
    settings = replace(settings, plan=plan, budget=budget_, export=chosen,
                       **{k: v for k, v in {"parallel": parallel, "n_samples": samples}.items() if v is not None})
    record = run_gpu_table2(settings, data, work, out)
    typer.echo((out / "table2.md").read_text())
    if not any(entry.get("objects_scored") for entry in record.values()):
        typer.echo("no variant was scored", err=True)
        raise typer.Exit(1)


@app.command()
def score(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="a run's last.ckpt"),
    data: Path = typer.Option(..., "--data", help="preprocessed store with the test split's reference arrays"),
    out: Path = typer.Option(..., "--out", help="folder for metrics.csv and eval.json"),
    resolution: int = typer.Option(256, "--resolution", help="grid cells per axis"),
    coarse: int = typer.Option(32, "--coarse", help="first grid of the coarse-to-fine extraction (0: dense)"),
    view: int = typer.Option(0, "--view", help="stored view given to the network"),
    limit: int = typer.Option(None, "--limit", help="only the first N test objects"),
    samples: int = typer.Option(100_000, "--samples", help="points sampled on each predicted mesh"),
    workers: int = typer.Option(-1, "--workers", help="KD-tree query threads (-1: every core)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
) -> None:
    """Score one checkpoint on the store's test objects: IoU, F-scores, Chamfer-L1, ECD, normal consistency."""
    from experiments.gpu_table2.score import ScoreSettings, score_run

    _logging()
    settings = ScoreSettings(resolution=resolution, coarse=coarse or None, view=view, limit=limit,
                             n_samples=samples, workers=workers)
    rows = score_run(checkpoint, data, out, settings, device)
    typer.echo(f"scored {len(rows)} test objects into {out}")


@app.command()
def restore(
    parts: list[Path] = typer.Argument(..., help="the .bf16-<i>of<n>.pt files of one network"),
    out: Path = typer.Option(..., "--out", help="checkpoint to write (for aps eval / aps reconstruct)"),
) -> None:
    """The bf16 parts that came back from the GPU machine -> a float32 checkpoint `aps eval` reads."""
    from experiments.gpu_table2.weights import restore_checkpoint

    typer.echo(f"wrote {restore_checkpoint(list(parts), out)}")


@app.command()
def pool(
    calls: list[Path] = typer.Argument(..., help="the folders (or table2.json files) of the calls, one seed each"),
    out: Path = typer.Option(..., "--out", help="folder for table2-pooled.md, .json and table2-curves.png"),
) -> None:
    """Pool several calls' seeds: mean ± std per variant, paired differences against fpn+binary, the curves."""
    from experiments.gpu_table2.pool import POOLED_MD, load_calls, write_pooled

    write_pooled(load_calls(calls), out)
    typer.echo((out / POOLED_MD).read_text())


@app.command()
def blocker(folder: Path = typer.Argument(..., help="folder to put on PYTHONPATH")) -> None:
    """Write FOLDER/sitecustomize.py that makes the packages the GPU machine lacks unimportable."""
    from experiments.gpu_table2.drive import write_import_blocker

    typer.echo(str(write_import_blocker(folder)))


if __name__ == "__main__":
    app()
