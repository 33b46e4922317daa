"""IoU in OccNet's box: the reference uniform points fill the unit cube padded by 0.1 ([-0.55, 0.55]^3), so volume
a prediction puts outside the object's own box counts against it. Checked against closed-form answers on a real
preprocessed sphere, through `aps preprocess` and the eval loop; the old unpadded box gives other answers (noted
at each test) and fails them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from evaluation.config import EvalConfig
from evaluation.runner import evaluate_store, iou_box
from pipeline.schema import open_store
from tests.evaluation import fields
from tests.evaluation.conftest import preprocessed_sphere

N_REFERENCE = 100_000  # OccNet's count: the Monte-Carlo noise of an IoU is ~0.002 here


@pytest.fixture(scope="module")
def sphere_store(module_tmp):
    """A store holding one test object: an icosphere (20,480 faces) normalised to the unit cube, radius ~0.5."""
    path, mesh_file = preprocessed_sphere(module_tmp, subdivisions=5, n_reference=N_REFERENCE)
    store = open_store(path)
    o = store.load("ball-sphere", ["ref_uniform_points", "scale", "center"])
    mesh = trimesh.load(mesh_file)
    mesh.vertices = (mesh.vertices - o["center"]) / o["scale"]
    return store, mesh.volume, o["ref_uniform_points"]


def _iou(store, field, tmp_path) -> dict:
    config = EvalConfig(resolution=32, coarse=None, n_samples=5000, silhouette_views=1, pictures=False)
    (row,) = evaluate_store(store, lambda view: field, tmp_path, config, progress=False)
    return row


def test_reference_points_fill_the_padded_box(sphere_store):
    store, _, points = sphere_store
    assert store.params["reference_padding"] == 0.1
    assert points.shape == (N_REFERENCE, 3)
    assert 0.549 < np.abs(points).max() <= 0.55  # [-0.55, 0.55]^3, not the unit cube
    outside_unit_cube = (np.abs(points) > 0.5).any(axis=1).mean()
    assert outside_unit_cube == pytest.approx(1 - 1 / 1.1**3, abs=0.005)  # 24.9% of the box lies outside it


def test_larger_sphere_poking_out_of_the_unit_box(sphere_store, tmp_path):
    """Predicted: a ball of radius 0.54, which leaves the unit cube but not the padded box; it holds the true sphere,
    so IoU = V_true / V_ball. The unpadded box cuts 6 caps off the ball and gives 0.809."""
    store, true_volume, _ = sphere_store
    radius = 0.54
    expected = true_volume / (4 / 3 * math.pi * radius**3)
    row = _iou(store, fields.sphere(radius), tmp_path)
    assert row["iou"] == pytest.approx(expected, abs=0.008)  # 0.793; ~4 sigma of 100k points
    assert "[-0.55, 0.55]^3" in (tmp_path / "report.md").read_text()


def test_prediction_filling_the_whole_extraction_box(sphere_store, tmp_path):
    """Predicted: inside everywhere, the whole extraction box [-0.55, 0.55]^3. IoU = V_true / 1.1^3 = 0.393;
    the unpadded box gives V_true / 1 = 0.52."""
    store, true_volume, _ = sphere_store
    row = _iou(store, lambda p: np.ones(len(p), np.float32), tmp_path)
    assert row["iou"] == pytest.approx(true_volume / 1.1**3, abs=0.008)


def test_the_report_names_a_store_without_the_padding(sphere_store):
    store, _, _ = sphere_store
    assert iou_box(store) == "[-0.55, 0.55]^3, the unit cube padded by 0.1 (OccNet's box)"
    store.attrs["params"] = {k: v for k, v in store.params.items() if k != "reference_padding"}  # as pipeline-4
    try:
        assert "written before pipeline-5" in iou_box(store)
    finally:
        store.attrs["params"] = {**store.params, "reference_padding": 0.1}
