"""Mesh files: what eval and reconstruct write, in the format a path's suffix names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_write_bytes

MESH_FORMATS = ("ply", "obj", "glb", "stl")


def check_formats(formats: tuple[str, ...] | list[str]) -> None:
    """Refuse formats we cannot write, naming them and the ones we can."""
    unknown = [f for f in formats if f not in MESH_FORMATS]
    if unknown:
        raise ValueError(f"unknown mesh format(s) {unknown}; choose among {list(MESH_FORMATS)}")


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit normals: each vertex's adjacent face normals weighted by face area (the cross product
    before it is normalised), in the faces' winding (outward for extract_mesh's meshes); (0, 0, 0) for a vertex of
    no face or of faces with no area. Viewers shade smoothly with them instead of recomputing (or not)."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    normals = np.zeros_like(v)
    if len(f):
        cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        for corner in range(3):
            np.add.at(normals, f[:, corner], cross)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0).astype(np.float32)


def ply_bytes(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None) -> bytes:
    """vertices (V, 3), faces (F, 3) and optional vertex normals (V, 3) -> binary little-endian PLY, byte for byte
    what trimesh 4-5 exports for Trimesh(vertices, faces, vertex_normals=normals, process=False) (its header
    comment included): float32 x y z (nx ny nz), then per face a uchar 3 and three int32 indices. Written here
    because importing trimesh costs more (0.4-0.7 s) than `aps reconstruct` spends on one photo's everything but
    the network."""
    props = "property float x\nproperty float y\nproperty float z\n"
    columns = [np.asarray(vertices, "<f4").reshape(-1, 3)]
    if normals is not None:
        props += "property float nx\nproperty float ny\nproperty float nz\n"
        columns.append(np.asarray(normals, "<f4").reshape(-1, 3))
    header = ("ply\nformat binary_little_endian 1.0\ncomment https://github.com/mikedh/trimesh\n"
              f"element vertex {len(vertices)}\n{props}"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    rows = np.empty(len(faces), [("count", "<u1"), ("index", "<i4", (3,))])
    rows["count"] = 3
    rows["index"] = np.asarray(faces).reshape(-1, 3)
    return header.encode() + np.ascontiguousarray(np.hstack(columns)).tobytes() + rows.tobytes()


def write_mesh(vertices: np.ndarray, faces: np.ndarray, path: str | Path, normals: np.ndarray | None = None) -> None:
    """vertices (V, 3), faces (F, 3) -> a mesh file in the format named by the path's suffix, written atomically,
    with vertex normals where the format holds them (PLY, OBJ, GLB; STL has face normals). normals: (V, 3), the
    mesh's vertex_normals, given by a caller that writes one mesh several times (formats, units: a uniform scale
    and a shift leave them as they are); None: computed here."""
    path = Path(path)
    normals = vertex_normals(vertices, faces) if normals is None else normals
    if path.suffix == ".ply":
        atomic_write_bytes(path, ply_bytes(vertices, faces, normals))
        return
    import trimesh  # seconds to import: `aps eval`'s config checks the formats (check_formats) without it

    # an empty mesh (no surface: eval still writes the object's file) has no normals trimesh can take
    extra = {"vertex_normals": normals} if len(normals) else {}
    data = trimesh.Trimesh(vertices, faces, process=False, **extra).export(file_type=path.suffix[1:])
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
