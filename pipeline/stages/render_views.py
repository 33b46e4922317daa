"""Headless CPU rendering of views with exact cameras (open3d ray casting), 3D-R2N2 style.

Cameras follow 3D-R2N2's render script (SPEC.md): Blender's default 35 mm lens on a 32 mm sensor, so the
focal length is 137 * 35 / 32 = 149.84 px at 137 px, principal point at the image centre, azimuth uniform in
[0, 360), elevation in [25, 30), camera distance = ratio * 1.75 with ratio in [0.65, 0.95). R2N2's objects
have a bounding-box diagonal of about 1 (ShapeNet v1); ours have a longest side of 1, so the distance is also
multiplied by our object's diagonal to frame it as R2N2 frames its objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import inf, isfinite

import numpy as np

R2N2_FOCAL_FRACTION = 35.0 / 32.0  # focal length / image width of Blender's default camera
R2N2_DISTANCE_SCALE = 1.75
# below this the views carry next to no shape; above it one object's views take gigabytes (24 x 4096^2 RGBA)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096


@dataclass(frozen=True)
class ViewSampling:
    """How views are drawn per object (defaults: 3D-R2N2's ranges)."""

    n_views: int = 24
    image_size: int = 137
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    elevation_deg: tuple[float, float] = (25.0, 30.0)
    distance_ratio: tuple[float, float] = (0.65, 0.95)
    up_axis: str = "y"  # the object's up axis in the normalised frame: ShapeNet is y-up, URDF/MJCF parts z-up

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse values no view can be drawn with (0 views, a 2-pixel image, a range given as one number),
        naming the manifest's parameter, views.<field>; a one-line ValueError."""
        for name, lo, hi in (("n_views", 1, None), ("image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
                bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ValueError(f"views.{name} must be an integer {bound}, got {value!r}")
        for name, lo, hi, what in (("azimuth_deg", -inf, inf, "degrees"),
                                   ("elevation_deg", -90.0, 90.0, "degrees in [-90, 90]"),
                                   ("distance_ratio", 0.0, inf, "ratios > 0")):
            pair = getattr(self, name)
            ok = (isinstance(pair, tuple | list) and len(pair) == 2
                  and all(isinstance(v, int | float) and not isinstance(v, bool) and isfinite(v) for v in pair)
                  and lo <= pair[0] <= pair[1] <= hi and (name != "distance_ratio" or pair[0] > 0))
            if not ok:
                shown = list(pair) if isinstance(pair, tuple) else pair  # as the manifest wrote it
                raise ValueError(f"views.{name} must be [low, high], two {what} with low <= high, got {shown!r}")
        if self.up_axis not in ("x", "y", "z"):
            raise ValueError(f"views.up_axis must be x, y or z, got {self.up_axis!r}")


_UP = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}


def intrinsics(image_size: int) -> np.ndarray:
    """(3, 3) pinhole K in pixels of the R2N2 camera at a square image of `image_size` pixels."""
    f = image_size * R2N2_FOCAL_FRACTION
    c = image_size / 2.0
    return np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float64)


def look_at_origin(camera_centre: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3, 4) Rt mapping world points to OpenCV camera coordinates (x right, y down, z forward)."""
    c = np.asarray(camera_centre, np.float64)
    z = -c / np.linalg.norm(c)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along the up axis: any right vector will do
        x = np.cross(z, np.roll(up, 1))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return np.concatenate([R, (-R @ c)[:, None]], axis=1)


def camera_centre(azimuth_deg: float, elevation_deg: float, distance: float, up_axis: str = "y") -> np.ndarray:
    """R2N2's camera position C = d (cos e cos a, sin e, cos e sin a) for y-up, rotated for other up axes."""
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    horizontal = {"y": (0, 2), "z": (0, 1), "x": (1, 2)}[up_axis]
    up_index = "xyz".index(up_axis)
    c = np.zeros(3)
    c[horizontal[0]] = distance * np.cos(e) * np.cos(a)
    c[horizontal[1]] = distance * np.cos(e) * np.sin(a)
    c[up_index] = distance * np.sin(e)
    return c


def sample_cameras(sampling: ViewSampling, diagonal: float, rng: np.random.Generator, radius: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the views of one object (bounding-box `diagonal`, bounding-sphere `radius` about the origin).

    The camera never comes closer than where the bounding sphere fills the frame, so no view cuts the
    object (R2N2's closest ratio, 0.65, would cut the corners of a long part).
    Returns K (V, 3, 3) float32, Rt (V, 3, 4) float32 and the drawn (azimuth, elevation, distance) (V, 3).
    """
    v = sampling.n_views
    az = rng.uniform(*sampling.azimuth_deg, size=v)
    el = rng.uniform(*sampling.elevation_deg, size=v)
    dist = rng.uniform(*sampling.distance_ratio, size=v) * R2N2_DISTANCE_SCALE * diagonal
    half_fov = np.arctan(0.5 / R2N2_FOCAL_FRACTION)
    dist = np.maximum(dist, 1.02 * radius / np.sin(half_fov))
    up = _UP[sampling.up_axis]
    Rt = np.stack([look_at_origin(camera_centre(a, e, d, sampling.up_axis), up) for a, e, d in zip(az, el, dist)])
    K = np.repeat(intrinsics(sampling.image_size)[None], v, axis=0)
    return K.astype(np.float32), Rt.astype(np.float32), np.stack([az, el, dist], axis=1)


def project(points: np.ndarray, K: np.ndarray, Rt: np.ndarray) -> np.ndarray:
    """points (N, 3) normalised frame -> (N, 2) pixel coordinates (column, row) under K @ Rt."""
    cam = points @ Rt[:, :3].T + Rt[:, 3]
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def raycasting_scene(vertices: np.ndarray, faces: np.ndarray):
    """open3d's ray-casting scene (a float32 BVH) of one triangle mesh."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)))
    return scene


class MeshRenderer:
    """A ray-casting scene of one mesh, reused for all its views (building the BVH is the costly part)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, color=(0.62, 0.66, 0.72)):
        self.scene = raycasting_scene(vertices, faces)
        self.color = np.asarray(color, np.float32)

    def render(self, K: np.ndarray, Rt: np.ndarray, height: int, width: int) -> np.ndarray:
        """One RGBA view, uint8 (H, W, 4): Lambertian shading, alpha 0 where no surface is hit."""
        return self.render_many(K[None], Rt[None], height, width)[0]

    def render_many(self, K: np.ndarray, Rt: np.ndarray, height: int, width: int) -> np.ndarray:
        """Views (V, H, W, 4) uint8 for cameras K (V, 3, 3), Rt (V, 3, 4), cast as one batch of rays."""
        import open3d as o3d

        # Rays through pixel centres, built here rather than with create_rays_pinhole so the pixel
        # convention is exactly the projection's: pixel (col, row) covers [col, col+1) x [row, row+1).
        cols, rows = np.meshgrid(np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5)
        pix = np.stack([cols, rows, np.ones_like(cols)], axis=-1).reshape(-1, 3)
        R = np.asarray(Rt[:, :, :3], np.float32)
        t = np.asarray(Rt[:, :, 3], np.float32)
        dirs = (pix @ np.linalg.inv(np.asarray(K, np.float32)).transpose(0, 2, 1)) @ R  # camera -> world
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origins = -np.einsum("vji,vj->vi", R, t)
        rays = np.concatenate([np.broadcast_to(origins[:, None], dirs.shape), dirs], axis=-1)
        hit = self.scene.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays.reshape(-1, 6))))
        mask = np.isfinite(hit["t_hit"].numpy())
        view = np.repeat(np.arange(len(K)), height * width)[mask]
        normals = hit["primitive_normals"].numpy()[mask]
        d = rays.reshape(-1, 6)[mask, 3:]
        # headlight plus a key light from above-left of each camera: shape cues without a scene setup
        key = np.einsum("vji,j->vi", R, np.array([-0.4, -0.7, -0.6], np.float32))
        key /= np.linalg.norm(key, axis=-1, keepdims=True)
        head = np.abs((normals * d).sum(-1))
        side = np.clip(np.abs((normals * key[view]).sum(-1)), 0, 1)
        shade = 0.22 + 0.5 * head + 0.28 * side
        image = np.zeros((len(K) * height * width, 4), np.uint8)
        image[mask, :3] = np.clip(shade[:, None] * self.color * 255.0, 0, 255).astype(np.uint8)
        image[mask, 3] = 255
        return image.reshape(len(K), height, width, 4)


def render_rgba(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rt: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """Render one view of a mesh (normalised frame) with an OpenCV camera: uint8 (H, W, 4), RGBA."""
    return MeshRenderer(vertices, faces).render(K, Rt, height, width)


def render_views(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rt: np.ndarray,
                 image_size: int) -> np.ndarray:
    """All views of one object: uint8 (V, S, S, 4)."""
    return MeshRenderer(vertices, faces).render_many(K, Rt, image_size, image_size)
