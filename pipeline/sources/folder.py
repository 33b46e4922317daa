"""A plain folder of meshes with one subfolder per category: what a user points the stage at first."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pipeline.sources import TEXT, TEXTS, ObjectSpec, SourceError, make_object_id, needed, suffix_colliding_ids
from pipeline.stages.load import MESH_SUFFIXES

SOURCE_KEYS = {"folder": {"root": needed(TEXT, "the folder holding one subfolder per category"),
                          "categories": TEXTS}}


def resolve_root(root: str, manifest_dir: Path) -> Path:
    path = Path(root).expanduser()
    return path if path.is_absolute() else (manifest_dir / path).resolve()


def list_folder(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """[[sources]] type = "folder": root, categories (optional). root/<category>/**/<mesh> -> objects
    `<category>-<relative path without suffix>` (`_<suffix>` appended where two files differ only by it).

    Mesh files and CAD files (STEP/IGES, tessellated at step_folder's default tolerance) are taken; files with
    other suffixes (.mtl, textures) are ignored; files directly in root have no category and are refused, so a
    mistake in the folder structure is not silently mislabelled.
    """
    from pipeline.sources import encode_extras
    from pipeline.sources.step import CAD_SUFFIXES, DEFAULT_ANGULAR_DEG, DEFAULT_TOLERANCE

    root = resolve_root(source["root"], manifest_dir)
    if not root.is_dir():
        raise SourceError(f"{root}: mesh folder not found")
    wanted = set(source.get("categories", []))
    suffixes = set(MESH_SUFFIXES) | set(CAD_SUFFIXES)
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    if loose:
        raise SourceError(f"{root}: meshes must sit in one subfolder per category; found {loose[:3]} at the top")
    cad = encode_extras({"tessellation": {"tolerance": DEFAULT_TOLERANCE, "angular_deg": DEFAULT_ANGULAR_DEG}})
    specs = suffix_colliding_ids(walk_categories(root, MESH_SUFFIXES, wanted)
                                 + walk_categories(root, CAD_SUFFIXES, wanted, cad))
    if not specs:
        raise SourceError(f"{root}: no mesh or CAD files ({', '.join(sorted(suffixes))}) in its category subfolders")
    return specs


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
