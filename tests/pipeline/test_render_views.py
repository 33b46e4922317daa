"""Rendered views and their cameras: a surface point projected with K @ Rt lands on its silhouette."""

from __future__ import annotations

import numpy as np

from pipeline.cameras import camera_centre, intrinsics, look_at_origin, project
from pipeline.stages.render_views import ViewSampling, render_views, sample_cameras
from pipeline.stages.sample_points import sample_surface
from tests.conftest import load_normalised


def test_camera_follows_opencv_axes():
    Rt = look_at_origin(np.array([2.0, 0, 0]), np.array([0, 1.0, 0]))
    cam = Rt[:, :3] @ np.array([0, 1.0, 0]) + Rt[:, 3]  # a point above the origin
    assert cam[1] < 0, "world up must map to image up (negative y in OpenCV)"
    assert (Rt[:, :3] @ np.zeros(3) + Rt[:, 3])[2] == 2.0  # the origin is in front, at the distance
    assert np.allclose(Rt[:, :3] @ Rt[:, :3].T, np.eye(3))
    K = intrinsics(137)
    assert K[0, 0] == 137 * 35 / 32 and K[0, 2] == 68.5  # R2N2's Blender camera (docs/METHOD.md)
    assert np.allclose(camera_centre(90, 0, 1.0, "y"), [0, 0, 1.0], atol=1e-12)


def test_views_not_blank_and_points_land_on_silhouette(robosuite_meshes):
    rng = np.random.default_rng(0)
    for path in [p for ps in robosuite_meshes.values() for p in ps][:4]:
        v, f = load_normalised(path)
        diag = float(np.linalg.norm(v.max(0) - v.min(0)))
        radius = float(np.linalg.norm(v[f].reshape(-1, 3), axis=1).max())
        K, Rt, _ = sample_cameras(ViewSampling(n_views=6, up_axis="z"), diag, rng, radius)
        images = render_views(v, f, K, Rt, 137)
        assert images.shape == (6, 137, 137, 4) and images.dtype == np.uint8
        surface, _ = sample_surface(v, f, 5000, rng)
        for img, k, rt in zip(images, K, Rt):
            alpha = img[..., 3] > 0
            assert 0.03 < alpha.mean() < 0.8, f"{path.name}: object covers {alpha.mean():.3f} of the image"
            assert img[alpha, :3].std() > 5, "shading must vary over the object"
            uv = project(surface, k, rt)
            px = np.floor(uv).astype(int)
            inside_frame = ((px >= 0) & (px < 137)).all(axis=1)
            assert inside_frame.all(), "the whole object must be in the frame"
            # a boundary pixel is empty when the ray through its centre misses: allow one pixel of slack
            from scipy.ndimage import binary_dilation

            on = binary_dilation(alpha)[px[:, 1], px[:, 0]]
            assert on.mean() >= 0.99, f"{path.name}: only {on.mean():.3f} of surface points on the silhouette"
            assert alpha[px[:, 1], px[:, 0]].mean() >= 0.8  # thin parts: many boundary pixels
            rows, cols = np.nonzero(alpha)
            box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            proj_box = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
            assert np.abs(box - proj_box).max() <= 2.0
