"""Per-object results on disk, so that an eval killed half-way is completed by running it again.

Every finished object leaves OUT/objects/<object_id>.json (its metrics row, the files it wrote, the seconds of
each step), written atomically after its mesh and picture, so a record on disk means all of its files are
complete. The record carries the run's digest: a hash of what decides the values (the field, e.g. the
checkpoint's bytes; the store's dataset and parameters; the settings of EvalConfig that change a value or a
file), never of what only selects objects (split, --object, --per-category, --limit) or sizes the work (batch
size, device, workers). A rerun with the same digest skips the objects whose record is there, whose files
still exist and whose stored data (content hash) is unchanged, and redoes the others. A rerun with another
digest into a folder that holds results is refused, naming the first setting that differs: it would mix two
evaluations in one table, and silently redoing could throw away hours of work (docs/EVALUATION.md).

OUT/resume.json holds the digest and the settings behind it; OUT/.eval.lock keeps a second `aps eval` out of
a folder one is writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_text
from common.locking import single_writer
from evaluation.mesh_page import PAGE_FACES
from pipeline.schema.layout import object_file

log = logging.getLogger(__name__)

RESULT_VERSION = 2  # bump when a change of the scoring code changes a value: old records are then refused
OBJECTS_DIR = "objects"
RESUME_FILE = "resume.json"
LOCK_FILE = ".eval.lock"
# EvalConfig fields that neither change a value nor a file: they select objects or size the work
NOT_IN_DIGEST = ("split", "limit", "objects", "per_category", "batch_size", "extra")


class ResultsMismatchError(RuntimeError):
    """The output folder holds results of an eval with other settings."""


@dataclass
class ObjectResult:
    """One object's outcome: its metrics.csv row, the files it wrote (relative to OUT) and the seconds by step.

    status in the row: ok, no_surface: ..., error: ... (docs/METRICS.md, "Failures"); only ok and no_surface
    results are recorded on disk: an error is retried by the next run.
    """

    object_id: str
    row: dict[str, Any]
    picture: str | None = None
    files: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    digest: str = ""
    content_hash: str = ""

    @property
    def failed(self) -> bool:
        return str(self.row.get("status", "")).startswith("error")

    @property
    def seconds(self) -> float:
        return float(self.row.get("seconds") or 0.0)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_identity(config, field_id: str, store) -> dict[str, Any]:
    """What decides an eval's values and files: the settings a resumed run must share (module docstring).

    config: EvalConfig; field_id: what the field is (for a checkpoint, the sha256 of its bytes); store: the
    pipeline.schema.Store evaluated (its dataset and parameters, not its path: a moved store resumes)."""
    settings = {k: v for k, v in asdict(config).items() if k not in NOT_IN_DIGEST}
    if settings.get("level") == 0.5:  # the level every eval had before it was a setting: those folders resume
        del settings["level"]
    if settings.get("faces") is None:  # the full mesh, as every eval before --faces wrote: those folders resume
        settings.pop("faces", None)
    if settings.get("page_faces") == PAGE_FACES:  # likewise (their objects show in report.html without a view)
        del settings["page_faces"]
    return {"result_version": RESULT_VERSION, "field": field_id,
            "store": {"dataset": store.attrs.get("dataset", ""), "params": store.params,
                      "code_version": store.attrs.get("code_version", "")},
            "settings": json.loads(json.dumps(settings, default=_plain))}


def digest_of(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=_plain).encode()).hexdigest()[:32]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *[k for k in new if k not in old]]:
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
    return f"{where or 'settings'}: {old!r} there, {new!r} here"


class ResultFolder:
    """OUT/objects/*.json: reading what a run finished, writing one record per object (atomically)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.objects_dir = self.out_dir / OBJECTS_DIR

    def record_path(self, object_id: str) -> Path:
        """OUT/objects/<object_id>.json; ValueError for an id that would name a file elsewhere."""
        return object_file(self.objects_dir, object_id, ".json")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a run writes here; a second run is refused at once (not queued)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)

        def refused(who: str) -> ResultsMismatchError:
            return ResultsMismatchError(f"{self.out_dir}: another `aps eval` is writing this folder: {who}")

        with single_writer(self.out_dir / LOCK_FILE, refused):
            yield

    def _records(self) -> Iterator[dict[str, Any]]:
        if not self.objects_dir.is_dir():
            return
        for path in sorted(self.objects_dir.glob("*.json")):
            if path.name.startswith("."):
                continue  # a temporary file of an interrupted atomic write
            try:
                yield json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable record (%s); its object is redone", path, exc)

    def claim(self, identity: Mapping[str, Any]) -> str:
        """Check that the records here were made with `identity` (else ResultsMismatchError naming the first
        difference) and note it in resume.json; returns the digest."""
        digest = digest_of(identity)
        foreign = sum(1 for r in self._records() if r.get("digest") != digest)
        if foreign:
            resume = self.out_dir / RESUME_FILE
            try:
                old = json.loads(resume.read_text())
                difference = _first_difference(old.get("identity", {}), json.loads(json.dumps(identity,
                                                                                          default=_plain)))
            except (OSError, ValueError):
                difference = f"{resume} is missing or unreadable"
            raise ResultsMismatchError(
                f"{self.out_dir}: holds {foreign} object result(s) of an eval with other settings ({difference}); "
                f"rerun with the same arguments to resume it, or choose another --out (or delete "
                f"{self.objects_dir} to start over)")
        atomic_write_text(self.out_dir / RESUME_FILE,
                          json.dumps({"digest": digest, "identity": identity}, indent=1, default=_plain))
        return digest

    def finished(self, store, object_ids: list[str], digest: str) -> dict[str, ObjectResult]:
        """The records of `object_ids` a rerun can keep: this digest, files present, stored data unchanged."""
        wanted = set(object_ids)
        done: dict[str, ObjectResult] = {}
        for record in self._records():
            oid = record.get("object_id")
            if oid not in wanted or record.get("digest") != digest:
                continue
            result = ObjectResult(**record)
            result.row = {k: np.nan if v is None else v for k, v in result.row.items()}  # null: undefined (write)
            if result.content_hash != store.info(oid).get("content_hash", ""):
                log.info("%s: its stored data changed since it was scored; redoing it", oid)
                continue
            missing = [f for f in result.files if not (self.out_dir / f).is_file()]
            if missing:
                log.info("%s: %s is missing; redoing it", oid, missing[0])
                continue
            done[oid] = result
        return done

    def write(self, result: ObjectResult) -> None:
        """Record a finished object (last, after its files); errors are not recorded (a rerun retries them)."""
        if result.failed:
            return
        record = asdict(result)
        # a metric undefined for this object (NaN: ECD of a reference without edges) is null, as JSON has no NaN
        record["row"] = {k: None if isinstance(v, float | np.floating) and np.isnan(v) else v
                         for k, v in record["row"].items()}
        atomic_write_text(self.record_path(result.object_id), json.dumps(record, default=_plain, allow_nan=False))
