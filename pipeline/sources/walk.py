"""Walking a dataset's folders: what the folder, step_folder, ShapeNet and IM-NET sources share (so no source
imports another for it)."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from pathlib import Path

from pipeline.sources import ObjectSpec, make_object_id


def resolve_root(root: str, manifest_dir: Path) -> Path:
    """A manifest's root: `~` expanded, relative paths taken from the manifest's folder."""
    path = Path(root).expanduser()
    return path if path.is_absolute() else (manifest_dir / path).resolve()


def walk_categories(root: Path, suffixes: Collection[str], wanted: set[str], extras: str = "") -> list[ObjectSpec]:
    """Files with one of `suffixes` under root/<category>/**, as objects `<category>-<relative path>`.

    Category names are compared and stored in Unicode NFC, so a folder named on macOS (decomposed) is the
    category a manifest or a Linux copy spells."""
    wanted = {unicodedata.normalize("NFC", w) for w in wanted}
    specs = []
    for cat_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        category = unicodedata.normalize("NFC", cat_dir.name)
        if wanted and category not in wanted:
            continue
        for path in sorted(cat_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in suffixes:
                rel = path.relative_to(cat_dir).with_suffix("")
                specs.append(ObjectSpec(make_object_id(category, *rel.parts), category, str(path), extras))
    return specs
