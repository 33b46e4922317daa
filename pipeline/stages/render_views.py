"""The render stage: draw each object's views and render them headlessly on the CPU, 3D-R2N2 style.

The camera model and the ray-casting renderer are pipeline.cameras. Views follow 3D-R2N2's render script
(docs/METHOD.md, "3D-R2N2 renderings: the camera"): Blender's default 35 mm lens on a 32 mm sensor, so the
focal length is 137 * 35 / 32 = 149.84 px at 137 px, principal point at the image centre, azimuth uniform in
[0, 360), elevation in [25, 30), camera distance = ratio * 1.75 with ratio in [0.65, 0.95). R2N2's objects
have a bounding-box diagonal of about 1 (ShapeNet v1); ours have a longest side of 1, so the distance is also
multiplied by our object's diagonal to frame it as R2N2 frames its objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import inf, isfinite

import numpy as np

from pipeline.cameras import (
    R2N2_DISTANCE_SCALE,
    R2N2_FOCAL_FRACTION,
    VIEW_GREY,
    MeshRenderer,
    camera_centre,
    intrinsics,
    look_at_origin,
)

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


def render_views(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rt: np.ndarray,
                 image_size: int) -> np.ndarray:
    """All views of one object: uint8 (V, S, S, 4)."""
    return MeshRenderer(vertices, faces, color=VIEW_GREY).render_many(K, Rt, image_size, image_size)
