"""Normalise a mesh into the unit cube [-0.5, 0.5]^3 (SPEC.md): centre the bounding box, divide by the longest side."""

from __future__ import annotations

import numpy as np


def normalize(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """vertices (V, 3) in file units -> (normalised vertices, scale, center), original = normalised * scale + center.

    The box is taken over the vertices that triangles use, so stray unreferenced vertices do not shrink the part.
    """
    used = vertices[np.unique(faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    center = (lo + hi) / 2.0
    scale = float((hi - lo).max())
    return (vertices - center) / scale, scale, center
