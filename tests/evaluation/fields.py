"""Analytic occupancy fields of shapes whose geometry is known by formula (normalised frame).

Each field is a clipped linear ramp of a signed distance, occupancy = clip(0.5 - sdf / RAMP, 0, 1): 0.5 exactly
on the surface, smooth across it like a trained network's output, 0 or 1 farther than RAMP / 2 from it.
"""

from __future__ import annotations

import numpy as np

RAMP = 0.02


def _ramp(sdf: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sdf / RAMP, 0.0, 1.0).astype(np.float32)


def sphere(radius: float, center=(0.0, 0.0, 0.0)):
    c = np.asarray(center, np.float32)
    return lambda p: _ramp(np.linalg.norm(p - c, axis=1) - radius)


def box(half_sizes, center=(0.0, 0.0, 0.0)):
    h, c = np.asarray(half_sizes, np.float32), np.asarray(center, np.float32)

    def field(p):
        q = np.abs(p - c) - h
        return _ramp(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))

    return field


def torus(major: float, minor: float):
    def field(p):
        ring = np.linalg.norm(p[:, :2], axis=1) - major
        return _ramp(np.hypot(ring, p[:, 2]) - minor)

    return field
