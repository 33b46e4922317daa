"""The eval's speed levers change no value: each is checked against what it replaced, on real geometry (the
reference data of a real part in the store of tests/evaluation/conftest.py and the true occupancy of its mesh)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from evaluation import metrics
from inference.extract_mesh import BOX_HALF, THRESHOLD, extract_coarse_to_fine, extract_dense, grid_spacing
from pipeline.schema import open_store
from pipeline.stages.distances import winding_number


def test_nearest_neighbours_are_those_of_plain_kdtree_queries(part):
    """metrics asks its KD-trees in leaf order with leaves of 32: the same distances and neighbours as a plain
    cKDTree query in sample order, hence the same Chamfer-L1, normal consistency and F-score, bit for bit."""
    v, f, ref, ref_normals = part
    # a prediction a little off the truth, so that neighbours are not trivially the nearest samples
    pred, pred_normals = metrics.sample_mesh(v * 1.02 + 0.003, f, 20_000, seed=1)
    d_pr, i_pr = cKDTree(ref).query(pred)
    d_rp, i_rp = cKDTree(pred).query(ref)
    assert metrics.chamfer_l1(pred, ref, workers=1) == 0.5 * (float(d_pr.mean()) + float(d_rp.mean()))
    precision, recall = float((d_pr <= 0.01).mean()), float((d_rp <= 0.01).mean())
    assert metrics.fscore(pred, ref)[1:] == (precision, recall)
    unit = lambda n: n / np.linalg.norm(n, axis=1, keepdims=True)  # noqa: E731
    pn, rn = unit(pred_normals), unit(ref_normals)
    consistency = 0.5 * (float(np.abs(np.einsum("ij,ij->i", pn, rn[i_pr])).mean())
                         + float(np.abs(np.einsum("ij,ij->i", rn, pn[i_rp])).mean()))
    assert metrics.normal_consistency(pred, pred_normals, ref, ref_normals) == pytest.approx(consistency, abs=1e-12)


def test_marching_cubes_over_the_surface_box_gives_the_whole_grids_mesh(part):
    """Marching cubes runs over the box of the surface only: the faces of the whole padded grid, vertices to
    float32 rounding; coarse-to-fine still gives the dense grid's mesh."""
    from skimage.measure import marching_cubes

    v, f, _, _ = part
    resolution = 64
    field = lambda p: np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32)  # noqa: E731
    dense = extract_dense(field, resolution)
    axis = (np.arange(resolution + 1) * grid_spacing(resolution) - BOX_HALF).astype(np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    values = field(grid).reshape((resolution + 1,) * 3)
    whole_v, whole_f, _, _ = marching_cubes(np.pad(values, 1), level=THRESHOLD, gradient_direction="ascent",
                                            allow_degenerate=False)
    whole_v = (whole_v - 1.0) * grid_spacing(resolution) - BOX_HALF
    assert np.array_equal(dense.faces, whole_f)
    assert np.abs(dense.vertices - whole_v).max() < 1e-6
    fine = extract_coarse_to_fine(field, resolution, coarse=16)
    assert np.array_equal(fine.faces, dense.faces) and np.array_equal(fine.vertices, dense.vertices)
    assert 0 < dense.marching_seconds < dense.seconds and 0 < dense.query_seconds < dense.seconds


def test_silhouettes_in_one_batch_bounded_by_the_box_are_the_hull_renders(part, eval_store):
    """pipeline.cameras.silhouettes casts every view at once through the pixels of the mesh's bounding box, without
    the convex hull: the same masks as rendering each view through its hull's pixels, on a marching-cubes mesh."""
    from pipeline.cameras import MeshRenderer, silhouettes

    v, f, _, _ = part
    field = lambda p: np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32)  # noqa: E731
    mesh = extract_dense(field, 64)
    store = open_store(eval_store)
    oid = store.split("test")[0]
    K, Rt = store.read(oid, "K"), store.read(oid, "Rt")
    hull = MeshRenderer(mesh.vertices, mesh.faces)
    expected = np.stack([hull.render(k, rt, 137, 137)[..., 3] > 0 for k, rt in zip(K, Rt, strict=True)])
    masks = silhouettes(mesh.vertices, mesh.faces, K, Rt, 137, 137)
    assert masks.shape == (len(K), 137, 137) and 0.02 < masks.mean() < 0.5
    assert np.array_equal(masks, expected)
    assert len(MeshRenderer(mesh.vertices, mesh.faces, outline="box").outline) == 8
