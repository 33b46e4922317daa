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


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """vertices (V, 3), faces (F, 3) -> binary little-endian PLY, byte for byte what trimesh 4-5 exports for
    Trimesh(vertices, faces, process=False) (its header comment included): float32 x y z, then per face a
    uchar 3 and three int32 indices. Written here because importing trimesh costs more (0.4-0.7 s) than
    `aps reconstruct` spends on one photo's everything but the network."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment https://github.com/mikedh/trimesh\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    rows = np.empty(len(faces), [("count", "<u1"), ("index", "<i4", (3,))])
    rows["count"] = 3
    rows["index"] = np.asarray(faces).reshape(-1, 3)
    return header.encode() + np.asarray(vertices, "<f4").reshape(-1, 3).tobytes() + rows.tobytes()


def write_mesh(vertices: np.ndarray, faces: np.ndarray, path: str | Path) -> None:
    """vertices (V, 3), faces (F, 3) -> a mesh file in the format named by the path's suffix, written atomically."""
    path = Path(path)
    if path.suffix == ".ply":
        atomic_write_bytes(path, ply_bytes(vertices, faces))
        return
    import trimesh  # seconds to import: `aps eval`'s config checks the formats (check_formats) without it

    data = trimesh.Trimesh(vertices, faces, process=False).export(file_type=path.suffix[1:])
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
