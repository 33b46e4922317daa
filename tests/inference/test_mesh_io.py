"""Mesh files carry vertex normals (outward on an extracted mesh), byte for byte as trimesh writes them."""

from __future__ import annotations

import numpy as np
import trimesh

from inference.extract_mesh import extract_mesh
from inference.mesh_io import ply_bytes, vertex_normals, write_mesh
from tests.evaluation import fields


def test_extracted_meshes_are_written_with_outward_unit_normals(tmp_path):
    ex = extract_mesh(fields.sphere(0.3), resolution=48, coarse=12)
    normals = vertex_normals(ex.vertices, ex.faces)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    radial = ex.vertices / np.linalg.norm(ex.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals, radial).min() > 0.95  # outward, and close to the sphere's own normal
    expected = trimesh.Trimesh(ex.vertices, ex.faces, vertex_normals=normals, process=False).export(file_type="ply")
    assert ply_bytes(ex.vertices, ex.faces, normals) == expected
    for fmt in ("ply", "obj", "glb"):
        write_mesh(ex.vertices, ex.faces, tmp_path / f"sphere.{fmt}")
        back = trimesh.load(tmp_path / f"sphere.{fmt}", force="mesh", process=False)
        assert len(back.faces) == len(ex.faces), fmt
        held = back.vertex_normals  # read from the file: trimesh keeps the normals it loaded
        assert np.einsum("ij,ij->i", held, back.vertices / np.linalg.norm(back.vertices, axis=1,
                                                                            keepdims=True)).min() > 0.95, fmt
    assert b"property float nx" in (tmp_path / "sphere.ply").read_bytes()[:400]


def test_a_vertex_of_no_face_gets_a_zero_normal():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float32)
    normals = vertex_normals(v, np.array([[0, 1, 2]]))
    np.testing.assert_allclose(normals[:3], [[0, 0, 1]] * 3)
    np.testing.assert_array_equal(normals[3], [0, 0, 0])


def test_an_empty_mesh_is_written_in_every_format(tmp_path):
    """eval writes the file of an object with no surface too; normals must not stop it (they did for obj/glb/stl)."""
    for fmt in ("ply", "obj", "glb", "stl"):
        write_mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), tmp_path / f"empty.{fmt}")
        assert (tmp_path / f"empty.{fmt}").is_file(), fmt
