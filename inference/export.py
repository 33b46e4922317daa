"""A trained network as users pass it on: the weights, the config and the run's record, without the state only a
resume needs (Adam's two moments are twice the weights), in float32 or bfloat16. `aps eval` and `aps reconstruct`
load the file like any checkpoint; `aps train --resume` refuses it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from inference.predictor import resolve_checkpoint
from trainer.checkpoint import load_state, save_state, weights_state

PRECISIONS = ("fp32", "bf16")


def export_checkpoint(source: str | Path, out: str | Path, precision: str = "fp32") -> Path:
    """source (a .ckpt or a run folder: its best.ckpt, as eval takes it) -> OUT (.ckpt), written atomically, with
    floating-point weights in `precision` (bf16 halves the file; the network computes in float32 once loaded).
    Returns the checkpoint it read."""
    out = Path(out)
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if out.suffix != ".ckpt":
        raise ValueError(f"{out}: --out must be a file name ending in .ckpt")
    if out.is_dir():
        raise ValueError(f"{out}: --out is a folder; give the file to write")
    ckpt = resolve_checkpoint(source)
    if out.exists() and out.resolve() == ckpt.resolve():
        raise ValueError(f"{out}: is the checkpoint being exported; write the export elsewhere")
    state = weights_state(load_state(ckpt))
    if precision == "bf16":
        state = replace(state, model={k: v.to(torch.bfloat16) if v.is_floating_point() else v
                                      for k, v in state.model.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    return ckpt
