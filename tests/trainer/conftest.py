"""A tiny real store of analytic solids (spheres and boxes) whose distances, inside flags and images are known
by formula: each view is ray-cast exactly through its own camera, so projecting a surface point with the stored
K and Rt must land on the solid's silhouette."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.schema import (
    N_SURFACE,
    N_UNIFORM,
    ObjectMeta,
    ObjectRecord,
    dequantize_points,
    init_store,
    quantize_points,
    quantize_udf,
    write_index,
    write_shard,
)

IMAGE_SIDE = 64
N_VIEWS = 4
N_REF = 20000
REF_HALF = 0.55  # the reference box of aps preprocess: the unit cube padded by 0.1 (OccNet's IoU box)


def look_at(azimuth_deg: float, elevation_deg: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre C and Rt (3, 4) of a camera at these angles looking at the origin (OpenCV axes, Y up)."""
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    C = distance * np.array([np.cos(e) * np.cos(a), np.sin(e), np.cos(e) * np.sin(a)])
    z = -C / np.linalg.norm(C)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return C, np.concatenate([R, (-R @ C)[:, None]], axis=1)


class Sphere:
    def __init__(self, center, radius):
        self.c, self.r = np.asarray(center, float), float(radius)

    def sdf(self, p):
        return np.linalg.norm(p - self.c, axis=-1) - self.r

    def surface(self, n, rng):
        d = rng.normal(size=(n, 3))
        return self.c + self.r * d / np.linalg.norm(d, axis=1, keepdims=True)

    def ray_hit(self, o, d):
        """o (3,), d (M, 3) unit -> (hit (M,), t (M,), normal (M, 3))."""
        oc = o - self.c
        b = d @ oc
        disc = b**2 - (oc @ oc - self.r**2)
        hit = disc > 0
        t = -b - np.sqrt(np.maximum(disc, 0))
        p = o + t[:, None] * d
        return hit & (t > 0), t, (p - self.c) / self.r


class Box:
    def __init__(self, center, half):
        self.c, self.h = np.asarray(center, float), np.asarray(half, float)

    def sdf(self, p):
        q = np.abs(p - self.c) - self.h
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(axis=-1), 0)

    def surface(self, n, rng):
        areas = np.array([self.h[1] * self.h[2], self.h[0] * self.h[2], self.h[0] * self.h[1]]).repeat(2)
        face = rng.choice(6, size=n, p=areas / areas.sum())
        p = rng.uniform(-1, 1, size=(n, 3)) * self.h
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        p[np.arange(n), axis] = sign * self.h[axis]
        return p + self.c

    def ray_hit(self, o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (self.c - self.h - o) / d
            t2 = (self.c + self.h - o) / d
        tmin = np.minimum(t1, t2).max(axis=1)
        tmax = np.maximum(t1, t2).min(axis=1)
        hit = (tmax >= tmin) & (tmax > 0)
        p = o + tmin[:, None] * d
        q = (p - self.c) / self.h
        axis = np.abs(q).argmax(axis=1)
        normal = np.zeros_like(p)
        normal[np.arange(len(p)), axis] = np.sign(q[np.arange(len(p)), axis])
        return hit, tmin, normal


def render(shape, K, C, Rt, side, color):
    """Exact ray-cast RGBA image (side, side, 4) of a solid: Lambert shading, transparent background."""
    v, u = np.mgrid[0:side, 0:side].astype(float)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(side * side)], axis=1)
    d_cam = pix @ np.linalg.inv(K).T
    d = d_cam @ Rt[:, :3]  # R^T d_cam, row-wise
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    hit, _, normal = shape.ray_hit(C, d)
    light = np.array([0.3, 0.8, 0.5]) / np.linalg.norm([0.3, 0.8, 0.5])
    shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)
    img = np.zeros((side * side, 4), np.uint8)
    img[hit, :3] = np.clip(np.outer(shade[hit], color), 0, 255).astype(np.uint8)
    img[hit, 3] = 255
    return img.reshape(side, side, 4)


SHAPES = {
    "sphere_a": ("spheres", "train", Sphere([0.0, 0.0, 0.0], 0.35)),
    "box_a": ("boxes", "train", Box([0.0, 0.0, 0.0], [0.4, 0.2, 0.3])),
    "sphere_b": ("spheres", "val", Sphere([0.1, -0.05, 0.0], 0.3)),
    "box_b": ("boxes", "test", Box([0.0, 0.05, 0.0], [0.25, 0.4, 0.15])),
}


def make_record(object_id: str, category: str, split: str, shape, seed: int) -> ObjectRecord:
    rng = np.random.default_rng(seed)
    surface = shape.surface(N_SURFACE, rng)
    sigma = np.where(rng.random(N_SURFACE) < 0.5, 0.01, 0.05)[:, None]
    jittered = surface + rng.normal(size=surface.shape) * sigma
    uniform = rng.uniform(-0.5, 0.5, size=(N_UNIFORM, 3))
    points = dequantize_points(quantize_points(np.concatenate([jittered, uniform])))
    sdf = shape.sdf(points.astype(np.float64))
    K = np.array([[70.0, 0, (IMAGE_SIDE - 1) / 2], [0, 70.0, (IMAGE_SIDE - 1) / 2], [0, 0, 1]])
    images, Ks, Rts = [], [], []
    color = rng.uniform(120, 255, size=3)
    for view in range(N_VIEWS):
        C, Rt = look_at(45.0 + 90.0 * view, 20.0 + 5 * view, 2.0)
        images.append(render(shape, K, C, Rt, IMAGE_SIDE, color))
        Ks.append(K)
        Rts.append(Rt)
    arrays = {
        "points": quantize_points(points),
        "udf": quantize_udf(np.abs(sdf)),
        "inside": sdf < 0,
        "scale": np.float64(1.0),
        "center": np.zeros(3),
        "images": np.stack(images),
        "K": np.stack(Ks).astype(np.float32),
        "Rt": np.stack(Rts).astype(np.float32),
    }
    if split == "test":
        ref_surface = shape.surface(N_REF, rng).astype(np.float32)
        ref_uniform = rng.uniform(-REF_HALF, REF_HALF, size=(N_REF, 3)).astype(np.float32)
        arrays.update(ref_surface_points=ref_surface, ref_surface_normals=np.zeros_like(ref_surface),
                      ref_uniform_points=ref_uniform, ref_uniform_inside=shape.sdf(ref_uniform) < 0)
    return ObjectRecord(ObjectMeta(object_id, category, split, f"analytic:{object_id}", f"hash-{object_id}"), arrays)


@pytest.fixture(scope="session")
def analytic_store(tmp_path_factory):
    """Path of a complete store: sphere_a, box_a (train), sphere_b (val), box_b (test, with ref_* arrays)."""
    path = tmp_path_factory.mktemp("analytic") / "store"
    init_store(path, "analytic", {"n_views": N_VIEWS, "reference_splits": ["test"], "reference_padding": 0.1},
               "test")
    index = {}
    by_shard = {"shard-train": [], "shard-valtest": [], "shard-test": []}
    for seed, (oid, (category, split, shape)) in enumerate(SHAPES.items()):
        shard = {"train": "shard-train", "val": "shard-valtest", "test": "shard-test"}[split]
        by_shard[shard].append(make_record(oid, category, split, shape, seed))
    for shard, records in by_shard.items():
        if records:
            write_shard(path, shard, records)
            index.update({r.object_id: (shard, row) for row, r in enumerate(records)})
    write_index(path, index, complete=True)
    return path
