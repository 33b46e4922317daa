"""A plain folder of meshes with one subfolder per category: what a user points the stage at first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.sources.keys import TEXT, TEXTS, needed
from pipeline.sources.spec import ObjectSpec, SourceError, encode_extras, suffix_colliding_ids
from pipeline.sources.step import CAD_SUFFIXES, DEFAULT_ANGULAR_DEG, DEFAULT_TOLERANCE
from pipeline.sources.walk import FolderWalk, resolve_root, walk_categories
from pipeline.stages.load import MESH_SUFFIXES

SOURCE_KEYS = {"folder": {"root": needed(TEXT, "the folder holding one subfolder per category"),
                          "categories": TEXTS}}


def list_folder(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """[[sources]] type = "folder": root, categories (optional). root/<category>/**/<mesh> -> objects
    `<category>-<relative path without suffix>` (`_<suffix>` appended where two files differ only by it).

    Mesh files and CAD files (STEP/IGES, tessellated at step_folder's default tolerance) are taken; files with
    other suffixes (.mtl, textures) are ignored; files directly in root have no category and are refused, so a
    mistake in the folder structure is not silently mislabelled.
    """
    root = resolve_root(source["root"], manifest_dir)
    if not root.is_dir():
        raise SourceError(f"{root}: mesh folder not found")
    wanted = set(source.get("categories", []))
    suffixes = set(MESH_SUFFIXES) | set(CAD_SUFFIXES)
    loose = FolderWalk(root).loose_files(suffixes)
    if loose:
        raise SourceError(f"{root}: meshes must sit in one subfolder per category; found {loose[:3]} at the top")
    cad = encode_extras({"tessellation": {"tolerance": DEFAULT_TOLERANCE, "angular_deg": DEFAULT_ANGULAR_DEG}})
    found = walk_categories(root, suffixes, wanted)  # one walk; meshes listed first, then CAD parts
    is_cad = [Path(s.source).suffix.lower() in CAD_SUFFIXES for s in found]
    specs = suffix_colliding_ids([s for s, c in zip(found, is_cad) if not c]
                                 + [replace(s, extras=cad) for s, c in zip(found, is_cad) if c])
    if not specs:
        raise SourceError(f"{root}: no mesh or CAD files ({', '.join(sorted(suffixes))}) in its category subfolders")
    return specs
