"""`aps export`: a checkpoint or run folder -> one file of the trained network for eval, reconstruct or a colleague."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli_options import CHECKPOINT_HELP


def export(
    checkpoint: Path = typer.Argument(..., metavar="RUN_OR_CKPT", help=CHECKPOINT_HELP),
    out: Path = typer.Option(..., "--out", help="The file to write (.ckpt)."),
    precision: str = typer.Option("fp32", "--precision", help="Weights in fp32 | bf16 (half the file; computed in "
                                  "float32 once loaded, occupancies within ~0.01 of the fp32 network's)."),
) -> None:
    """Write the trained network alone: weights, config and the run's record, without the optimiser and RNG state
    only `aps train --resume` needs (a third of last.ckpt's size in fp32, a sixth in bf16).

    `aps eval --checkpoint FILE` and `aps reconstruct --checkpoint FILE` load it like any checkpoint."""
    from inference.export import export_checkpoint

    source = export_checkpoint(checkpoint, out, precision)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {precision}) from {source} "
               f"({source.stat().st_size / 1e6:.1f} MB)")
