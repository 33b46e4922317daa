"""A trained network as weights only, in bfloat16, split into files small enough to come back from the GPU
machine (16 MiB a file there), and the way back: those files -> a checkpoint `aps eval` and `aps reconstruct` read.

Why bf16 and parts: the paper's network (ResNet-18 + FPN + decoder) has 12.3 M parameters, 47 MiB in float32 and
23.5 MiB in bfloat16, so even bf16 takes two files. The optimiser's state, which a resume would need, stays behind:
these files are for scoring and looking at the network here, not for training on.

A part is a plain dict of tensors and plain values (torch.load(weights_only=True) reads it): format, version,
network (the stem every part shares), part, parts, tensors; the first part also holds the run's config, epoch,
best validation F1 and history.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

FORMAT = "aps-weights-bf16"
VERSION = 1
PART_BYTES = 15 * 2**20  # tensor bytes per part: the 16 MiB limit less room for torch's zip headers
FILE_LIMIT = 16 * 2**20  # what one file brought back from the GPU machine may weigh
_PART_NAME = re.compile(r"^(?P<stem>.+)\.bf16-(?P<part>\d+)of(?P<parts>\d+)\.pt$")
RECORD_KEYS = ("config", "epoch", "best_val_f1", "history", "positive_ratio")  # what part 1 keeps of the run


def part_path(out_dir: Path, stem: str, part: int, parts: int) -> Path:
    """OUT/<stem>.bf16-<part>of<parts>.pt (stem: letters, digits, '.', '-', as the GPU machine returns)."""
    return out_dir / f"{stem}.bf16-{part}of{parts}.pt"


def _bf16(tensor: torch.Tensor) -> torch.Tensor:
    """Floating tensors in bfloat16 (batch-norm statistics too: 3 significant digits); counters as they are."""
    return tensor.detach().to(torch.bfloat16) if tensor.is_floating_point() else tensor.detach()


def _split(state: dict[str, torch.Tensor], part_bytes: int) -> list[list[str]]:
    """The state dict's keys in order, grouped so that each group's tensors weigh at most part_bytes (a tensor
    larger than that alone in its group)."""
    groups: list[list[str]] = [[]]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > part_bytes:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    return groups


def export_bf16(checkpoint: str | Path, out_dir: str | Path, stem: str, part_bytes: int = PART_BYTES) -> list[Path]:
    """Write the network of `checkpoint` as OUT/<stem>.bf16-<i>of<n>.pt -> the paths, each under FILE_LIMIT.

    Raises ValueError naming the file when a part would weigh more than FILE_LIMIT (a single tensor larger than
    that): nothing of it could come back.
    """
    out_dir = Path(out_dir)
    payload = load_checkpoint(checkpoint)
    state = {k: _bf16(v) for k, v in payload["model"].items()}
    groups = _split(state, part_bytes)
    record = {k: payload[k] for k in RECORD_KEYS if k in payload}
    paths = []
    for i, keys in enumerate(groups, 1):
        path = part_path(out_dir, stem, i, len(groups))
        part: dict[str, Any] = {"format": FORMAT, "version": VERSION, "network": stem, "part": i,
                                "parts": len(groups), "tensors": {k: state[k] for k in keys}}
        if i == 1:
            part.update(record)

        def write(tmp: Path, part=part) -> None:
            with open(tmp, "wb") as f:
                torch.save(part, f)

        atomic_write(path, write)
        if path.stat().st_size > FILE_LIMIT:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, over the {FILE_LIMIT} a returned file may weigh")
        paths.append(path)
    return paths


def _read_part(path: Path) -> dict[str, Any]:
    try:
        part = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or damaged files all end here
        raise CheckpointError(f"{path}: not a part of exported bf16 weights ({type(exc).__name__})") from exc
    if not isinstance(part, dict) or part.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a part of exported bf16 weights (no format {FORMAT!r})")
    if part.get("version") != VERSION:
        raise CheckpointError(f"{path}: exported weights of version {part.get('version')!r}; this code reads "
                              f"version {VERSION}")
    return part


def restore_checkpoint(parts: list[str | Path], out: str | Path) -> Path:
    """The parts of one exported network (any order) -> a checkpoint at `out` with float32 weights, its config,
    epoch and history, which load_predictor, `aps eval` and `aps reconstruct` read (no optimiser: no resume).

    Refuses, naming a file: a file that is no such part, parts of two networks, a part missing or given twice.
    """
    read = [(Path(p), _read_part(Path(p))) for p in parts]
    if not read:
        raise ValueError("restore needs the exported parts of one network")
    first_path, first = read[0]
    networks = {p["network"] for _, p in read}
    if len(networks) > 1:
        raise CheckpointError(f"{first_path}: parts of different networks given together ({sorted(networks)})")
    n = first["parts"]
    numbers = sorted(p["part"] for _, p in read)
    if numbers != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(numbers)) or numbers
        raise CheckpointError(f"{first_path}: network {first['network']!r} has {n} parts; got parts {numbers} "
                              f"(missing or repeated: {missing})")
    head = next(p for _, p in read if p["part"] == 1)
    state = {}
    for _, part in sorted(read, key=lambda item: item[1]["part"]):
        state.update({k: v.float() if v.is_floating_point() else v for k, v in part["tensors"].items()})
    payload = {k: head[k] for k in RECORD_KEYS if k in head}
    payload.update(model=state, exported=f"{FORMAT} {first['network']}")
    payload.setdefault("epoch", 0)
    payload.setdefault("best_val_f1", float("nan"))
    save_checkpoint(out, payload)
    return Path(out)


def find_parts(folder: str | Path, stem: str) -> list[Path]:
    """The exported parts of network `stem` in a folder (what came back from the GPU machine)."""
    return sorted(p for p in Path(folder).iterdir()
                  if (m := _PART_NAME.match(p.name)) is not None and m.group("stem") == stem)
