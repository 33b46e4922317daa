"""Per-object steps on real robot parts: counts, frame, exact distances, robust inside flags."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pipeline import schema
from pipeline.config import PreprocessConfig
from pipeline.process import process_object
from pipeline.schema import ObjectMeta
from pipeline.stages.distances import WINDING_RECHECK, inside, udf, winding_number
from pipeline.stages.load import load_mesh
from pipeline.stages.normalize import normalize
from tests.conftest import load_normalised

DIST_TOL = 1e-4  # docs/METHOD.md: distances exact to 1e-4 of the unit cube


def all_meshes(robosuite_meshes):
    return [p for ps in robosuite_meshes.values() for p in ps]


def test_normalise_fits_unit_cube_and_maps_back(robosuite_meshes):
    for path in all_meshes(robosuite_meshes):
        v, f = load_mesh(path)
        vn, scale, center = normalize(v, f)
        ext = vn.max(axis=0) - vn.min(axis=0)
        assert ext.max() == pytest.approx(1.0, abs=1e-12)
        assert np.allclose((vn.max(axis=0) + vn.min(axis=0)) / 2, 0, atol=1e-12)
        assert np.allclose(vn * scale + center, v, atol=1e-9)


@pytest.fixture(scope="module")
def processed(robosuite_meshes):
    cfg = PreprocessConfig(views=PreprocessConfig().views.__class__(n_views=4, up_axis="z"), n_reference=5000)
    out = {}
    for path in all_meshes(robosuite_meshes):
        job = ObjectMeta(path.stem, "c", "test", str(path), "0123456789abcdef")
        out[path] = process_object(job, cfg)
    return out


def test_point_counts_and_dtypes(processed):
    for rec in processed.values():
        a = rec.arrays
        assert a["points"].shape == (schema.N_POINTS, 3) and a["points"].dtype == np.uint16
        assert a["udf"].shape == (schema.N_POINTS,) and a["inside"].dtype == bool
        pts = schema.dequantize_points(a["points"])
        uniform = pts[schema.N_SURFACE:]
        assert len(uniform) == 128 and np.abs(uniform).max() <= 0.5 + schema.POINT_STEP
        # the 9872 jittered surface points sit near the surface: most within the larger jitter sigma x 3
        d = schema.dequantize_udf(a["udf"])
        assert np.mean(d[: schema.N_SURFACE] < 0.06) > 0.99
        assert np.median(d[: schema.N_SURFACE]) < 0.02 < np.median(d[schema.N_SURFACE:])


def test_surface_points_are_stored_in_morton_order(processed):
    from pipeline.stages.sample_points import morton_order

    rng = np.random.default_rng(0)
    q = rng.integers(0, 65536, (5000, 3)).astype(np.uint16)
    order = morton_order(q)
    assert sorted(order) == list(range(5000))  # a permutation
    step = lambda a: np.linalg.norm(np.diff(a.astype(np.float64), axis=0), axis=1).mean()  # noqa: E731
    assert step(q[order]) < 0.2 * step(q)  # neighbours along the array are neighbours in space
    for rec in processed.values():
        surface = rec.arrays["points"][: schema.N_SURFACE]
        assert (morton_order(surface) == np.arange(schema.N_SURFACE)).all()  # already sorted as stored


def test_stored_udf_matches_an_independent_method(processed):
    """Stored distances (libigl, after quantisation) against trimesh's closest point on 1500 points per mesh."""
    rng = np.random.default_rng(3)
    for path, rec in processed.items():
        v, f = load_normalised(path)
        pick = rng.choice(schema.N_POINTS, 1500, replace=False)
        pts = schema.dequantize_points(rec.arrays["points"][pick]).astype(np.float64)
        _, exact, _ = trimesh.proximity.closest_point(trimesh.Trimesh(v, f, process=False), pts)
        err = np.abs(exact - schema.dequantize_udf(rec.arrays["udf"][pick]))
        assert err.max() < DIST_TOL, f"{path.name}: max distance error {err.max():.2e}"


def test_distance_backends_where_they_are_right_and_wrong(robosuite_meshes):
    """Why libigl is the default: on a well-shaped sphere all three agree; on CAD slivers (triangles 3e-7 wide,
    1 long) open3d's float32 distance is off by more than the tolerance, and pysdf by far more."""
    rng = np.random.default_rng(2)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    q = rng.uniform(-0.5, 0.5, (5000, 3))
    reference = udf(sphere.vertices, sphere.faces, q, "libigl")
    for backend in ("open3d", "pysdf"):
        assert np.abs(udf(sphere.vertices, sphere.faces, q, backend) - reference).max() < DIST_TOL
    assert np.abs(reference - np.abs(np.linalg.norm(q, axis=1) - 0.4)).max() < 5e-3  # faceting of the sphere

    sliver = next(p for p in robosuite_meshes["gripper_part"] if p.name == "half_round_tip.stl")
    v, f = load_normalised(sliver)
    s, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 4000, seed=0)
    pts = s + rng.normal(0, 0.005, s.shape)
    exact = udf(v, f, pts, "libigl")
    worst = np.argsort(-np.abs(udf(v, f, pts, "open3d") - exact))[:50]
    _, independent, _ = trimesh.proximity.closest_point(trimesh.Trimesh(v, f, process=False), pts[worst])
    assert np.abs(independent - exact[worst]).max() < 1e-6, "libigl must agree with trimesh where open3d does not"
    assert np.abs(udf(v, f, pts[worst], "open3d") - exact[worst]).max() > DIST_TOL
    assert np.abs(udf(v, f, pts, "pysdf") - exact).max() > 1e-2


def test_inside_agrees_with_ray_parity_on_watertight_parts(processed):
    """On watertight single-shell parts the winding number and ray parity (trimesh.contains) agree >= 98%."""
    checked = 0
    for path, rec in processed.items():
        v, f = load_normalised(path)
        mesh = trimesh.Trimesh(v, f)
        if not mesh.is_watertight or mesh.body_count != 1:
            continue
        pts = schema.dequantize_points(rec.arrays["points"]).astype(np.float64)
        agree = np.mean(mesh.contains(pts) == rec.arrays["inside"])
        assert agree >= 0.98, f"{path.name}: winding number and ray parity agree on only {agree:.3f}"
        checked += 1
    assert checked >= 2


def test_inside_is_the_union_of_overlapping_shells():
    """Two overlapping boxes exported as one mesh (a CAD union): parity says the overlap is outside."""
    a = trimesh.creation.box(extents=(0.6, 0.3, 0.3))
    b = trimesh.creation.box(extents=(0.3, 0.6, 0.3))
    both = trimesh.util.concatenate([a, b])
    q = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.25, 0.0], [0.25, 0.25, 0.0]])
    assert inside(both.vertices, both.faces, q).tolist() == [True, True, True, False]
    # 2 inside both shells: exact to the coarse pass's bound there (far from the 0.5 threshold, see WINDING_RECHECK)
    assert winding_number(both.vertices, both.faces, q[:1])[0] == pytest.approx(2.0, abs=WINDING_RECHECK)
    from pysdf import SDF

    parity = SDF(both.vertices.astype(np.float32), both.faces.astype(np.uint32)).contains(q.astype(np.float32))
    assert not parity[0], "ray parity (pysdf.contains) is expected to call the overlap outside"


def test_parity_only_on_closed_single_shells_and_the_same_flags(robosuite_meshes):
    from pipeline.stages.distances import is_closed_single_shell

    box = trimesh.creation.box(extents=(0.6, 0.3, 0.3))
    assert is_closed_single_shell(box.vertices, box.faces)
    soup = box.vertices[box.faces].reshape(-1, 3)  # unwelded, as an STL file reads: welded at equal coordinates
    assert is_closed_single_shell(soup, np.arange(len(soup)).reshape(-1, 3))
    assert not is_closed_single_shell(box.vertices, box.faces[1:])  # a hole
    flipped = box.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not is_closed_single_shell(box.vertices, flipped)  # inconsistent orientation
    both = trimesh.util.concatenate([box, trimesh.creation.box(extents=(0.3, 0.6, 0.3))])
    assert not is_closed_single_shell(both.vertices, both.faces)  # two shells
    q = np.random.default_rng(0).uniform(-0.5, 0.5, (20000, 3))  # many points: the fast path would be taken
    in_a = (np.abs(q) <= [0.3, 0.15, 0.15]).all(1) | (np.abs(q) <= [0.15, 0.3, 0.15]).all(1)
    assert (inside(both.vertices, both.faces, q) == in_a).mean() > 0.9995  # the union, overlap included

    n_closed = 0
    for path in all_meshes(robosuite_meshes):
        v, f = load_normalised(path)
        n_closed += is_closed_single_shell(v, f)
        flags = inside(v, f, q)
        assert (flags == (np.abs(winding_number(v, f, q)) >= 0.5)).mean() >= 0.9999, path
    assert n_closed >= 2  # the fast path was exercised on real parts


def test_winding_number_flags_on_open_mesh_are_plausible(processed):
    """The open ur5e forearm: the volume its uniform reference points find inside is of its closed hull's order."""
    for path, rec in processed.items():
        if "forearm" not in path.name:
            continue
        box_volume = (2 * PreprocessConfig().reference_half) ** 3  # the points fill the padded reference box
        volume = rec.arrays["ref_uniform_inside"].mean() * box_volume
        v, f = load_normalised(path)
        hull = trimesh.Trimesh(v, f).convex_hull
        n = len(rec.arrays["ref_uniform_inside"])
        noise = 4 * np.sqrt(hull.volume * box_volume / n)  # 4 sigma of a Monte-Carlo volume estimate from n points
        assert 0.2 * hull.volume < volume < hull.volume + noise


def test_reference_data_only_for_reference_splits(robosuite_meshes):
    path = all_meshes(robosuite_meshes)[0]
    cfg = PreprocessConfig(views=PreprocessConfig().views.__class__(n_views=2), n_reference=1000)
    train = process_object(ObjectMeta("x", "c", "train", str(path), "ab"), cfg)
    test = process_object(ObjectMeta("x", "c", "test", str(path), "ab"), cfg)
    assert not any(k.startswith("ref_") for k in train.arrays)
    assert test.arrays["ref_surface_points"].shape == (1000, 3)
    n = test.arrays["ref_surface_normals"]
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    # same content hash and seed -> same points (reruns are reproducible)
    again = process_object(ObjectMeta("x", "c", "train", str(path), "ab"), cfg)
    assert np.array_equal(again.arrays["points"], train.arrays["points"])


def test_a_new_code_version_or_reference_box_keeps_the_draws(robosuite_meshes, monkeypatch):
    """Objects are redone when the code version or the reference box changes (content_hash), with the same points
    and views (draw_seed): a padded box scales the same uniform draws, so only the reference arrays move."""
    from pipeline import runner

    path = all_meshes(robosuite_meshes)[1]
    cfg = PreprocessConfig(views=PreprocessConfig().views.__class__(n_views=2), n_reference=2000)
    job = ObjectMeta("x", "c", "test", str(path))
    content, draws = runner.object_hashes(job, cfg)
    unpadded = cfg.with_overrides(reference_padding=0.0)
    content_0, draws_0 = runner.object_hashes(job, unpadded)
    monkeypatch.setattr(runner, "CODE_VERSION", "pipeline-next")
    content_next, draws_next = runner.object_hashes(job, cfg)
    assert len({content, content_0, content_next}) == 3 and draws == draws_0 == draws_next
    assert runner.object_hashes(job, cfg.with_overrides(n_surface=5000))[1] != draws  # another draw: new points

    padded = process_object(ObjectMeta("x", "c", "test", str(path), content, draw_seed=draws), cfg).arrays
    plain = process_object(ObjectMeta("x", "c", "test", str(path), content_0, draw_seed=draws_0), unpadded).arrays
    for name in ("points", "udf", "inside", "images", "Rt", "ref_surface_points"):
        assert np.array_equal(padded[name], plain[name]), name
    assert np.allclose(padded["ref_uniform_points"], 1.1 * plain["ref_uniform_points"], atol=1e-6)
    assert np.abs(plain["ref_uniform_points"]).max() <= 0.5 < np.abs(padded["ref_uniform_points"]).max()
