"""Cameras, projection and ray casting: the one geometry module that preprocess, training data, evaluation and
reconstruct all use, so a stored view, a projected point and a rendered silhouette follow one convention.

Frames: points in the normalised frame (unit cube); K (3, 3) in pixels (u = column, v = row); Rt (3, 4) maps
the normalised frame to OpenCV camera coordinates (x right, y down, z forward); pixel (col, row) covers
[col, col+1) x [row, row+1). The camera model is 3D-R2N2's (docs/METHOD.md, "3D-R2N2 renderings: the
camera"): Blender's default 35 mm lens on a 32 mm sensor, principal point at the image centre.
"""

from __future__ import annotations

import itertools

import numpy as np

from common.threads import library_threads
from pipeline.stages.normalize import used_vertices

# open3d and scipy are imported where a scene is built or a hull computed: heavy, and most importers (the trainer,
# the camera maths) use neither
R2N2_FOCAL_FRACTION = 35.0 / 32.0  # focal length / image width of Blender's default camera
R2N2_DISTANCE_SCALE = 1.75
GREY_BLUE = (0.62, 0.66, 0.72)  # the renderer's default colour (ground truth in pictures)
VIEW_GREY = (0.67, 0.67, 0.67)  # the stored views' colour: equal channels, which the store compresses to one


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


def scale_intrinsics(K: np.ndarray, factor: float) -> np.ndarray:
    """K (3, 3) of an image -> K of the same camera at `factor` times the pixel count per side.

    The renderer's pixel (col, row) covers [col, col+1) x [row, row+1), so pixel coordinates scale exactly.
    """
    K = np.array(K, np.float64)
    K[:2] *= factor
    return K


def render_mesh(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rt: np.ndarray, height: int,
                width: int, color=GREY_BLUE) -> np.ndarray:
    """One view of a mesh (normalised frame): uint8 (H, W, 4) RGBA; an empty mesh: a transparent image."""
    if len(faces) == 0:
        return np.zeros((height, width, 4), np.uint8)
    return MeshRenderer(vertices, faces, color=color).render(K, Rt, height, width)


def silhouettes(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rt: np.ndarray, height: int,
                width: int) -> np.ndarray:
    """Silhouettes (alpha > 0) of a mesh from several cameras: K (V, 3, 3), Rt (V, 3, 4) -> (V, H, W) bool."""
    if len(faces) == 0:
        return np.zeros((len(K), height, width), bool)
    # all views in one batch of rays, bounded by the box: the hull of a 256^3 marching-cubes mesh (200k+ vertices)
    # cost more than casting every pixel of its box
    return MeshRenderer(vertices, faces, outline="box").render_many(K, Rt, height, width)[..., 3] > 0


def picture_views(Rt: np.ndarray, input_view: int, count: int = 4) -> list[int]:
    """The input view, then views chosen one by one as far (in angle about the object's centre) from every view
    already chosen as the stored cameras allow: Rt (V, 3, 4) world -> camera. The views of the eval's pictures and
    of training's TensorBoard pictures: where a single-view prediction shows what it lost."""
    R, t = np.asarray(Rt, np.float64)[:, :, :3], np.asarray(Rt, np.float64)[:, :, 3]
    centres = -np.einsum("vji,vj->vi", R, t)  # camera centres in the normalised frame: -R^T t
    directions = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    chosen = [input_view]
    while len(chosen) < min(count, len(Rt)):
        closest = (directions @ directions[chosen].T).max(axis=1)  # cosine to the nearest chosen view
        closest[chosen] = np.inf
        chosen.append(int(np.argmin(closest)))
    return chosen


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
    """A ray-casting scene of one mesh, reused for all its views (building the BVH is the costly part).

    Rays are cast only through the pixels whose centre lies in the bounding rectangle of the mesh's projected
    convex hull (a part fills ~12% of a 137 px R2N2 frame, its rectangle ~25%): a pixel outside it cannot see
    the mesh, so the image is the same as from casting every pixel, ~3x faster. Shading is a directional head
    light along the optical axis plus a key light from above-left of the camera: flat facets come out flat,
    which also makes the stored views compress 2x better than per-pixel ray directions did.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, color=GREY_BLUE, outline: str = "hull"):
        """outline: what bounds the rays cast, "hull" (the convex hull's vertices: fewest rays) or "box" (the 8
        corners of the bounding box: more rays, no hull to compute; the image is the same either way)."""
        self.scene = raycasting_scene(vertices, faces)
        self.color = np.asarray(color, np.float32)
        if outline not in ("hull", "box"):
            raise ValueError(f"outline must be 'hull' or 'box', got {outline!r}")
        used = np.asarray(vertices, np.float64)[used_vertices(len(vertices), faces)]
        if outline == "hull":
            self.outline = _hull_points(used)
        elif len(used):  # the 8 corners of the bounding box
            self.outline = np.array(list(itertools.product(*zip(used.min(axis=0), used.max(axis=0)))))
        else:
            self.outline = used

    def render(self, K: np.ndarray, Rt: np.ndarray, height: int, width: int) -> np.ndarray:
        """One RGBA view, uint8 (H, W, 4): Lambertian shading, alpha 0 where no surface is hit."""
        return self.render_many(K[None], Rt[None], height, width)[0]

    def pixel_boxes(self, K: np.ndarray, Rt: np.ndarray, height: int, width: int) -> np.ndarray:
        """(V, 4) int [col0, col1, row0, row1) per view: the pixels whose centre ray may hit the mesh."""
        boxes = np.tile(np.array([0, width, 0, height]), (len(K), 1))
        for v in range(len(K)):
            cam = self.outline @ np.asarray(Rt[v, :, :3], np.float64).T + np.asarray(Rt[v, :, 3], np.float64)
            if len(cam) == 0 or cam[:, 2].min() <= 1e-9:  # the camera sits in the hull: cast every pixel
                continue
            uv = (cam @ np.asarray(K[v], np.float64).T)[:, :2] / cam[:, 2:3]
            lo, hi = uv.min(axis=0), uv.max(axis=0)
            # pixel centres c + 0.5 in [lo, hi], one pixel of slack for float32 ray rounding
            c0, r0 = np.floor(lo - 0.5).astype(int) - 1
            c1, r1 = np.ceil(hi - 0.5).astype(int) + 2
            boxes[v] = [min(max(c0, 0), width), min(max(c1, 0), width), min(max(r0, 0), height),
                        min(max(r1, 0), height)]
        return boxes

    def render_many(self, K: np.ndarray, Rt: np.ndarray, height: int, width: int) -> np.ndarray:
        """Views (V, H, W, 4) uint8 for cameras K (V, 3, 3), Rt (V, 3, 4), cast as one batch of rays."""
        import open3d as o3d

        R = np.asarray(Rt[:, :, :3], np.float32)
        t = np.asarray(Rt[:, :, 3], np.float32)
        K_inv = np.linalg.inv(np.asarray(K, np.float32))
        image = np.zeros((len(K), height, width, 4), np.uint8)
        boxes = self.pixel_boxes(K, Rt, height, width)
        sizes = np.maximum(boxes[:, 1] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 2], 0)
        if not sizes.any():
            return image
        # Rays through pixel centres, built here rather than with create_rays_pinhole so the pixel convention is
        # exactly the projection's: pixel (col, row) covers [col, col+1) x [row, row+1). float32 throughout, views
        # one after the other in one preallocated batch.
        rays = np.empty((int(sizes.sum()), 6), np.float32)
        flat = np.empty(len(rays), np.int64)
        start = 0
        for v, (c0, c1, r0, _) in enumerate(boxes):
            n = int(sizes[v])
            if n == 0:
                continue
            rows, cols = np.divmod(np.arange(n, dtype=np.int64), c1 - c0)
            rows += r0
            cols += c0
            pix = np.empty((n, 3), np.float32)
            pix[:, 0] = cols + np.float32(0.5)
            pix[:, 1] = rows + np.float32(0.5)
            pix[:, 2] = 1.0
            rays[start:start + n, :3] = -R[v].T @ t[v]
            rays[start:start + n, 3:] = (pix @ K_inv[v].T) @ R[v]  # camera -> world
            flat[start:start + n] = (v * height + rows) * width + cols
            start += n
        d = rays[:, 3:]
        d /= np.sqrt(np.einsum("ij,ij->i", d, d))[:, None]
        hit = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=library_threads())
        mask = np.isfinite(hit["t_hit"].numpy())
        flat_hit = flat[mask]
        normals = hit["primitive_normals"].numpy()[mask]
        # a head light along each camera's optical axis plus a key light from above-left of it: shape cues
        # without a scene setup. Hits come view after view, so each view's lights apply to one slice.
        forward = R[:, 2]
        key = np.einsum("vji,j->vi", R, np.array([-0.4, -0.7, -0.6], np.float32))
        key /= np.linalg.norm(key, axis=-1, keepdims=True)
        ends = np.cumsum(np.bincount(flat_hit // (height * width), minlength=len(K)))
        head = np.empty(len(normals), np.float32)
        side = np.empty(len(normals), np.float32)
        for v in range(len(K)):
            lo, hi = (ends[v - 1] if v else 0), ends[v]
            head[lo:hi] = normals[lo:hi] @ forward[v]
            side[lo:hi] = normals[lo:hi] @ key[v]
        shade = 0.22 + 0.5 * np.abs(head) + 0.28 * np.clip(np.abs(side), 0, 1)
        rgb = np.clip(shade[:, None] * self.color * 255.0, 0, 255).astype(np.uint32)
        # one little-endian uint32 per RGBA pixel: a single scatter instead of one per channel
        packed = rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16) | np.uint32(255 << 24)
        image.reshape(-1).view("<u4")[flat_hit] = packed
        return image


def _hull_points(points: np.ndarray) -> np.ndarray:
    """The vertices of the convex hull of points (N, 3), or all of them where the hull is degenerate (a flat
    part): their projection bounds the projection of everything the points span."""
    if len(points) < 5:
        return points
    from scipy.spatial import ConvexHull, QhullError

    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return points


