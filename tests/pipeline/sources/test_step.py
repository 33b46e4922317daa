"""STEP/IGES parts built with gmsh's OpenCASCADE kernel, read back through the step_folder source and
tessellated at a documented tolerance (pipeline/sources/step.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import schema
from pipeline.runner import run_preprocess
from pipeline.sources.step import load_cad
from pipeline.stages.load import MeshError
from tests.fixtures.shapenet_layouts import FLANGE
from tests.pipeline.sources.conftest import manifest_with_paths


def rim_deflection(vertices_m: np.ndarray, faces: np.ndarray) -> float:
    """Largest distance (mm) between the flange's outer cylinder (r = 50 mm, exact) and the triangles on it."""
    v = vertices_m * 1000.0
    r = np.hypot(v[:, 0], v[:, 1])
    R = FLANGE["outer_radius"]
    on_rim = (np.abs(r[faces] - R) < 1e-3).all(axis=1)
    tri = v[faces[on_rim]]
    w = np.random.default_rng(0).dirichlet([1, 1, 1], size=(len(tri), 64))
    points = np.einsum("tsk,tkd->tsd", w, tri)
    return float((R - np.hypot(points[..., 0], points[..., 1])).max())


@pytest.mark.parametrize("part, tolerance", [("flange", 1e-3), ("flange", 3e-4), ("flange_iges", 1e-3)])
def test_tessellation_tolerance_holds_on_exact_geometry(cad_parts, part, tolerance):
    vertices, faces = load_cad(cad_parts[part], tolerance=tolerance, require_closed=False)
    longest = 2 * FLANGE["outer_radius"]  # mm: the flange's longest bounding-box side
    assert np.allclose(np.ptp(vertices, axis=0) * 1000, [longest, longest, FLANGE["thickness"] + FLANGE["hub_height"]],
                       atol=0.05)
    deflection = rim_deflection(vertices, faces) / longest
    # within the stated tolerance, and not far below it: the tolerance is what sets it (units understood)
    assert 0.3 * tolerance <= deflection <= tolerance, deflection


def test_step_solids_come_out_watertight_and_unsewn_iges_is_refused(cad_parts):
    import trimesh

    step_v, step_f = load_cad(cad_parts["flange"])
    for v, f in ((step_v, step_f), load_cad(cad_parts["bracket"])):
        assert trimesh.Trimesh(v, f, process=False).is_watertight
    # gmsh writes IGES as trimmed surfaces: same geometry, but not a closed solid, so it is refused by default
    iges_v, _ = load_cad(cad_parts["flange_iges"], require_closed=False)
    assert np.allclose(np.ptp(step_v, axis=0), np.ptp(iges_v, axis=0), atol=1e-4)
    with pytest.raises(MeshError, match="not sewn into a closed solid"):
        load_cad(cad_parts["flange_iges"])
    # volume of the exact flange: disk + hub - bore - bolt holes (mm^3); tessellation leaves it a little under
    f = FLANGE
    exact = np.pi * (f["outer_radius"] ** 2 * f["thickness"] + f["hub_radius"] ** 2 * f["hub_height"]
                     - f["bore"] ** 2 * (f["thickness"] + f["hub_height"])
                     - f["bolts"] * f["bolt_radius"] ** 2 * f["thickness"])
    volume = trimesh.Trimesh(step_v * 1000, step_f).volume
    assert exact * 0.995 < volume <= exact * 1.0001


def test_step_folder_manifest_end_to_end(cad_parts, tmp_path):
    root = cad_parts["flange"].parents[1]
    m = manifest_with_paths("step-parts.toml", {"/path/to/cad_parts": str(root)}, tmp_path)
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "garbage.step").write_text("ISO-10303-21;\nthis is not a step file\n")
    m.params = {"views": {"n_views": 3, "image_size": 137, "up_axis": "z"}, "n_reference": 2000}
    m.split = {"method": "lists", "test": ["flange-flange_dn50"]}
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 2 and len(summary.failed) == 2
    errors = {o.job.object_id: o.error for o in summary.failed}
    assert "OpenCASCADE found no surface" in errors["broken-garbage"]
    assert "not sewn into a closed solid" in errors["flange-flange_dn50_iges"]
    store = schema.open_store(tmp_path / "store")
    assert store.object_ids == ["bracket-l_bracket", "flange-flange_dn50"]
    flange = store.load("flange-flange_dn50")
    assert flange["scale"] == pytest.approx(0.1, abs=1e-4)  # metres: the longest side, 100 mm
    inside = flange["inside"][schema.N_SURFACE:]  # uniform points: the solid fills part of the cube
    assert 0.02 < inside.mean() < 0.5
    box_volume = (1 + store.params["reference_padding"]) ** 3  # the padded reference box, edge 1.1
    assert flange["ref_uniform_inside"].mean() * box_volume == pytest.approx(inside.mean(), abs=0.1)


def test_missing_and_non_cad_files(tmp_path):
    with pytest.raises(MeshError, match="no such file"):
        load_cad(tmp_path / "nothing.step")
    (tmp_path / "part.stl").write_text("solid x\nendsolid x\n")
    with pytest.raises(MeshError, match="not a CAD file"):
        load_cad(tmp_path / "part.stl")


def test_a_plain_mesh_folder_takes_cad_files_too(cad_parts, robosuite_meshes, tmp_path):
    """`aps preprocess --meshes DIR`: STEP parts beside STL meshes, each category a subfolder."""
    import shutil

    from pipeline.manifest import folder_manifest
    from pipeline.sources import decode_extras

    root = tmp_path / "parts"
    (root / "flange").mkdir(parents=True)
    (root / "link").mkdir()
    shutil.copy(cad_parts["flange"], root / "flange" / "dn50.step")
    shutil.copy(robosuite_meshes["arm_link"][0], root / "link" / "link.stl")
    objects = folder_manifest(root).objects()
    by_id = {spec.object_id: spec for spec, _ in objects}
    assert set(by_id) == {"flange-dn50", "link-link"}
    assert decode_extras(by_id["flange-dn50"].extras)["tessellation"]["tolerance"] == 0.001
    assert by_id["link-link"].extras == ""
    m = folder_manifest(root)
    m.params = {"views": {"n_views": 3, "image_size": 64, "up_axis": "z"}, "reference_splits": []}
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 2 and not summary.failed
    assert schema.open_store(tmp_path / "store").load("flange-dn50")["scale"] == pytest.approx(0.1, abs=1e-4)
