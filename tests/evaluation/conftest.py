"""A tiny real store for the eval tests: two real parts in the test split (one arm link, one gripper part, so the
per-category table has two columns), two in train and one in val (so `aps train` can leave a checkpoint);
4 views of 137 px, 20k reference points per test object."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def eval_store(tmp_path_factory, robosuite_meshes) -> Path:
    from pipeline.manifest import Manifest
    from pipeline.runner import run_preprocess

    root = tmp_path_factory.mktemp("eval_meshes")
    ids = []
    # test: iiwa link_6, panda hand; train: jaco shoulder, robotiq knuckle; val: iiwa link_7
    for category, index in (("arm_link", 1), ("gripper_part", 1), ("arm_link", 0), ("gripper_part", 0),
                            ("arm_link", 2)):
        path = robosuite_meshes[category][index]
        (root / category).mkdir(exist_ok=True)
        shutil.copy(path, root / category / f"{path.parent.parent.name}_{path.name}")
        ids.append(f"{category}-{path.parent.parent.name}_{path.stem}")
    manifest = Manifest(
        name="eval-fixture", sources=[{"type": "folder", "root": str(root)}],
        split={"method": "lists", "val": ids[4:], "test": ids[:2]},
        params={"views": {"n_views": 4, "image_size": 137, "up_axis": "z"}, "n_reference": 20000},
        base_dir=root)
    store = tmp_path_factory.mktemp("eval_stores") / "eval-fixture"
    summary = run_preprocess(manifest, store, scheduler="serial")
    assert summary.done == 5 and not summary.failed, summary.line()
    return store


def preprocessed_sphere(mktemp, subdivisions: int, n_reference: int) -> tuple[Path, Path]:
    """(store, mesh file) of one test object `ball-sphere`: an icosphere of radius 3 (normalised to radius ~0.5 in
    the unit cube) with 2 views of 64 px, preprocessed serially into folders from `mktemp(name)`; a shape whose
    metrics are known by formula."""
    import trimesh

    from pipeline.manifest import folder_manifest
    from pipeline.runner import run_preprocess

    root = mktemp("sphere_meshes")
    (root / "ball").mkdir()
    mesh_file = root / "ball" / "sphere.stl"
    trimesh.creation.icosphere(subdivisions=subdivisions, radius=3.0).export(mesh_file)
    manifest = folder_manifest(root)
    manifest.split = {"method": "lists", "test": ["ball-sphere"]}
    manifest.params = {"views": {"n_views": 2, "image_size": 64}, "n_reference": n_reference}
    path = mktemp("sphere_store") / "store"
    assert run_preprocess(manifest, path, scheduler="serial").done == 1
    return path, mesh_file


@pytest.fixture(scope="module")
def part(eval_store):
    """(normalised vertices, faces, reference surface points and normals) of the arm link of the fixture."""
    from pipeline.schema import open_store
    from pipeline.stages.load import load_mesh

    store = open_store(eval_store)
    oid = store.split("test")[0]
    ref = store.load(oid, ["scale", "center", "ref_surface_points", "ref_surface_normals"])
    v, f = load_mesh(store.info(oid)["source"])
    return (v - ref["center"]) / float(ref["scale"]), f, ref["ref_surface_points"], ref["ref_surface_normals"]
