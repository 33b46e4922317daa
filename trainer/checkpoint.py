"""Checkpoints: written atomically, read with torch.load(weights_only=True), refused when from another config
or another store.

A checkpoint holds only tensors and plain Python values (the config as a dict, the s-schedule state, RNG
states as tensors/lists), so it loads under weights_only=True without allow-listing anything.
`TrainingState` is the one owner of a checkpoint's entries (to_payload writes them, from_payload reads them) and
`load_checkpoint` the one place that reads a checkpoint file: training saves and resumes through them, the
predictor (and through it `aps eval` and `aps reconstruct`) loads through them.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write
from common.errors import first_line
from trainer.config import differences

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
LAST = "last.ckpt"
BEST = "best.ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or made by a different configuration."""


RESUME_ENTRIES = ("optimizer", "scaler", "s_schedule", "history", "rng")
"""what a resume needs beyond the weights and the record (restored exported weights hold none of them)"""


@dataclass
class TrainingState:
    """A run at the end of one of its epochs, as its checkpoint holds it.

    to_payload gives the checkpoint's entries (these keys, in this order: the file is the one written before this
    class existed, byte for byte); from_payload reads them back, also from a checkpoint that holds only the
    weights and the record (restored exported weights: the resume entries are then None)."""

    config: dict[str, Any]
    """the run's TrainConfig in trainer.config.to_dict form"""
    model: dict[str, torch.Tensor]
    """the network's state_dict"""
    epoch: int
    """the epoch (0-based) this state is at the end of"""
    best_val_f1: float
    """the best validation F1 of the run up to this epoch"""
    optimizer: dict[str, Any] | None = None
    """Adam's state_dict"""
    scaler: dict[str, Any] | None = None
    """the AMP loss scaler's state_dict"""
    s_schedule: dict[str, Any] | None = None
    """trainer.labels.SSchedule.state_dict"""
    history: list[dict] | None = None
    """one metrics row (trainer.writer.METRIC_COLUMNS) per epoch, across resumes"""
    rng: dict[str, Any] | None = None
    """Python, numpy and torch RNG states (rng_state) when the state was taken"""
    positive_ratio: float | None = None
    """r of eq. 12 over the training objects"""
    data: str = ""
    """the training store's resolved path on the machine that trained ("" in older checkpoints)"""
    data_identity: dict[str, Any] | None = None
    """trainer.data.store_identity of the data and objects (None in older checkpoints)"""

    def to_payload(self) -> dict[str, Any]:
        """The checkpoint's entries (save_checkpoint adds checkpoint_version)."""
        return {"config": self.config, "model": self.model, "optimizer": self.optimizer, "scaler": self.scaler,
                "s_schedule": self.s_schedule, "epoch": self.epoch, "best_val_f1": self.best_val_f1,
                "history": self.history, "rng": self.rng, "positive_ratio": self.positive_ratio, "data": self.data,
                "data_identity": self.data_identity}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path) -> TrainingState:
        """The state of a load_checkpoint payload read from `path` (named in the one-line error of a payload
        without its epoch or best F1 or with values of the wrong type; other entries it lacks are None)."""
        try:
            return cls(config=payload["config"], model=payload["model"], epoch=int(payload["epoch"]),
                       best_val_f1=float(payload["best_val_f1"]), optimizer=payload.get("optimizer"),
                       scaler=payload.get("scaler"), s_schedule=payload.get("s_schedule"),
                       history=None if payload.get("history") is None else list(payload["history"]),
                       rng=payload.get("rng"), positive_ratio=payload.get("positive_ratio"),
                       data=str(payload.get("data") or ""), data_identity=payload.get("data_identity"))
        except KeyError as exc:
            raise CheckpointError(f"{path}: not a checkpoint of this toolkit (no {exc.args[0]} entry)") from exc
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its record does not fit this code ({first_line(exc)})") from exc

    def best_epoch(self) -> int | None:
        """The epoch (0-based, as `epoch`) that the run's record names best: the first with the highest val_f1 of
        its history (an epoch is best only when it beats every earlier one); None without one."""
        rows = [row for row in self.history or [] if isinstance(row.get("val_f1"), int | float)]
        if not rows:
            return None
        best = max(rows, key=lambda row: row["val_f1"])  # max keeps the first of equal values
        return int(best["epoch"]) - 1

    def check_resumable(self, path: str | Path) -> None:
        """Refuse to resume from a checkpoint without the optimiser, scaler, s schedule, history or RNG states."""
        missing = [name for name in RESUME_ENTRIES if getattr(self, name) is None]
        if missing:
            raise CheckpointError(f"{path}: holds the weights but no {', '.join(missing)} (exported weights?); a "
                                  "run cannot resume from it: start a new --out")


WEIGHTS_ONLY = ("optimizer", "scaler", "rng")
"""what best.ckpt and an export leave out: only a resume reads them, and Adam's two moments are twice the weights"""


def weights_state(state: TrainingState) -> TrainingState:
    """The state as best.ckpt and `aps export` keep it: the weights, the config and the record (epoch, history,
    s schedule, data), without WEIGHTS_ONLY; eval and reconstruct load it like any checkpoint, a resume refuses it
    (check_resumable)."""
    return replace(state, **dict.fromkeys(WEIGHTS_ONLY))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save under a temporary name in the same folder, then renamed: a kill never leaves half a file.
    A full disk raises common.atomic.DiskFullError naming `path`, which is then as it was."""

    def write(tmp: Path) -> None:
        # into a file object, so that a full disk surfaces as the OSError (ENOSPC) of its write, which
        # torch.save given a path loses behind "[enforce fail at inline_container.cc] unexpected pos"
        with open(tmp, "wb") as f:
            torch.save({"checkpoint_version": CHECKPOINT_VERSION, **payload}, f)

    atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """The payload of a checkpoint file (weights_only=True), with a one-line error naming the file.
    mmap=True maps the tensors instead of reading them: for reading a checkpoint's record (epoch, history)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # a foreign pickle makes torch warn about its protocol first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign files all end here
        first = first_line(exc, "")
        if isinstance(exc, RuntimeError) and "device" in first and "weights_only" not in first:
            raise CheckpointError(f"{path}: cannot be loaded onto {map_location} ({first.split('. ')[0]})") from exc
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit ({_unreadable(path, exc)})") from exc
    if not isinstance(payload, dict) or "checkpoint_version" not in payload:
        if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            what = f"a bare state dict of {len(payload)} tensors, without the config"
        elif isinstance(payload, dict):
            what = f"a dict of {', '.join(map(str, list(payload)[:3]))}{', ...' if len(payload) > 3 else ''}"
        else:
            what = f"a {type(payload).__name__}"
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (a torch file holding {what} and "
                              "without checkpoint_version)")
    if payload["checkpoint_version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload['checkpoint_version']!r}; this code reads "
                              f"version {CHECKPOINT_VERSION}")
    missing = [k for k in ("config", "model") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (no {' or '.join(missing)} entry)")
    return payload


def save_state(path: str | Path, state: TrainingState) -> None:
    """save_checkpoint of the state's entries."""
    save_checkpoint(path, state.to_payload())


def load_state(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> TrainingState:
    """The TrainingState of a checkpoint file (load_checkpoint; mmap=True to read only its record)."""
    return TrainingState.from_payload(load_checkpoint(path, map_location, mmap), path)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load refused a file, in a few words. Never torch's own text: it advises loading with
    weights_only=False, which runs whatever code the file holds and which no checkpoint of this toolkit needs."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        return f"{size} bytes that are not the zip archive torch.save writes"
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        return ("it holds Python objects, not only tensors and plain values"
                + (f": {found.group(1)}" if found else ""))
    if isinstance(exc, EOFError) or "central directory" in text:
        return "a truncated or damaged zip archive"
    return f"a zip archive torch cannot read as a checkpoint ({type(exc).__name__})"


def check_same_config(path: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose config differs in anything but the resumable fields."""
    diff = differences(saved, current)
    if diff:
        raise CheckpointError(f"{path}: checkpoint was trained with another config ({'; '.join(diff[:4])}"
                              f"{'; ...' if len(diff) > 4 else ''}); use a new --out folder or the same options")


def load_model_state(model: torch.nn.Module, path: str | Path, saved: TrainingState,
                     built_from: dict[str, Any]) -> None:
    """model.load_state_dict(saved.model), or a one-line CheckpointError naming the file and why the weights do
    not fit: the model fields where the checkpoint's stored config and the config the model was built from
    (`built_from`, to_dict form) differ, then the first missing, unexpected and other-shape keys."""
    state, own = saved.model, model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here" for k in own
                if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or reshaped):
        try:
            model.load_state_dict(state)
            return
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()
            raise CheckpointError(f"{path}: its weights do not fit the {type(model).__name__} this code builds "
                                  f"({' '.join(reason[:2])})") from exc
    parts = _model_field_differences(saved.config, built_from)
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)):
        if keys:
            parts.append(f"{len(keys)} {name} key{'s' if len(keys) > 1 else ''}: {', '.join(keys[:2])}"
                         f"{', ...' if len(keys) > 2 else ''}")
    raise CheckpointError(f"{path}: its weights do not fit the {type(model).__name__} this code builds from its "
                          f"config ({'; '.join(parts)})")


def _model_field_differences(saved: dict[str, Any], built: dict[str, Any]) -> list[str]:
    """`model.x: checkpoint A, built B` for every model field that differs (architecture lives in model.*)."""
    a, b = saved.get("model", {}), built.get("model", {})
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            out.append(f"model.{key} not in the checkpoint's config, built with {b[key]!r}")
        elif key not in b:
            out.append(f"model.{key} = {a[key]!r} in the checkpoint, unknown to this code")
        elif a[key] != b[key]:
            out.append(f"model.{key}: checkpoint {a[key]!r}, built {b[key]!r}")
    return out


def check_same_data(path: str | Path, saved_state: TrainingState, identity: dict[str, Any]) -> None:
    """Refuse to resume on other data than the run was trained on (trainer.data.store_identity): the same
    dataset and objects at another path (a moved or copied store) is accepted; checkpoints written before
    identities were recorded are compared by the store's resolved path only."""
    saved = saved_state.data_identity
    if saved is None:
        if saved_state.data and saved_state.data != identity["path"]:
            raise CheckpointError(f"{path}: the run was trained on the store {saved_state.data}, not --data "
                                  f"{identity['path']} (this checkpoint records only the store's path); resume "
                                  "with that store or start a new --out")
        return
    if saved["digest"] != identity["digest"]:
        what = "has changed since" if saved["path"] == identity["path"] else "is not"
        raise CheckpointError(
            f"{path}: --data {identity['path']} (dataset {identity['dataset']!r}, {identity['n_train']} training "
            f"/ {identity['n_val']} validation objects, digest {identity['digest']}) {what} the store the run "
            f"was trained on, {saved['path']} (dataset {saved['dataset']!r}, {saved['n_train']} / "
            f"{saved['n_val']}, digest {saved['digest']}); resume with that store or start a new --out")
    if saved["path"] != identity["path"]:
        log.info("%s: the training store moved from %s to %s (same dataset and objects); resuming on it",
                 path, saved["path"], identity["path"])


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
