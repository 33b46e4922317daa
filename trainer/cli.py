"""`aps train`: a preprocessed store -> a run folder with checkpoints, metrics, TensorBoard log and a plot."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from common.out_folder import check_out_folder
from trainer.config import BOUNDS_EPOCHS_MAX, apply, parse_assignments
from trainer.config import preset as make_preset

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """Seconds of a duration written as a number and a unit (s, m or min, h; no unit: seconds): 60m, 1.5h, 900."""
    t = text.strip().lower()
    unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if t.endswith(u)), "")
    try:
        value = float(t[: len(t) - len(unit)].strip()) * _UNITS.get(unit, 1.0)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 60m, 1.5h or 900s", param_hint=option) from None
    if not 0 < value < 1e9 or value != value:
        raise typer.BadParameter(f"{text!r} must be a positive duration", param_hint=option)
    return value


def train(
    data: Path = typer.Option(..., "--data", help="preprocessed store (the output of `aps preprocess`)"),
    out: Path = typer.Option(..., "--out", help="run folder: config.json, last.ckpt, best.ckpt, metrics.csv, ..."),
    epochs: int | None = typer.Option(None, "--epochs", help="epochs to train (default: the preset's)"),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="wall time to train, e.g. 60m, 1.5h, 900s: the run stops at the end of the last "
        "epoch that fits (validation included) and lr schedules span it; without --epochs, epochs are unlimited"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last.ckpt"),
    preset: str = typer.Option("paper", "--preset", help="paper | cpu (best in an hour on 2 cores) | cpu-demo | "
                               "cpu-test"),
    extractor: str | None = typer.Option(None, "--extractor", help="feature extractor: global | multilevel | fpn"),
    labels: str | None = typer.Option(None, "--labels", help="label mode: binary | fixed | adaptive"),
    s_fixed: float | None = typer.Option(None, "--s-fixed", help="s of the fixed label mode (default 0.5)"),
    projection: str | None = typer.Option(None, "--projection", help="orthographic (paper) | perspective (exact)"),
    image_size: int | None = typer.Option(None, "--image-size", help="side of the square network input"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="object-views per step and process"),
    points: int | None = typer.Option(None, "--points", help="points per object-view (paper setup: 2048)"),
    workers: int | None = typer.Option(None, "--workers", help="data-loader worker processes"),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    precision: str | None = typer.Option(
        None, "--precision", help="the network's arithmetic: auto (bf16 where the hardware has it and a timed step "
        "is faster; default) | fp32 (float32: the same bits on one machine) | bf16"),
    seed: int | None = typer.Option(None, "--seed", help="seed of every random choice"),
    pretrained: bool = typer.Option(False, "--pretrained",
                                    help="start ResNet-18 from torchvision's ImageNet weights (must be fetchable)"),
    set_: list[str] = typer.Option([], "--set", help="any config field, repeatable: --set labels.update_every=5"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train the single-view occupancy network on a preprocessed store (docs/METHOD.md, "The networks").

    Starts from a named preset (paper: ResNet-18 + FPN, 5-layer decoder, adaptive labels, Adam 1e-4, 50 epochs),
    applies the options, saves the resolved config with the run, and leaves RUN/last.ckpt (RUN/best.ckpt: best
    validation F1). Several GPUs: `torchrun --nproc_per_node N $(which aps) train ...`.
    """
    # here, not at the top: aps.cli imports every command's module at start-up, and the loop imports torch
    from trainer.loop import run_training

    cfg = make_preset(preset)
    budget = None if time_budget is None else parse_duration(time_budget, "--time-budget")
    if budget is not None and epochs is None:
        epochs = BOUNDS_EPOCHS_MAX  # the budget decides
    options = {
        "optim.time_budget_s": budget,
        "optim.epochs": epochs, "model.extractor": extractor, "labels.mode": labels, "labels.s_fixed": s_fixed,
        "model.projection": projection, "data.image_size": image_size, "data.batch_size": batch_size,
        "data.points_per_sample": points, "data.num_workers": workers, "optim.lr": lr, "device": device,
        "precision": precision, "seed": seed, "model.pretrained": True if pretrained else None,
    }
    # the typed options as they are, then --set read by each field's type; one validation of the result, so a
    # --set may still correct an option, and the later of the two wins
    apply(cfg, {k: v for k, v in options.items() if v is not None} | parse_assignments(list(set_)))
    check_out_folder(out, "train")  # a store, an eval report or reconstructions are not a run folder
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_training(cfg, data, out, resume=resume, progress=not quiet)
    typer.echo(summary.line())
