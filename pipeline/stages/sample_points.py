"""Where the training and reference points come from (paper §5.1: 9872 jittered surface + 128 uniform)."""

from __future__ import annotations

import numpy as np


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples on the surface: points (n, 3) and unit face normals (n, 3)."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / area[face, None]
    return points, normals


def jitter(points: np.ndarray, sigmas: tuple[float, ...], weights: tuple[float, ...],
           rng: np.random.Generator) -> np.ndarray:
    """Offset each point by an isotropic Gaussian whose sigma is drawn from the mixture (sigmas, weights)."""
    w = np.asarray(weights, np.float64)
    sigma = np.asarray(sigmas, np.float64)[rng.choice(len(sigmas), size=len(points), p=w / w.sum())]
    return points + rng.standard_normal(points.shape) * sigma[:, None]


def uniform_points(n: int, rng: np.random.Generator, half_size: float = 0.5) -> np.ndarray:
    """n points uniform in the cube [-half_size, half_size]^3."""
    return rng.uniform(-half_size, half_size, size=(n, 3))


def morton_order(points_q: np.ndarray, bits: int = 10) -> np.ndarray:
    """The permutation that sorts quantised points (N, 3) uint16 along a Morton (Z-order) curve of their top
    `bits` bits per axis: neighbours in space become neighbours in the array, which the store compresses better.
    The order of the jittered points carries no meaning (each draws its sigma independently)."""
    q = (np.asarray(points_q, np.uint64) >> np.uint64(16 - bits))
    code = np.zeros(len(q), np.uint64)
    for b in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(b)) & np.uint64(1)) << np.uint64(3 * b + axis)
    return np.argsort(code, kind="stable")
