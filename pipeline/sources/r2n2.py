"""3D-R2N2's renderings of ShapeNet: per model, `rendering/00.png … 23.png` (137x137 RGBA) and the camera of each
view in `rendering/rendering_metadata.txt`. The convention is docs/METHOD.md, "3D-R2N2 renderings: the camera":

- a metadata line is `azimuth elevation in_plane distance_ratio 25`; the 5th number is NOT a field of view,
  the camera is Blender's default (35 mm lens, 32 mm sensor): f = 137 * 35 / 32 = 149.84 px, principal point
  at the image centre;
- the camera sits at C = 1.75 * ratio * (cos e cos a, sin e, cos e sin a) in raw ShapeNetCore v1 `model.obj`
  coordinates (y up) and looks at the origin.

We store cameras for the normalised frame, normalised = (v1 - center) / scale. With X = R v1 + t,
X = scale * (R normalised + (R center + t) / scale): the same camera up to a uniform scale of camera
coordinates, which moves no pixel. So Rt_norm = [R | (R center + t) / scale].
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cameras import R2N2_DISTANCE_SCALE, camera_centre, intrinsics, look_at_origin
from pipeline.sources.shapenet import v2_to_v1

log = logging.getLogger(__name__)

METADATA_FILE = "rendering_metadata.txt"
R2N2_N_VIEWS = 24


class ViewsError(ValueError):
    """An object's dataset views that cannot be used; the message names the file or folder."""


def parse_metadata(path: Path) -> np.ndarray:
    """rendering_metadata.txt -> (V, 5) float64: azimuth_deg, elevation_deg, in_plane_deg, distance_ratio, 25."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            values = [float(x) for x in line.split()]
        except ValueError:
            values = []
        if len(values) != 5:
            raise ViewsError(f"{path}: line {i + 1} is not 'azimuth elevation in_plane distance_ratio 25': "
                             f"{line.strip()[:60]!r}")
        rows.append(values)
    if not rows:
        raise ViewsError(f"{path}: no views listed")
    return np.asarray(rows, np.float64)


def r2n2_cameras(metadata: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cameras of R2N2 views: K (V, 3, 3) in pixels and Rt (V, 3, 4) mapping raw v1 coordinates to OpenCV
    camera coordinates (x right, y down, z forward). metadata: (V, 5) rows of rendering_metadata.txt."""
    metadata = np.asarray(metadata, np.float64)
    if np.abs(metadata[:, 2]).max() > 1e-9:
        # R2N2 never rolls its camera; the roll's sign convention is not pinned down, so refuse, not guess
        raise ViewsError(f"in-plane rotation {metadata[:, 2].max():g} deg: R2N2 files always have 0, and a "
                         "rolled camera is not supported")
    Rt = np.stack([look_at_origin(camera_centre(a, e, ratio * R2N2_DISTANCE_SCALE, "y"), np.array([0, 1.0, 0]))
                   for a, e, _, ratio, _ in metadata])
    K = np.repeat(intrinsics(image_size)[None], len(metadata), axis=0)
    return K, Rt


def to_normalised_frame(Rt: np.ndarray, scale: float, center: np.ndarray, axes: np.ndarray | None = None
                        ) -> np.ndarray:
    """Rt (..., 3, 4) of a frame `original` -> the same cameras for normalised, where original = scale * axes @
    normalised + center (axes: a rotation, identity by default)."""
    R, t = Rt[..., :3], Rt[..., 3]
    axes = np.eye(3) if axes is None else np.asarray(axes, np.float64)
    return np.concatenate([R @ axes, ((R @ np.asarray(center, np.float64)) + t)[..., None] / scale], axis=-1)


def view_files(views: dict[str, Any]) -> list[Path]:
    """Every file the views of one object are made of (for the content hash), present or not."""
    folder = Path(views["dir"])
    files = [folder / METADATA_FILE]
    n = R2N2_N_VIEWS
    if files[0].is_file():
        try:
            n = len(parse_metadata(files[0]))
        except ViewsError:
            pass
    files += [folder / f"{i:02d}.png" for i in range(n)]
    if views.get("v1_source"):
        files.append(Path(views["v1_source"]))
    return files


def read_metadata(folder: Path, n_views: int) -> np.ndarray:
    """The (V, 5) rows of a rendering folder's metadata file, checked against the manifest's views.n_views."""
    meta_path = Path(folder) / METADATA_FILE
    if not meta_path.is_file():
        raise ViewsError(f"{meta_path}: missing (the cameras of the views)")
    metadata = parse_metadata(meta_path)
    if len(metadata) != n_views:
        raise ViewsError(f"{meta_path}: {len(metadata)} views listed, the manifest expects views.n_views = {n_views}")
    return metadata


def load_rendering(folder: Path, n_views: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (V, S, S, 4) RGBA and metadata (V, 5) of one R2N2 rendering folder, checked against the
    manifest's views.n_views and views.image_size (a shard stacks the views of its objects)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ViewsError(f"{folder}: no rendering folder (this model has no 3D-R2N2 renderings)")
    metadata = read_metadata(folder, n_views)
    from PIL import Image  # here: only a dataset's own renderings are read as images

    images = np.zeros((n_views, image_size, image_size, 4), np.uint8)
    for i in range(n_views):
        png = folder / f"{i:02d}.png"
        if not png.is_file():
            raise ViewsError(f"{png}: view {i} of {n_views} is missing")
        try:
            with Image.open(png) as im:
                rgba = np.asarray(im.convert("RGBA"))
        except OSError as exc:
            raise ViewsError(f"{png}: unreadable image ({exc})") from exc
        if rgba.shape[:2] != (image_size, image_size):
            raise ViewsError(f"{png}: {rgba.shape[1]}x{rgba.shape[0]} pixels, the manifest expects "
                             f"views.image_size = {image_size}")
        images[i] = rgba
    return images, metadata


def load_r2n2_views(views: dict[str, Any], vertices: np.ndarray, faces: np.ndarray, scale: float,
                    center: np.ndarray, n_views: int, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The R2N2 views of one object with cameras for its normalised frame.

    vertices (V, 3): the normalised mesh, original = vertices * scale + center. When the mesh is not v1's
    (`views["v1_source"]` set: a ShapeNet v2 model), the v1 model places it in v1's frame first, undoing
    v2's quarter turn
    (pipeline.sources.shapenet.v2_to_v1). Returns images uint8 (V, S, S, 4), K float32 (V, 3, 3) and
    Rt float32 (V, 3, 4) with K @ Rt @ [p, 1] the pixel (column, row) of a normalised point p.
    """
    images, metadata = load_rendering(Path(views["dir"]), n_views, image_size)
    try:
        K, Rt_v1 = r2n2_cameras(metadata, image_size)
    except ViewsError as exc:
        raise ViewsError(f"{Path(views['dir']) / METADATA_FILE}: {exc}") from None
    axes = None
    if views.get("v1_source"):
        s, axes, c = v2_to_v1(vertices * scale + center, faces, views["v1_source"])
        # v1 = s Q (vertices * scale + center) + c = (s scale) Q vertices + (s Q center + c)
        scale, center = s * scale, s * axes @ np.asarray(center, np.float64) + c
    Rt = to_normalised_frame(Rt_v1, scale, center, axes)
    return images, K.astype(np.float32), Rt.astype(np.float32)
