"""Dataset copies in their users' layouts, built once per session from real meshes (tests/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.shapenet_layouts import ShapeNetCopy, build_cad_parts, build_shapenet, write_split_files

AIRPLANE, BENCH, CHAIR = "02691156", "02828884", "03001627"
SMALL = {"views": {"n_views": 24, "image_size": 137, "up_axis": "y"}, "n_reference": 4000}


@pytest.fixture(scope="session")
def shapenet_copy(tmp_path_factory, robosuite_meshes) -> ShapeNetCopy:
    """v1 + v2 + R2N2 renderings + split files for the paper's 7 categories: 2 real parts for airplane and bench,
    1 for the others (9 models), and 3 broken airplanes. The categories are labels only (the parts are robot links
    and gripper parts)."""
    base = tmp_path_factory.mktemp("shapenet")
    arm, grip = robosuite_meshes["arm_link"], robosuite_meshes["gripper_part"]
    copy = build_shapenet(base, {AIRPLANE: arm[:2], BENCH: grip[:2], "02933112": [arm[2]], "02958343": [arm[3]],
                                 CHAIR: [grip[2]], "03211117": [arm[0]], "03636649": [grip[0]]})
    write_split_files(copy)
    return copy


@pytest.fixture(scope="session")
def cad_parts(tmp_path_factory) -> dict[str, Path]:
    """Real OpenCASCADE solids written by gmsh: flange (STEP and IGES) and L bracket (STEP)."""
    return build_cad_parts(tmp_path_factory.mktemp("cad"))


def manifest_with_paths(name: str, replacements: dict[str, str], tmp_path: Path):
    """A checked-in manifest with its placeholder paths set, exactly as a user edits it."""
    from pipeline.manifest import load_manifest

    text = (Path(__file__).parents[3] / "manifests" / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{name} has no {old}"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return load_manifest(path)
