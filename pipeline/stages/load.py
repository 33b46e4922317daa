"""Read a mesh file of any common format into one triangle soup, refusing what cannot be processed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import first_line

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")
# Coordinates beyond this are refused: triangle areas square the coordinates and their norms square them again,
# which overflows float64 from about 1e77; no real part is 1e30 units of anything wide (1e30 nm is 1e12 km).
MAX_COORDINATE = 1e30


class MeshError(ValueError):
    """A mesh that cannot be processed; the message names the file and the reason in one line."""


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load OBJ, STL (ascii or binary), PLY, OFF, GLB/GLTF; multi-part scenes are merged into one object.

    Returns vertices (V, 3) float64 in the file's units and faces (F, 3) int64.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MeshError(f"{path}: empty file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix!r} (use one of {', '.join(MESH_SUFFIXES)})")
    if path.suffix.lower() == ".stl":
        soup = read_binary_stl(path)
        if soup is not None:
            return check_mesh(*soup, str(path))
    import trimesh

    try:
        # scenes (GLB/GLTF, multi-object OBJ) are concatenated with their node transforms applied
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - every parser error becomes one clear line
        detail = first_line(exc, "")
        raise MeshError(f"{path}: cannot parse mesh ({type(exc).__name__}: {detail})") from exc
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    return check_mesh(vertices, faces, str(path))


_STL_TRIANGLE = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attributes", "<u2")])


def read_binary_stl(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A binary STL's triangle soup, as trimesh.load(process=False) returns it (vertices (3F, 3) float64, faces
    arange(3F) as (F, 3)), or None when the file is not binary STL (its size is not 84 + 50 x its triangle count:
    trimesh's own test); 10x faster than trimesh, and a worker that meets only binary STL never imports it
    (1.2 s of every worker's start)."""
    with open(path, "rb") as f:
        head = f.read(84)
        if len(head) < 84:
            return None
        n = int(np.frombuffer(head, "<u4", 1, 80)[0])
        if n == 0 or path.stat().st_size != 84 + 50 * n:
            return None
        triangles = np.fromfile(f, _STL_TRIANGLE, n)
    if len(triangles) != n:
        return None
    vertices = triangles["vertices"].reshape(-1, 3).astype(np.float64)
    return vertices, np.arange(3 * n, dtype=np.int64).reshape(n, 3)


def check_mesh(vertices: np.ndarray, faces: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a triangle soup and drop zero-area triangles; raises MeshError naming `name`."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise MeshError(f"{name}: no vertices")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError(f"{name}: no triangles")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{name}: {int((~np.isfinite(vertices)).any(axis=1).sum())} vertices are NaN or infinite")
    reach = float(np.abs(vertices).max())
    if reach > MAX_COORDINATE:
        raise MeshError(f"{name}: coordinates up to {reach:.3g} file units, beyond the {MAX_COORDINATE:.0e} that can "
                        "be computed with (a unit or export error?)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{name}: face indices out of range")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = area > 1e-12 * max(float(np.ptp(vertices, axis=0).max()), 1e-30) ** 2
    if not keep.any():
        raise MeshError(f"{name}: degenerate mesh (all {len(faces)} triangles have zero area)")
    extent = np.ptp(vertices[faces[keep]].reshape(-1, 3), axis=0)
    if (extent > 1e-9 * extent.max()).sum() < 2:
        raise MeshError(f"{name}: degenerate mesh (all triangles lie on a line)")
    return vertices, faces[keep]
