"""Normalise a mesh into the unit cube [-0.5, 0.5]^3: centre the bounding box, divide by the longest side
(docs/METHOD.md, "Per-object training data")."""

from __future__ import annotations

import numpy as np


def used_vertices(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Mask (n_vertices,) bool of the vertices some triangle uses: np.unique(faces) in O(N) instead of a sort."""
    mask = np.zeros(n_vertices, bool)
    mask[np.asarray(faces, np.int64).reshape(-1)] = True
    return mask


def normalize(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """vertices (V, 3) in file units -> (normalised vertices, scale, center), original = normalised * scale + center.

    The box is taken over the vertices that triangles use, so stray unreferenced vertices do not shrink the part.
    A box with no finite positive size (non-finite coordinates, or a width that overflows float64) is refused with
    a one-line ValueError, without numpy's overflow warnings.
    """
    used = vertices[used_vertices(len(vertices), faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        extent = hi - lo
        center = (lo + hi) / 2.0
    scale = float(extent.max())
    if not (np.isfinite(extent).all() and np.isfinite(center).all() and scale > 0):
        box = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
        raise ValueError(f"the bounding box {box} has no finite positive size (non-finite or overflowing coordinates)")
    return (vertices - center) / scale, scale, center
