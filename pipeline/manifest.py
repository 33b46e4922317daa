"""Dataset manifests: what a dataset is (sources, categories, split, parameters). Format: manifests/README.md."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PreprocessConfig
from pipeline.sources import ObjectSpec, SourceError, list_objects

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file."""


@dataclass
class Manifest:
    name: str
    sources: list[dict[str, Any]]
    split: dict[str, Any] = field(default_factory=lambda: {"method": "hash", "val": 0.1, "test": 0.1})
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    path: Path | None = None

    def config(self) -> PreprocessConfig:
        try:
            return PreprocessConfig.from_dict(self.params)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"{self.path or self.name}: [params]: {exc}") from exc

    def objects(self) -> list[tuple[ObjectSpec, str]]:
        """Every object of every source with its split; duplicate ids are an error."""
        specs: list[ObjectSpec] = []
        for i, source in enumerate(self.sources):
            try:
                specs.extend(list_objects(source, self.base_dir))
            except SourceError as exc:
                raise ManifestError(f"{self.path or self.name}: source {i + 1}: {exc}") from exc
        seen: dict[str, str] = {}
        for s in specs:
            if s.object_id in seen:
                raise ManifestError(f"{self.path or self.name}: object id {s.object_id!r} comes from both "
                                    f"{seen[s.object_id]} and {s.source}")
            seen[s.object_id] = s.source
        if self.split.get("method") == "files":  # the benchmark's own split files (pipeline.sources.splits)
            from pipeline.sources.splits import FileSplit, SplitFileError

            try:
                files = FileSplit.from_table(self.split, self.base_dir)
            except (SplitFileError, OSError) as exc:
                raise ManifestError(f"{self.path or self.name}: [split]: {exc}") from exc
            listed = [(s, files.split_of(s)) for s in specs]
            return [(s, split) for s, split in listed if split is not None]
        if self.split.get("method", "hash") == "hash" and self.split.get("exact", False):
            return list(zip(specs, exact_hash_split([s.object_id for s in specs], self.split), strict=True))
        return [(s, assign_split(s.object_id, self.split)) for s in specs]


def _hash_unit(object_id: str) -> float:
    return int(hashlib.sha256(object_id.encode()).hexdigest()[:8], 16) / 2**32


def exact_hash_split(object_ids: list[str], split: dict[str, Any]) -> list[str]:
    """'hash' with exact = true: objects ranked by the same hash, the first round(test * n) test, the next
    round(val * n) val, so a small dataset gets the asked proportions. The price: adding objects may move the
    few at a boundary of the ranking (plain 'hash' never moves any, but its proportions wander on small sets)."""
    test, val = float(split.get("test", 0.1)), float(split.get("val", 0.1))
    order = sorted(range(len(object_ids)), key=lambda i: (_hash_unit(object_ids[i]), object_ids[i]))
    n_test, n_val = round(test * len(object_ids)), round(val * len(object_ids))
    out = ["train"] * len(object_ids)
    for rank, i in enumerate(order):
        out[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def assign_split(object_id: str, split: dict[str, Any]) -> str:
    """'hash': a stable fraction by a hash of the id (adding objects never moves others); 'lists': named ids."""
    method = split.get("method", "hash")
    if method == "lists":
        for name in ("test", "val"):
            if object_id in set(split.get(name, [])):
                return name
        return "train"
    if method == "hash":
        u = _hash_unit(object_id)
        test, val = float(split.get("test", 0.1)), float(split.get("val", 0.1))
        return "test" if u < test else "val" if u < test + val else "train"
    raise ManifestError(f"unknown split method {method!r} (hash, lists or files)")


def load_manifest(path: str | Path) -> Manifest:
    """Read a TOML manifest (tomllib: a safe parser, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - {"name", "description", "sources", "split", "params"})
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key(s) {unknown}")
    if not data.get("sources"):
        raise ManifestError(f"{path}: no [[sources]]")
    m = Manifest(name=str(data.get("name", path.stem)), sources=list(data["sources"]),
                 params=dict(data.get("params", {})), description=str(data.get("description", "")),
                 base_dir=path.parent.resolve(), path=path)
    if "split" in data:
        m.split = dict(data["split"])
    m.config()  # fail early on bad parameters
    for name in ("val", "test"):
        if m.split.get("method") == "lists" and not isinstance(m.split.get(name, []), list):
            raise ManifestError(f"{path}: split.{name} must be a list of object ids with method = 'lists'")
    return m


def folder_manifest(meshes: str | Path, name: str | None = None) -> Manifest:
    """A plain folder of meshes (one subfolder per category) needs no manifest file: this is the implied one."""
    root = Path(meshes).expanduser().resolve()
    return Manifest(name=name or root.name, sources=[{"type": "folder", "root": str(root)}], base_dir=root)
