"""The eval loop end to end on a real preprocessed store (tests/evaluation/conftest.py), with the true field.

The predictor is replaced by the ground truth's own occupancy (winding number of the source mesh), which is
what a perfect network would output: every stage after the network (extraction, metrics, rendering, files,
report) runs for real and the answers are known (IoU ~ 1, small Chamfer).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import trimesh
import typer
from PIL import Image
from typer.testing import CliRunner

from evaluation.cli import evaluate
from evaluation.config import EvalConfig
from evaluation.report import FIRST_COLUMNS
from evaluation.runner import evaluate_store
from inference.extract_mesh import grid_spacing
from pipeline.schema import open_store
from pipeline.stages.distances import winding_number
from pipeline.stages.load import load_mesh


def true_field(store):
    """make_field whose field is the true occupancy of the object: clip(winding number, 0, 1)."""

    def make_field(view):
        ref = store.load(view.object_id, ["scale", "center"])
        v, f = load_mesh(store.info(view.object_id)["source"])
        v = (v - ref["center"]) / float(ref["scale"])
        return lambda p: np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32)

    return make_field


@pytest.fixture(scope="module")
def true_run(eval_store, module_tmp):
    store = open_store(eval_store)
    out = module_tmp("eval") / "truth"
    config = EvalConfig(resolution=64, coarse=16, formats=("ply", "obj"), original_units=True, n_samples=20_000,
                        silhouette_views=4)
    rows = evaluate_store(store, true_field(store), out, config, progress=False)
    return store, out, rows


def test_true_field_scores_near_perfect_and_writes_everything(true_run):
    store, out, rows = true_run
    test_ids = store.split("test")
    assert [r["object_id"] for r in rows] == test_ids
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0][:7]) == FIRST_COLUMNS and len(table) == 1 + len(test_ids)
    for row in rows:
        assert row["status"] == "ok"
        assert row["iou"] > 0.9
        assert row["chamfer_l1"] < grid_spacing(64)  # 64^3 grid: the mesh is within a spacing of the truth
        assert row["fscore"] > 0.8
        assert row["silhouette_iou"] > 0.85
        assert row["n_queries"] < 65**3


def test_faces_decimates_the_files_and_leaves_the_metrics_to_the_full_mesh(true_run, tmp_path):
    """--faces N: each mesh file at most N faces, with normals, in the same place; every metric is the full
    mesh's (the same rows as the run without it, but for the seconds)."""
    store, full_out, full_rows = true_run
    config = EvalConfig(resolution=64, coarse=16, formats=("ply", "obj"), original_units=True, n_samples=20_000,
                        silhouette_views=4, faces=300, pictures=False)
    rows = evaluate_store(store, true_field(store), tmp_path / "cut", config, progress=False)
    for row, full in zip(rows, full_rows, strict=True):
        for key in ("iou", "chamfer_l1", "fscore", "normal_consistency", "silhouette_iou", "n_faces"):
            assert row[key] == full[key], key
        assert full["n_faces"] > 300
        mesh = trimesh.load(tmp_path / "cut" / "meshes" / f"{row['object_id']}.ply", process=False)
        assert 100 < len(mesh.faces) <= 300 and "vertex_normals" in mesh._cache
        whole = trimesh.load(full_out / "meshes" / f"{row['object_id']}.ply", process=False)
        assert np.abs(mesh.bounds - whole.bounds).max() < 0.05  # the same shape, fewer faces
        assert len(trimesh.load(tmp_path / "cut" / "meshes_original_units" / f"{row['object_id']}.obj",
                                force="mesh", process=False).faces) <= 300


def test_meshes_are_in_the_normalised_frame_and_in_original_units(true_run):
    store, out, rows = true_run
    oid = rows[0]["object_id"]
    mesh = trimesh.load(out / "meshes" / f"{oid}.ply", force="mesh")
    assert (out / "meshes" / f"{oid}.obj").is_file()
    assert np.abs(mesh.vertices).max() < 0.5 + grid_spacing(64)  # the unit cube, longest side 1
    assert np.ptp(mesh.vertices, axis=0).max() == pytest.approx(1.0, abs=2 * grid_spacing(64))
    source, _ = load_mesh(store.info(oid)["source"])
    original = trimesh.load(out / "meshes_original_units" / f"{oid}.ply", force="mesh")
    scale = float(store.load(oid, ["scale"])["scale"])
    assert np.abs(original.bounds - np.stack([source.min(0), source.max(0)])).max() < 2 * grid_spacing(64) * scale


def test_pictures_and_report(true_run):
    _, out, rows = true_run
    oid = rows[0]["object_id"]
    picture = np.asarray(Image.open(out / "pictures" / f"{oid}.png"))
    tile = picture.shape[1] // 3
    assert picture.shape[0] == 4 * (tile + 18)  # four views, each three square tiles under a caption
    for row in np.split(picture, 4, axis=0):  # every view: its image, the prediction and the ground truth show
        assert all((t < 250).any() for t in np.split(row[18:], 3, axis=1))
    rows_differ = [not np.array_equal(a, b) for a, b in zip(np.split(picture, 4)[:-1], np.split(picture, 4)[1:])]
    assert all(rows_differ)  # four different cameras, not one view four times
    report = (out / "report.md").read_text()
    assert f"](pictures/{oid}.png)" in report and "DR-KFS" in report
    assert "ECD is **nan** for an object whose reference has no edge point" in report and "**1.732**" in report
    assert f"| [{oid}](pictures/{oid}.png) | {rows[0]['category']} |" in report  # the per-object table links it
    assert "| metric |" in (out / "table1.md").read_text() and (out / "table1.csv").is_file()


def test_failures_are_scored_and_reported_not_raised(eval_store, tmp_path):
    store = open_store(eval_store)
    config = EvalConfig(resolution=16, coarse=8, n_samples=2_000, silhouette_views=2)
    empty = evaluate_store(store, lambda view: (lambda p: np.zeros(len(p), np.float32)), tmp_path / "empty",
                           config, progress=False)
    assert empty[0]["status"].startswith("no_surface")
    assert empty[0]["chamfer_l1"] == pytest.approx(np.sqrt(3)) and empty[0]["fscore"] == 0.0
    assert empty[0]["iou"] == 0.0 and (tmp_path / "empty" / "pictures").is_dir()

    def broken(view):
        raise RuntimeError("decoder exploded")

    failed = evaluate_store(store, broken, tmp_path / "broken", config, progress=False)
    assert failed[0]["status"] == "error: decoder exploded"
    assert "decoder exploded" in (tmp_path / "broken" / "report.md").read_text()

    # --compare lays the runs side by side (Table 2 shape)
    app = typer.Typer()
    app.command()(evaluate)
    result = CliRunner().invoke(app, ["--compare", str(tmp_path / "empty"), str(tmp_path / "broken"),
                                      "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "cmp" / "compare.md").read_text().splitlines()
    assert lines[0].startswith("| variant | IoU") and lines[2].startswith("| empty |")
    assert lines[3].startswith("| broken |")
    # `aps compare` is that command on its own; `aps eval --compare` stays as its alias (users' scripts)
    from aps.cli import app as aps_app

    result = CliRunner().invoke(aps_app, ["compare", str(tmp_path / "empty"), str(tmp_path / "broken"),
                                          "--out", str(tmp_path / "cmp2")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp2" / "compare.md").read_text() == (tmp_path / "cmp" / "compare.md").read_text()


def test_object_selection_per_category_by_id_and_limit(demo_store):
    from collections import Counter

    from evaluation.runner import objects_to_evaluate
    from pipeline.schema import open_store

    store = open_store(demo_store)
    train = store.split("train")
    categories = Counter(store.info(o)["category"] for o in train)
    assert len(categories) == 2 and max(categories.values()) >= 2  # both kinds of part, one kind several times

    one_each = objects_to_evaluate(store, train, EvalConfig(split="train", per_category=1))
    assert Counter(store.info(o)["category"] for o in one_each) == {c: 1 for c in categories}
    assert one_each == [o for o in train if o in one_each]  # split order kept
    assert objects_to_evaluate(store, train, EvalConfig(split="train", per_category=1, limit=1)) == one_each[:1]
    assert objects_to_evaluate(store, train, EvalConfig(split="train", objects=(train[-1], train[0]))) == [train[0],
                                                                                                      train[-1]]
    with pytest.raises(ValueError, match="'nope' is not an object of split 'train'"):
        objects_to_evaluate(store, train, EvalConfig(split="train", objects=("nope",)))


def test_ground_truth_is_reloaded_with_the_loader_and_extras_preprocess_used(tmp_path):
    """A STEP part's ground truth: tessellated through pipeline.sources at the tolerance the store recorded (the
    old eval loader read it with trimesh and no tolerance at all)."""
    import pytest

    gmsh = pytest.importorskip("gmsh")
    from evaluation.render import load_source_mesh
    from pipeline.manifest import folder_manifest
    from pipeline.runner import run_preprocess
    from pipeline.schema import open_store
    from pipeline.sources import decode_extras

    part = tmp_path / "parts" / "flange" / "disc.step"
    part.parent.mkdir(parents=True)
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("disc")
        gmsh.model.occ.addCylinder(0, 0, 0, 0, 0, 10, 40)
        gmsh.model.occ.synchronize()
        gmsh.write(str(part))
    finally:
        gmsh.finalize()
    m = folder_manifest(tmp_path / "parts")
    m.params = {"views": {"n_views": 1}, "n_reference": 2000}
    m.split = {"method": "hash", "val": 0.0, "test": 0.0}
    assert run_preprocess(m, tmp_path / "store", scheduler="serial").done == 1
    store = open_store(tmp_path / "store")
    (oid,) = store.object_ids
    info = store.info(oid)
    assert decode_extras(info["extras"])["tessellation"]["tolerance"] > 0
    o = store.load(oid, ["points", "udf", "scale", "center"])
    v, f = load_source_mesh(info, float(o["scale"]), o["center"])
    from pipeline.sources.step import DEFAULT_ANGULAR_DEG, DEFAULT_TOLERANCE, load_cad
    from pipeline.stages.distances import udf

    pv, pf = load_cad(str(part), DEFAULT_TOLERANCE, DEFAULT_ANGULAR_DEG)  # what preprocess tessellated
    assert np.array_equal(f, pf) and np.allclose(v, (pv - o["center"]) / o["scale"], atol=1e-6)
    near = o["points"][: 2000]
    assert np.allclose(udf(v, f, near.astype(np.float64)), o["udf"][:2000], atol=2e-4)


def test_picture_views_spread_around_the_object():
    """The input view first, then the views farthest from those chosen: opposite, then the two sides."""
    from evaluation.object_eval import picture_views
    from pipeline.cameras import look_at_origin

    azimuths = np.radians(np.arange(0, 360, 15))
    eyes = np.stack([2 * np.cos(azimuths), 2 * np.sin(azimuths), np.full_like(azimuths, 0.8)], axis=1)
    Rt = np.stack([look_at_origin(eye, np.array([0.0, 0.0, 1.0])) for eye in eyes])
    chosen = picture_views(Rt, input_view=2)
    assert chosen[0] == 2 and len(set(chosen)) == 4
    got = sorted(round(float(np.degrees(azimuths[i])) - 30) % 360 for i in chosen)
    assert got == [0, 90, 180, 270]
