"""The CPU rest of `aps eval` (everything but the network's queries) made faster without changing a value: each fast
path against the plain one it replaced, on real geometry (the arm link of tests/evaluation/conftest.py's store, its
reference points and the true occupancy of its mesh). Speeds: benchmarks/bench_eval.py --levers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial import cKDTree

from evaluation import metrics
from inference import extract_mesh as em
from pipeline.stages.distances import winding_number


@pytest.fixture(scope="module")
def predicted(part):
    """A 64^3 marching-cubes mesh of the part's true occupancy, a little off the truth (scaled and shifted), as a
    prediction is: vertices (V, 3) float32, faces (F, 3) int64."""
    v, f, _, _ = part
    mesh = em.extract_dense(lambda p: np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32), 64)
    return (mesh.vertices * 1.02 + 0.003).astype(np.float32), mesh.faces


def test_sample_mesh_draws_trimesh_samples_bit_for_bit(predicted):
    """sample_mesh computes only the drawn faces' vectors and normals: the points and normals of
    trimesh.sample.sample_surface and trimesh's face normals, identical (==), for several seeds."""
    import trimesh

    vertices, faces = predicted
    for seed in (0, 3):
        mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), faces, process=False)
        points, face_index = trimesh.sample.sample_surface(mesh, 50_000, seed=seed)
        normals = metrics._unit(mesh.face_normals[face_index]).astype(np.float32)
        fast_points, fast_normals = metrics.sample_mesh(vertices, faces, 50_000, seed)
        assert np.array_equal(fast_points, points.astype(np.float32))
        assert np.array_equal(fast_normals, normals)


def test_sliding_midpoint_trees_find_the_plain_trees_neighbours(part, predicted):
    """The metrics' KD-trees (sliding midpoint, boxes not shrunk) give the distances and neighbour indices of
    scipy's default tree queried in sample order, both ways, on 100k samples of a predicted mesh against the
    reference points: Chamfer-L1/-L2, normal consistency and F-scores are identical."""
    _, _, ref, _ = part
    pred, _ = metrics.sample_mesh(*predicted, 100_000, 0)
    nn = metrics._Nearest.between(pred, ref, workers=1)
    d_pr, i_pr = cKDTree(ref).query(pred)
    d_rp, i_rp = cKDTree(pred).query(ref)
    assert np.array_equal(nn.pred_to_ref, d_pr) and np.array_equal(nn.pred_to_ref_index, i_pr)
    assert np.array_equal(nn.ref_to_pred, d_rp) and np.array_equal(nn.ref_to_pred_index, i_rp)


def _plain_sharpness(points, normals, eps=metrics.EDGE_EPS):
    """Paper eq. 13 as first written: scipy's default tree, the minimum per point with np.minimum.at."""
    points = np.asarray(points, np.float64)
    normals = np.asarray(normals, np.float64)
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    sigma = np.ones(len(points))
    pairs = cKDTree(points).query_pairs(eps, output_type="ndarray")
    dots = np.abs(np.einsum("ij,ij->i", normals[pairs[:, 0]], normals[pairs[:, 1]]))
    np.minimum.at(sigma, pairs[:, 0], dots)
    np.minimum.at(sigma, pairs[:, 1], dots)
    return sigma


def test_edge_points_are_the_plain_sharpness_below_the_threshold(part, predicted):
    """edge_points marks the points of the pairs below the threshold instead of taking each point's minimum: the
    same masks as sigma < threshold with the plain tree and np.minimum.at, on the reference points (a CAD part:
    it has edges) and on samples of a predicted mesh, at the paper's threshold and at others."""
    _, _, ref, ref_normals = part
    pred, pred_normals = metrics.sample_mesh(*predicted, 20_000, 0)
    for points, normals in ((ref, ref_normals), (pred, pred_normals)):
        sigma = _plain_sharpness(points, normals)
        assert np.array_equal(metrics.sharpness(points, normals), sigma)
        for threshold in (metrics.EDGE_SHARPNESS, 0.5, 1.0, 1.5):
            assert np.array_equal(metrics.edge_points(points, normals, threshold=threshold), sigma < threshold)
    assert 0 < np.count_nonzero(metrics.edge_points(ref, ref_normals)) < len(ref)


# ---- coarse-to-fine as first written: every closure round over the whole grid, helpers built with np.pad ----
def _plain_crossing_cells(inside):
    any_, all_ = inside, inside
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        any_, all_ = any_[tuple(lo)] | any_[tuple(hi)], all_[tuple(lo)] & all_[tuple(hi)]
    return any_ & ~all_


def _plain_cell_corners(cells):
    points = cells
    for axis in range(3):
        before, after = [(0, 0)] * 3, [(0, 0)] * 3
        before[axis], after[axis] = (1, 0), (0, 1)
        points = np.pad(points, before) | np.pad(points, after)
    return points


def _plain_coarse_to_fine(field, resolution, coarse, threshold=em.THRESHOLD):
    """The queries (in order), the field's answers and the final grid of values of the plain coarse-to-fine
    extraction."""
    asked, answers = [], []

    def evaluate(values, known, need, n):
        flat = np.flatnonzero(need & ~known)
        if len(flat):
            points = em.grid_points(n, np.stack(np.unravel_index(flat, need.shape), axis=1))
            asked.append(points)
            answers.append(field(points))
            np.put(values, flat, answers[-1])
            np.put(known, flat, True)
        return len(flat)

    def crossing_corners(values):
        inside = np.pad(values > threshold, 1)
        return _plain_cell_corners(_plain_crossing_cells(inside))[1:-1, 1:-1, 1:-1]

    n = coarse
    values = np.zeros((n + 1,) * 3, np.float32)
    known = np.zeros(values.shape, bool)
    evaluate(values, known, np.ones_like(known), n)
    while True:
        while evaluate(values, known, crossing_corners(values), n):
            pass
        if n == resolution:
            return np.concatenate(asked), np.concatenate(answers), values
        crossing = _plain_crossing_cells(np.pad(values > threshold, 1))[1:-1, 1:-1, 1:-1]
        values, known, n = em._upsample_values(values), em._upsample_known(known), 2 * n
        evaluate(values, known, _plain_cell_corners(crossing.repeat(2, 0).repeat(2, 1).repeat(2, 2)), n)


def _replaying(points: np.ndarray, answers: np.ndarray):
    """A field that gives `answers` to `points` asked in the same order, and fails on any other question."""
    at = [0]

    def replay(asked):
        start, at[0] = at[0], at[0] + len(asked)
        assert np.array_equal(asked, points[start:at[0]]), f"a different point asked at query {start}"
        return answers[start:at[0]]

    return replay, at


def test_coarse_to_fine_asks_the_plain_extractions_queries_and_makes_its_mesh(part, caplog):
    """Closure rounds after a level's first look only around the points the previous round measured, and a
    subdivision's points come straight from the coarse cells: the field is asked the same points in the same order
    as by the plain extraction (every round over the whole grid), and the mesh is the same (==). On the part's
    true occupancy and on it with a ripple thinner than the coarse cells, which makes several closure rounds a
    level (the rounds after the first are where the two differ)."""
    v, f, _, _ = part

    def occupancy(p):
        return np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32)

    def rippled(p):
        ripple = 0.6 * np.sin(60 * p[:, 0]) * np.sin(60 * p[:, 1]) * np.sin(60 * p[:, 2])
        return np.clip(occupancy(p) + ripple, 0.0, 1.0).astype(np.float32)

    rounds = {}
    for field, resolution, coarse in ((occupancy, 64, 8), (rippled, 64, 8)):
        plain_points, plain_answers, plain_values = _plain_coarse_to_fine(field, resolution, coarse)
        replay, at = _replaying(plain_points, plain_answers)  # each point is asked of the real field once
        with caplog.at_level(logging.DEBUG, logger="inference.extract_mesh"):
            caplog.clear()
            fast = em.extract_coarse_to_fine(replay, resolution, coarse)
        assert at[0] == len(plain_points) == fast.n_queries
        plain = em._marching_cubes(plain_values, resolution, em.THRESHOLD)
        assert np.array_equal(fast.vertices, plain[0]) and np.array_equal(fast.faces, plain[1])
        rounds[field] = max(int(r.getMessage().split(": ")[1].split(" closure")[0]) for r in caplog.records
                            if "closure rounds" in r.getMessage())
    assert rounds[rippled] >= 2  # rounds after a level's first ran: the part that looks around the changed points


def _plain_marching_cubes(values, resolution):
    """The box of the surface as first cut: from a padded copy of the whole grid."""
    from skimage.measure import marching_cubes

    padded = np.pad(values, 1, constant_values=0.0)
    lo, hi = em._bounds(padded >= em.THRESHOLD)
    lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, np.array(padded.shape) - 1)
    box = padded[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    verts, faces, _, _ = marching_cubes(box, level=em.THRESHOLD, gradient_direction="ascent", allow_degenerate=False)
    verts = (verts.astype(np.float64) + (lo - 1.0)) * em.grid_spacing(resolution) - em.BOX_HALF
    return verts.astype(np.float32), faces.astype(np.int64)


def test_marching_cubes_box_filled_from_the_grid_is_the_one_cut_from_a_padded_copy(part):
    """_marching_cubes fills the box of the surface straight from the grid instead of cutting it from a padded
    copy of the whole grid: the same vertices and faces (==), also where the inside reaches the grid's faces (a
    field inside at the border, whose mesh the padding closes)."""
    v, f, _, _ = part
    resolution = 48
    axis = (np.arange(resolution + 1) * em.grid_spacing(resolution) - em.BOX_HALF).astype(np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    part_values = np.clip(winding_number(v, f, grid), 0.0, 1.0).astype(np.float32)
    big_ball = np.clip(0.5 + 0.62 - np.linalg.norm(grid + [0.1, 0.0, 0.0], axis=1), 0.0, 1.0).astype(np.float32)
    for values in (part_values, big_ball):
        values = values.reshape((resolution + 1,) * 3)
        plain_v, plain_f = _plain_marching_cubes(values, resolution)
        fast_v, fast_f = em._marching_cubes(values, resolution, em.THRESHOLD)
        assert np.array_equal(fast_f, plain_f) and np.array_equal(fast_v, plain_v)
    assert big_ball.reshape((resolution + 1,) * 3)[0].max() > em.THRESHOLD  # inside at the grid's face
