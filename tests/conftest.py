"""Small real fixtures: robot-arm and gripper meshes from the robosuite wheel, and a tiny preprocessed store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ASSETS = "robosuite/models/assets"
# real CAD parts with known traits: watertight links, a link built from overlapping shells, thin gripper parts
REAL_MESHES = {
    "arm_link": [f"{ASSETS}/robots/jaco/meshes/shoulder.stl",  # watertight
                 f"{ASSETS}/robots/iiwa/meshes/link_6.stl",  # watertight
                 f"{ASSETS}/robots/iiwa/meshes/link_7.stl",  # watertight, 13 overlapping shells
                 f"{ASSETS}/robots/ur5e/meshes/forearm.stl"],  # open (not watertight)
    "gripper_part": [f"{ASSETS}/grippers/meshes/robotiq_85_gripper/robotiq_arg2f_85_outer_knuckle.stl",
                     f"{ASSETS}/grippers/meshes/panda_gripper/hand.stl",
                     f"{ASSETS}/grippers/meshes/xarm7_gripper/left_finger.stl",  # thin
                     f"{ASSETS}/grippers/meshes/rethink_gripper/half_round_tip.stl"],  # slivers 1e-7 x 1
}


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """A factory of fresh folders for module-scoped fixtures, deleted when the module's tests end.

    A trained run folder is ~130 MB (two ResNet-18 checkpoints); kept until the session ends, as
    `tmp_path_factory.mktemp` keeps them, the suite would hold ~11 GB of them on a CI disk.
    """
    made: list[Path] = []

    def make(name: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def robosuite_meshes() -> dict[str, list[Path]]:
    """category -> real mesh paths, fetched from PyPI once and cached (pipeline.sources.pypi_wheel)."""
    from pipeline.sources.pypi_wheel import extract_members, fetch_wheel

    wheel = fetch_wheel("robosuite", "1.5.2")
    root, _ = extract_members(wheel, [m for ms in REAL_MESHES.values() for m in ms], [])
    return {cat: [root / m for m in ms] for cat, ms in REAL_MESHES.items()}


@pytest.fixture(scope="session")
def mesh_folder(tmp_path_factory, robosuite_meshes) -> Path:
    """A plain folder of real meshes, one subfolder per category (as a user would have them)."""
    root = tmp_path_factory.mktemp("meshes")
    for cat, paths in robosuite_meshes.items():
        (root / cat).mkdir()
        for p in paths:
            shutil.copy(p, root / cat / part_name(p))
    return root


def part_name(path: Path) -> str:
    """A unique file name for a robosuite part: its robot or gripper folder plus its stem."""
    owner = path.parent.name if path.parent.name != "meshes" else path.parent.parent.name
    return f"{owner}_{path.name}"


def load_normalised(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.stages.load import load_mesh
    from pipeline.stages.normalize import normalize

    v, f = load_mesh(path)
    vn, _, _ = normalize(v, f)
    return vn, f


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, robosuite_meshes) -> Path:
    """A tiny real preprocessed store: 6 real parts (4 train, 1 val, 1 test), 6 views of 137 px, 20k refs."""
    from pipeline.manifest import Manifest
    from pipeline.runner import run_preprocess

    root = tmp_path_factory.mktemp("demo_meshes")
    for cat, paths in robosuite_meshes.items():
        (root / cat).mkdir()
        for p in paths[:3]:
            shutil.copy(p, root / cat / part_name(p))
    ids = sorted(f"{cat}-{Path(part_name(p)).stem}" for cat, ps in robosuite_meshes.items() for p in ps[:3])
    manifest = Manifest(
        name="demo-fixture", sources=[{"type": "folder", "root": str(root)}],
        split={"method": "lists", "val": [ids[1]], "test": [ids[0]]},
        params={"views": {"n_views": 6, "image_size": 137, "up_axis": "z"}, "n_reference": 20000},
        base_dir=root)
    store = tmp_path_factory.mktemp("stores") / "demo-fixture"
    summary = run_preprocess(manifest, store, scheduler="serial")
    assert summary.done == 6 and not summary.failed
    return store


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, headless, driven by playwright: one browser for the session (pages are cheap)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: the page tests need Debian's chromium (scripts/setup.sh installs it)")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable)
        yield browser
        browser.close()
