"""Pictures for the evaluation and reconstruct: point splats, strips of views, RGBA on white, PNG files.

Meshes are rendered with pipeline.cameras (open3d ray casting, OpenCV cameras K, Rt that map the normalised
frame to pixels), the same code that rendered the stored input views, so a predicted silhouette and the
stored alpha channel of the same view are directly comparable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

from common.atomic import atomic_write
from common.errors import first_line
from pipeline.cameras import GREY_BLUE, project
from pipeline.sources import load_source_mesh as load_original

log = logging.getLogger(__name__)

PRED_COLOR = (0.85, 0.55, 0.35)  # prediction in orange, ground truth in the renderer's grey-blue
GT_COLOR = GREY_BLUE


def render_points(points: np.ndarray, K: np.ndarray, Rt: np.ndarray, height: int, width: int,
                  normals: np.ndarray | None = None, radius: int = 1, color=GT_COLOR) -> np.ndarray:
    """Fallback picture of a surface given only as points: square splats, nearest point wins.

    points (N, 3) normalised frame, optional unit normals (N, 3) for headlight shading -> uint8 (H, W, 4).
    """
    points = np.asarray(points, np.float64)
    cam = points @ np.asarray(Rt, np.float64)[:, :3].T + np.asarray(Rt, np.float64)[:, 3]
    uv = project(points, np.asarray(K, np.float64), np.asarray(Rt, np.float64))
    shade = np.full(len(points), 0.8)
    if normals is not None:
        view = cam / np.linalg.norm(cam, axis=1, keepdims=True)
        n_cam = np.asarray(normals, np.float64) @ np.asarray(Rt, np.float64)[:, :3].T
        shade = 0.3 + 0.7 * np.abs(np.einsum("ij,ij->i", n_cam, view))
    image = np.zeros((height, width, 4), np.uint8)
    order = np.argsort(-cam[:, 2])  # far to near: nearer splats overwrite farther ones
    cols = np.floor(uv[order, 0]).astype(int)
    rows = np.floor(uv[order, 1]).astype(int)
    rgb = np.clip(shade[order, None] * np.asarray(color)[None] * 255, 0, 255).astype(np.uint8)
    ok = cam[order, 2] > 0
    for dr in range(-radius + 1, radius):
        for dc in range(-radius + 1, radius):
            r, c = rows + dr, cols + dc
            keep = ok & (r >= 0) & (r < height) & (c >= 0) & (c < width)
            image[r[keep], c[keep], :3] = rgb[keep]
            image[r[keep], c[keep], 3] = 255
    return image


def load_source_mesh(info: Mapping[str, str], scale: float, center: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """The geometry an object was preprocessed from, mapped into the normalised frame ((orig - center) / scale):
    vertices (V, 3) float32, faces (F, 3) int64; None (and a warning) when it cannot be read, and the caller
    draws the reference points instead.

    info: the store's record of the object (Store.info): its `source` and `extras` go through the loader
    preprocess used (pipeline.sources.load_source_mesh), so a STEP part is tessellated at the same tolerance
    and an IM-NET row gives its voxel surface.
    """
    source = info.get("source", "")
    try:
        vertices, faces = load_original(source, info.get("extras", ""))
    except Exception as exc:  # noqa: BLE001 - any reader failure means: fall back to the points
        log.warning("%s: %s; ground truth drawn from the reference points", source, first_line(exc))
        return None
    vertices = (np.asarray(vertices, np.float64) - np.asarray(center, np.float64)) / float(scale)
    return vertices.astype(np.float32), np.asarray(faces, np.int64)


def rgba_on_white(image: np.ndarray) -> np.ndarray:
    """RGB uint8 of an RGB or RGBA image, RGBA composited on white (rounded to the nearest level)."""
    image = np.asarray(image)
    if image.shape[-1] == 3:
        return image.astype(np.uint8)
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    return np.rint(image[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)


def compose_strip(images: list[np.ndarray], labels: list[str], tile: int = 256, margin: float = 0.08
                  ) -> np.ndarray:
    """Side-by-side tiles with captions: (H, W, 3) uint8.

    images: square RGB or RGBA views of one camera at any sizes (RGBA is put on white). All are brought to
    tile x tile, then cropped alike to the square around what any RGBA image shows (plus `margin`), so
    the object fills the tile and the tiles still line up pixel for pixel.
    """
    tiles = [np.asarray(Image.fromarray(np.asarray(im)).resize((tile, tile), Image.Resampling.NEAREST))
             for im in images]
    shown = [t[..., 3] > 0 for t in tiles if t.shape[-1] == 4 and (t[..., 3] > 0).any()]
    if shown:
        rows, cols = np.nonzero(np.logical_or.reduce(shown))
        centre = np.array([(rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2])
        half = min(tile / 2, max(rows.max() - rows.min(), cols.max() - cols.min()) * (0.5 + margin) + 2)
        lo = np.clip(np.round(centre - half).astype(int), 0, tile - int(2 * half))
        size = int(2 * half)
        tiles = [t[lo[0]:lo[0] + size, lo[1]:lo[1] + size] for t in tiles]
    caption = 18
    strip = Image.new("RGB", (tile * len(images), tile + caption), "white")
    draw = ImageDraw.Draw(strip)
    for i, (image, label) in enumerate(zip(tiles, labels, strict=True)):
        tile_image = Image.fromarray(rgba_on_white(image)).resize((tile, tile), Image.Resampling.LANCZOS)
        strip.paste(tile_image, (i * tile, caption))
        draw.text((i * tile + 4, 3), label, fill=(0, 0, 0))
    return np.asarray(strip)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a PNG under a temporary name and rename it."""
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp))
