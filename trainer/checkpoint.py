"""Checkpoints: written atomically, read with torch.load(weights_only=True), refused when from another config.

A checkpoint holds only tensors and plain Python values (the config as a dict, the s-schedule state, RNG
states as tensors/lists), so it loads under weights_only=True without allow-listing anything.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import differences

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
LAST = "last.ckpt"
BEST = "best.ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or made by a different configuration."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same folder, then os.replace: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save({"checkpoint_version": CHECKPOINT_VERSION, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a checkpoint file (weights_only=True), with a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign files all end here
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    if not isinstance(payload, dict) or payload.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of this trainer (version "
                              f"{payload.get('checkpoint_version') if isinstance(payload, dict) else '?'})")
    return payload


def check_same_config(path: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose config differs in anything but the resumable fields."""
    diff = differences(saved, current)
    if diff:
        raise CheckpointError(f"{path}: checkpoint was trained with another config ({'; '.join(diff[:4])}"
                              f"{'; ...' if len(diff) > 4 else ''}); use a new --out folder or the same options")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
