"""Dense and coarse-to-fine extraction on analytic fields whose surfaces are known by formula."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from evaluation.metrics import chamfer_l1
from inference.extract_mesh import BOX_HALF, extract_coarse_to_fine, extract_dense, extract_mesh, grid_spacing
from tests.evaluation import fields

SHAPES = {
    "sphere": (fields.sphere(0.3), 4 / 3 * np.pi * 0.3**3),
    "box": (fields.box((0.4, 0.25, 0.1)), 0.8 * 0.5 * 0.2),
    "torus": (fields.torus(0.3, 0.08), 2 * np.pi**2 * 0.3 * 0.08**2),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_coarse_to_fine_matches_dense_for_far_fewer_queries(name):
    field, volume = SHAPES[name]
    resolution = 128
    dense = extract_dense(field, resolution)
    fine = extract_coarse_to_fine(field, resolution, coarse=16)
    h = grid_spacing(resolution)
    assert dense.status == fine.status == "ok"
    assert dense.n_queries == (resolution + 1) ** 3
    # same mesh: Chamfer between the two vertex sets below the grid spacing (here it is exactly 0)
    assert chamfer_l1(dense.vertices, fine.vertices) < h
    assert len(dense.vertices) == len(fine.vertices) and len(dense.faces) == len(fine.faces)
    assert fine.n_queries * 10 <= dense.n_queries
    # and it is the right surface: closed, outward (positive volume), volume within a grid spacing's shell
    mesh = trimesh.Trimesh(fine.vertices, fine.faces, process=False)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(volume, abs=mesh.area * h)


def test_sphere_vertices_lie_on_the_sphere():
    ex = extract_mesh(fields.sphere(0.3), resolution=64, coarse=8)
    r = np.linalg.norm(ex.vertices, axis=1)
    # the ramp field is linear along grid edges near the surface, so marching cubes' linear
    # interpolation lands within a small fraction of the spacing of the true radius
    assert np.abs(r - 0.3).max() < 0.1 * grid_spacing(64)


def test_no_surface_is_reported_not_raised():
    ex = extract_coarse_to_fine(lambda p: np.zeros(len(p), np.float32), resolution=64, coarse=16)
    assert ex.status == "no_surface"
    assert ex.vertices.shape == (0, 3) and ex.faces.shape == (0, 3)
    assert ex.n_queries == 17**3  # nothing crosses, so nothing is refined


def test_field_inside_everywhere_still_gives_a_closed_mesh_around_the_box():
    ex = extract_mesh(lambda p: np.ones(len(p), np.float32), resolution=32, coarse=8)
    mesh = trimesh.Trimesh(ex.vertices, ex.faces, process=False)
    assert mesh.is_watertight
    side = 2 * BOX_HALF + grid_spacing(32)  # the surface sits half a spacing outside the box
    assert mesh.volume == pytest.approx(side**3, rel=0.02)


def test_queries_are_batched():
    sizes = []

    def field(p):
        sizes.append(len(p))
        return fields.sphere(0.3)(p)

    extract_coarse_to_fine(field, resolution=64, coarse=16, batch_size=1000)
    assert max(sizes) <= 1000 and sum(sizes) > 1000


@pytest.mark.parametrize("resolution,coarse", [(100, 32), (64, 48), (16, 32)])
def test_resolution_must_be_coarse_times_power_of_two(resolution, coarse):
    with pytest.raises(ValueError, match="power of two"):
        extract_coarse_to_fine(fields.sphere(0.3), resolution, coarse)


def test_a_field_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N,\) occupancies"):
        extract_dense(lambda p: np.zeros((len(p), 2)), resolution=8)
