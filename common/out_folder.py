"""Which aps command wrote a folder, so that no command writes into another command's output.

`aps eval --out RUN` once rewrote a training run's metrics.csv, and `aps reconstruct` of a photo named
config.png would rewrite a run's config.json: the commands write files of the same names. So each `--out` is
checked before anything is loaded or written: an absent or empty folder, a folder of the same command (a rerun
or a resume; that command's own checks decide), or one holding none of the marks below (its other files are
left alone) is fine; a folder holding another command's output is refused, in one line naming the folder and
what it holds. (`aps preprocess` is stricter still: pipeline.schema.check_store_folder wants a store or an
empty folder.)

Each command's folder is known by names only it writes, listed here because this module imports nothing of
the project: pipeline.schema (zarr.json, writer.lock), trainer.loop (last.ckpt, best.ckpt, tensorboard/,
.train.lock), evaluation.results and evaluation.runner (eval.json, resume.json, .eval.lock),
reconstruct.cli (<stem>.preview.png, and <stem>.json with the canonical camera).
"""

from __future__ import annotations

import json
from pathlib import Path

# command -> (what its output is called, names that only its output holds)
MARKS = {
    "preprocess": ("a preprocessed store", ("zarr.json", "writer.lock")),
    "train": ("a training run", ("last.ckpt", "best.ckpt", "tensorboard", ".train.lock")),
    "eval": ("an eval report", ("eval.json", "resume.json", ".eval.lock")),
    "reconstruct": ("reconstructions", ()),  # found by _reconstructions: their file names are the photos'
}
RECONSTRUCT_KEY = "canonical_camera"  # a key of every <stem>.json that `aps reconstruct` writes
_JSON_READ = 64 << 10  # bytes of a .json read to tell whether it is a reconstruction's (they are ~2 kB)
_JSON_TRIED = 8  # .json files tried per folder


class OutFolderError(ValueError):
    """--out holds another command's output, or is not a folder."""


def _reconstructions(path: Path) -> list[str]:
    """Files of `aps reconstruct` in the folder: its page, previews, or a metadata .json holding the canonical
    camera."""
    if (path / "reconstruct.html").is_file():
        return ["reconstruct.html"]
    previews = sorted(p.name for p in path.glob("*.preview.png"))
    if previews:
        return previews
    for tried, json_path in enumerate(sorted(path.glob("*.json"))):
        if tried == _JSON_TRIED:
            break
        try:
            with open(json_path, "rb") as f:
                record = json.loads(f.read(_JSON_READ))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and RECONSTRUCT_KEY in record:
            return [json_path.name]
    return []


def folder_holds(path: str | Path) -> tuple[str, list[str]] | None:
    """(the command whose output the folder holds, the names that show it), or None: absent, not a folder, or
    none of the marks. A folder holding several commands' marks is named by the first, in MARKS' order."""
    path = Path(path)
    if not path.is_dir():
        return None
    for command, (_, names) in MARKS.items():
        found = _reconstructions(path) if command == "reconstruct" else [n for n in names if (path / n).exists()]
        if found:
            return command, found
    return None


def check_out_folder(path: str | Path, command: str) -> None:
    """Refuse `--out PATH` for `aps <command>` when PATH is not a folder or holds another command's output
    (OutFolderError naming the folder, the command and the files that show it); module docstring."""
    if command not in MARKS:
        raise ValueError(f"unknown command {command!r}; known: {sorted(MARKS)}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutFolderError(f"{path}: --out exists and is not a folder; give --out a new or empty folder")
    holds = folder_holds(path)
    if holds is None or holds[0] == command:
        return
    other, found = holds
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    raise OutFolderError(f"{path}: holds {MARKS[other][0]} of `aps {other}` ({shown}); `aps {command}` does not "
                         "write into another command's folder: give --out a new or empty folder")
