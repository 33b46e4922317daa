"""Metrics on shapes whose answers are known by hand (tolerances stated with their reason)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from evaluation import metrics


def sphere_points(radius: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points on a sphere (normalised Gaussians) and their radial unit normals."""
    d = np.random.default_rng(seed).normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return (radius * d).astype(np.float32), d.astype(np.float32)


def test_concentric_spheres_chamfer_and_fscore_by_hand():
    # Every point of one sphere is |r1 - r2| = 0.02 from the other sphere; the nearest *sample* is a little
    # farther (sample spacing on the sphere ~ sqrt(4 pi r^2 / n) / 2 = 0.0017 -> sqrt(0.02^2 + 0.0017^2)
    # = 0.02007), hence a tolerance of 0.0005.
    inner, n_inner = sphere_points(0.30, 100_000, 0)
    outer, n_outer = sphere_points(0.32, 100_000, 1)
    assert metrics.chamfer_l1(inner, outer) == pytest.approx(0.02, abs=5e-4)
    f, precision, recall = metrics.fscore(inner, outer, tau=0.01)  # 0.02 > tau: nothing is close enough
    assert (f, precision, recall) == (0.0, 0.0, 0.0)
    f, precision, recall = metrics.fscore(inner, outer, tau=0.03)  # 0.0201 < tau everywhere
    assert (f, precision, recall) == (1.0, 1.0, 1.0)
    # radial normals of nearest neighbours are nearly parallel: |n.n'| = cos(angle) >= cos(0.0017/0.3)
    assert metrics.normal_consistency(inner, n_inner, outer, n_outer) > 0.999


def test_chamfer_is_symmetric_mean_of_both_directions():
    a = np.zeros((1, 3), np.float32)
    b = np.array([[0.1, 0, 0], [0.3, 0, 0]], np.float32)
    # a -> b: 0.1; b -> a: (0.1 + 0.3) / 2 = 0.2; half the sum: 0.15
    assert metrics.chamfer_l1(a, b) == pytest.approx(0.15)
    assert metrics.chamfer_l1(b, a) == pytest.approx(0.15)
    # squared: a -> b 0.01; b -> a (0.01 + 0.09) / 2 = 0.05; half the sum 0.03 (IM-NET's CD would be 0.06)
    assert metrics.chamfer_l2(a, b) == pytest.approx(0.03) == metrics.chamfer_l2(b, a)


def test_fscore_at_one_and_two_percent_of_a_sphere_grown_by_1_5_percent():
    """A mesh 0.015 outside the true sphere everywhere: no point within 1%, every point within 2%."""
    ball = trimesh.creation.icosphere(subdivisions=5, radius=0.3)
    ref, ref_normals = sphere_points(0.315, 100_000, 3)
    scores = metrics.surface_scores(ball.vertices, ball.faces, ref, ref_normals, n_samples=50_000)
    assert scores["fscore"] == 0.0 and scores["fscore_2pct"] == 1.0
    assert scores["chamfer_l2"] == pytest.approx(0.015**2, rel=0.05)  # sample spacing adds ~1% to the distance


CUBE_HALF = 0.4


@pytest.fixture(scope="module")
def cube_samples():
    cube = trimesh.creation.box((2 * CUBE_HALF,) * 3)
    return cube, metrics.sample_mesh(cube.vertices, cube.faces, 100_000, seed=0)


def test_cube_edges_are_edge_points_and_flat_faces_are_not(cube_samples):
    _, (points, normals) = cube_samples
    edge = metrics.edge_points(points, normals)
    # distance of each point to the cube's edges: a point on a face is on an edge's band when its
    # second-smallest distance to a face plane is small
    to_planes = np.sort(CUBE_HALF - np.abs(points), axis=1)
    to_edge = to_planes[:, 1]
    # no flat-face point is called an edge: every edge point is within eps of an edge
    assert to_edge[edge].max() <= metrics.EDGE_EPS + 1e-6
    # nearly every point hugging an edge is found (within eps/2 it has neighbours across the edge)
    near = to_edge < metrics.EDGE_EPS / 2
    assert edge[near].mean() > 0.95
    # all 12 edges are found along their whole length: bin edge points by (edge, position along it)
    along_axis = np.argmax(CUBE_HALF - np.abs(points[edge]), axis=1)  # the edge runs along the free axis
    signs = np.sign(points[edge])
    found = set()
    for axis, s, p in zip(along_axis, signs, points[edge], strict=True):
        others = tuple(int(s[i]) for i in range(3) if i != axis)
        found.add((int(axis), others, min(7, int((p[axis] + CUBE_HALF) / (2 * CUBE_HALF) * 8))))
    assert {(a, o) for a, o, _ in found} == {(a, (s1, s2)) for a in range(3) for s1 in (-1, 1) for s2 in (-1, 1)}
    assert len(found) == 12 * 8


def test_cube_against_itself(cube_samples):
    cube, (points, normals) = cube_samples
    uniform = np.random.default_rng(0).uniform(-0.5, 0.5, size=(100_000, 3))
    inside = cube.contains(uniform)
    assert metrics.volumetric_iou(inside, inside) == 1.0
    ecd, n_pred, n_ref = metrics.edge_chamfer_distance(points, normals, points, normals)
    assert ecd == 0.0 and n_pred == n_ref > 0
    # two independent samplings of the same cube: ECD of the order of the edge-point spacing only
    other, other_normals = metrics.sample_mesh(cube.vertices, cube.faces, 100_000, seed=1)
    ecd, _, _ = metrics.edge_chamfer_distance(points, normals, other, other_normals)
    assert ecd < 0.005


def test_shifted_cube_iou_by_hand():
    # cubes of side a = 0.5, one shifted by s = 0.1 along x: intersection (a - s) a^2, union (a + s) a^2,
    # IoU = (a - s) / (a + s) = 2/3. 100k uniform points: the intersection holds ~10k of them, a relative
    # standard error of ~1%, hence a tolerance of 0.02.
    p = np.random.default_rng(0).uniform(-0.5, 0.5, size=(100_000, 3))
    a, s = 0.5, 0.1
    ref = np.all(np.abs(p) < a / 2, axis=1)
    pred = np.all(np.abs(p - [s, 0, 0]) < a / 2, axis=1)
    assert metrics.volumetric_iou(pred, ref) == pytest.approx((a - s) / (a + s), abs=0.02)


def test_prediction_without_surface_gets_the_worst_values(cube_samples):
    _, (points, normals) = cube_samples
    scores = metrics.surface_scores(np.zeros((0, 3)), np.zeros((0, 3), int), points, normals)
    assert scores["chamfer_l1"] == scores["ecd"] == metrics.WORST_DISTANCE == math.sqrt(3)
    assert scores["fscore"] == scores["fscore_2pct"] == 0.0 and scores["normal_consistency"] == 0.0
    assert scores["chamfer_l2"] == metrics.WORST_SQUARED_DISTANCE == 3.0
    assert scores["n_edge_ref"] > 0
    assert metrics.volumetric_iou(np.zeros(10, bool), np.arange(10) < 5) == 0.0


def test_ecd_undefined_without_reference_edges_and_worst_without_predicted_ones(cube_samples):
    _, (cube, cube_normals) = cube_samples
    ball, ball_normals = sphere_points(0.4, 50_000, 2)
    ecd, n_pred, n_ref = metrics.edge_chamfer_distance(cube, cube_normals, ball, ball_normals)
    assert math.isnan(ecd) and n_ref == 0 and n_pred > 0
    ecd, n_pred, n_ref = metrics.edge_chamfer_distance(ball, ball_normals, cube, cube_normals)
    assert ecd == metrics.WORST_DISTANCE and n_pred == 0 and n_ref > 0


def test_surface_scores_of_a_mesh_against_its_own_reference(cube_samples):
    cube, (points, normals) = cube_samples
    scores = metrics.surface_scores(cube.vertices, cube.faces, points, normals, seed=5)
    # independent samples of the same surface: Chamfer ~ sample spacing (sqrt(3.84 / 1e5) / 2 ~ 0.003)
    assert scores["chamfer_l1"] < 0.005
    assert scores["fscore"] > 0.99
    assert scores["normal_consistency"] > 0.98  # only neighbours across an edge disagree


def test_silhouette_iou_of_two_squares():
    a = np.zeros((2, 10, 10), bool)
    b = np.zeros((2, 10, 10), bool)
    a[0, :4, :4] = True  # 16 px
    b[0, 2:6, :4] = True  # overlaps 8 px: IoU 8 / 24
    a[1, :5, :5] = b[1, :5, :5] = True  # identical: 1
    assert metrics.silhouette_iou(a, b) == pytest.approx((8 / 24 + 1) / 2)
    assert metrics.silhouette_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool)) == 1.0
