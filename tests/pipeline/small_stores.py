"""The small real stores of the store tests: a few robosuite parts, 2 views of each, 2000 reference points for
the one test object, preprocessed serially. Copy one per test (`copy_store`): a test damages its own copy."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.manifest import Manifest, folder_manifest
from pipeline.runner import run_preprocess
from tests.conftest import part_name

TEST_ID = "arm_link-iiwa_link_6"


def small_manifest(folder: Path, test: tuple[str, ...] = (TEST_ID,)) -> Manifest:
    m = folder_manifest(folder)
    m.params = {"views": {"n_views": 2}, "n_reference": 2000}
    m.split = {"method": "lists", "val": [], "test": list(test)}
    return m


def part_folder(root: Path, robosuite_meshes: dict[str, list[Path]], picks: dict[str, slice]) -> Path:
    """root/<category>/<part> for the parts picks[category] selects of each category."""
    for cat, paths in robosuite_meshes.items():
        (root / cat).mkdir()
        for p in paths[picks[cat]]:
            shutil.copy(p, root / cat / part_name(p))
    return root


def preprocessed(parts: Path, store: Path, n_objects: int) -> Path:
    summary = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert summary.done == n_objects and not summary.failed
    return store


def copy_store(pristine: Path, folder: Path) -> Path:
    copy = folder / "store"
    shutil.copytree(pristine, copy)
    return copy
