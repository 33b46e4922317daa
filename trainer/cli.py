"""`aps train`: a preprocessed store -> a run folder with checkpoints, metrics, TensorBoard log and a plot."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from common.cli_options import DEVICE, resolve_device
from common.out_folder import check_out_folder
from trainer.config import BOUNDS_EPOCHS_MAX, PRESETS, apply, parse_assignments
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


def _preset_values(field: str) -> str:
    """A field's value in each preset, as --help shows it: 'paper 50, cpu 60 min, cpu-demo 16, cpu-test 2'."""
    values = {}
    for name in PRESETS:
        cfg = value = make_preset(name)
        for part in field.split("."):
            value = getattr(value, part)
        if field == "optim.epochs" and cfg.optim.time_budget_s:  # the budget decides, not the epoch count
            value = f"{cfg.optim.time_budget_s / 60:g} min"
        values[name] = f"{value:g}" if isinstance(value, float) else str(value)
    if len(set(values.values())) == 1:
        return f"{next(iter(values.values()))} in every preset"
    return ", ".join(f"{name} {value}" for name, value in values.items())


def train(
    data: Path = typer.Option(..., "--data", help="preprocessed store (the output of `aps preprocess`)"),
    out: Path = typer.Option(..., "--out", help="run folder: config.json, last.ckpt, best.ckpt, metrics.csv, ..."),
    epochs: int | None = typer.Option(None, "--epochs", show_default=_preset_values("optim.epochs"),
                                      help="epochs to train"),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="wall time to train, e.g. 60m, 1.5h, 900s: the run stops at the end of the last "
        "epoch that fits (validation included) and lr schedules span it; without --epochs, epochs are unlimited"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last.ckpt"),
    preset: str = typer.Option("auto", "--preset", help="auto (paper where --device gives a GPU, else cpu) | paper "
                               "| cpu (best in an hour on 2 cores) | cpu-demo | cpu-test; the options below start "
                               "from its values"),
    extractor: str | None = typer.Option(None, "--extractor", show_default=_preset_values("model.extractor"),
                                         help="feature extractor: global | multilevel | fpn"),
    labels: str | None = typer.Option(None, "--labels", show_default=_preset_values("labels.mode"),
                                      help="label mode: binary | fixed | adaptive"),
    s_fixed: float | None = typer.Option(None, "--s-fixed", show_default=_preset_values("labels.s_fixed"),
                                         help="s of the fixed label mode"),
    projection: str | None = typer.Option(None, "--projection", show_default=_preset_values("model.projection"),
                                          help="orthographic (paper) | perspective (exact)"),
    image_size: int | None = typer.Option(None, "--image-size", show_default=_preset_values("data.image_size"),
                                          help="side of the square network input in pixels (stored views are "
                                          "resized to it)"),
    batch_size: int | None = typer.Option(None, "--batch-size", show_default=_preset_values("data.batch_size"),
                                          help="object-views per step and process"),
    points: int | None = typer.Option(None, "--points", show_default=_preset_values("data.points_per_sample"),
                                      help="points per object-view"),
    loader_workers: int | None = typer.Option(None, "--loader-workers",
                                              show_default=_preset_values("data.num_workers"),
                                              help="data-loader worker processes"),
    old_workers: int | None = typer.Option(None, "--workers", hidden=True,
                                           help="the former name of --loader-workers"),
    lr: float | None = typer.Option(None, "--lr", show_default=_preset_values("optim.lr"), help="Adam learning rate"),
    device: str = DEVICE,
    precision: str | None = typer.Option(
        None, "--precision", show_default=_preset_values("precision"), help="the network's arithmetic: auto (bf16 "
        "where the hardware has it and a timed step is faster) | fp32 (float32: the same bits on one machine) | bf16"),
    seed: int | None = typer.Option(None, "--seed", show_default=_preset_values("seed"),
                                    help="seed of every random choice"),
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

    if old_workers is not None:
        raise typer.BadParameter("is --loader-workers in aps train (data-loader processes); --workers means Dask "
                                 "worker processes in aps preprocess and aps eval", param_hint="--workers")
    if preset == "auto":
        preset = "paper" if resolve_device(device).startswith("cuda") else "cpu"
        logging.getLogger(__name__).info("preset %s (--preset auto: %s)", preset,
                                         "a GPU" if preset == "paper" else "no GPU: an hour of the CPU")
    cfg = make_preset(preset)
    budget = None if time_budget is None else parse_duration(time_budget, "--time-budget")
    if budget is not None and epochs is None:
        epochs = BOUNDS_EPOCHS_MAX  # the budget decides
    options = {
        "optim.time_budget_s": budget,
        "optim.epochs": epochs, "model.extractor": extractor, "labels.mode": labels, "labels.s_fixed": s_fixed,
        "model.projection": projection, "data.image_size": image_size, "data.batch_size": batch_size,
        "data.points_per_sample": points, "data.num_workers": loader_workers, "optim.lr": lr, "device": device,
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
