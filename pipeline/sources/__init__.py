"""Where objects come from: each source type turns a manifest entry into ObjectSpecs (id, category, mesh path)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a source lists it, before a split is assigned."""

    object_id: str
    category: str
    source: str


class SourceError(ValueError):
    """A manifest source that cannot be read (missing root, bad pattern, failed download)."""


_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def make_object_id(*parts: str) -> str:
    """A file-name-safe object id from its parts (category, relative path...), joined by '-'."""
    return "-".join(_ID_BAD.sub("_", p).strip("_") for p in parts if p)


def list_objects(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """Dispatch one manifest [[sources]] table to its source type."""
    kind = source.get("type")
    if kind == "folder":
        from pipeline.sources.folder import list_folder

        return list_folder(source, manifest_dir)
    if kind == "pypi_wheel":
        from pipeline.sources.pypi_wheel import list_wheel

        return list_wheel(source)
    raise SourceError(f"unknown source type {kind!r} (known: folder, pypi_wheel)")
