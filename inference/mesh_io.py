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


def write_mesh(vertices: np.ndarray, faces: np.ndarray, path: str | Path) -> None:
    """vertices (V, 3), faces (F, 3) -> a mesh file in the format named by the path's suffix, written atomically."""
    import trimesh  # seconds to import: `aps eval`'s config checks the formats (check_formats) without it

    path = Path(path)
    data = trimesh.Trimesh(vertices, faces, process=False).export(file_type=path.suffix[1:])
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
