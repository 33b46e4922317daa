"""Framing: a photo cropped and scaled so its object fills the view as the training views' objects fill
theirs, and the canonical camera that looks at it.

Framing: the training store's median fill (larger side of the silhouette's bbox / image side), median camera
distance |t| (normalised units) and view size S (px), measured on the store or the demo store's defaults.
frame_object: photo + ObjectMask -> an RGBA (S, S, 4) view with the object's bbox centred. canonical_camera:
K (3, 3) = R2N2's intrinsics for S x S, Rt (3, 4) = [R0 | (0, 0, d0)], R0 = diag(1, -1, -1), which maps the
output frame (x right, y up, z to the viewer, centred on the object) to OpenCV camera axes; to_output_frame
puts normalised-frame points of a stored view with rotation R_true into it (R0^T R_true p).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.cameras import intrinsics
from reconstruct.segmentation import ObjectMask

log = logging.getLogger(__name__)

# Framing of the demo store's views (data/industrial-demo, all 384 views, measured): the larger side of the
# silhouette's bounding box is 0.59 of the image side at the median (5-95%: 0.41-0.80) and the median camera
# distance |t| is 1.85. Used when the training store is not at hand.
DEFAULT_FILL = 0.59
DEFAULT_DISTANCE = 1.85
DEFAULT_VIEW_SIZE = 137  # R2N2's view size, which the stores keep

R0 = np.diag([1.0, -1.0, -1.0])  # output frame (x right, y up, z to the viewer) -> OpenCV camera axes


@dataclass(frozen=True)
class Framing:
    """How the training views frame their objects: fill = larger silhouette bbox side / image side (median),
    distance = median camera distance |t| (normalised units), image_size = side of the stored views (px),
    source = the store it was measured on, or "default" (the demo store's figures), greyscale = every measured
    view has R = G = B (IM-NET's views): photos are then turned grey the same way before the network sees them."""

    fill: float = DEFAULT_FILL
    distance: float = DEFAULT_DISTANCE
    image_size: int = DEFAULT_VIEW_SIZE
    source: str = "default"
    greyscale: bool = False


@dataclass
class FramedView:
    """The network's input made from a photo.

    rgba: uint8 (S, S, 4), transparent background; crop: (x0, y0, side) of the square the view covers, in
    photo pixels (pixel (col, row) covers [col, col+1) x [row, row+1)); bbox: (col0, row0, col1, row1)
    of the object's mask in the photo, end-exclusive; touches_border: the mask reaches the photo's edge,
    so the object may be cut off.
    """

    rgba: np.ndarray
    crop: tuple[float, float, float]
    bbox: tuple[int, int, int, int]
    touches_border: bool


def framing_from_store(store, max_objects: int = 64) -> Framing:
    """Measure a store's framing on the views of up to `max_objects` of its objects (evenly spread over the
    store; every split's views are drawn alike, so all count).

    store: a pipeline.schema.Store. fill: median over views of (larger side of the alpha > 0 bbox) / image
    side; distance: median |t| of the views' Rt. Raises ValueError when the store has no usable view.
    """
    ids = list(store.object_ids)
    picked = [ids[int(i)] for i in np.unique(np.linspace(0, len(ids) - 1, min(max_objects, len(ids))).round())]
    fills, distances, sizes = [], [], set()
    greyscale = True
    for object_id in picked:
        views = store.load(object_id, ["images", "Rt"])
        for image, rt in zip(views["images"], views["Rt"], strict=True):
            greyscale = greyscale and bool((image[..., 0] == image[..., 1]).all() and
                                           (image[..., 1] == image[..., 2]).all())
            if image.shape[-1] != 4:
                continue  # a view without alpha (a shipped photo) has no silhouette to measure
            rows, cols = np.nonzero(image[..., 3] > 0)
            if len(rows) == 0:
                continue
            side = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
            fills.append(side / max(image.shape[:2]))
            distances.append(float(np.linalg.norm(np.asarray(rt, np.float64)[:, 3])))
            sizes.add(int(image.shape[0]))
    if not fills:
        raise ValueError(f"{store.path}: no RGBA view to measure the framing on")
    framing = Framing(float(np.median(fills)), float(np.median(distances)), max(sizes), str(store.path), greyscale)
    log.info("framing measured on %d views of %s: fill %.3f (5-95%%: %.2f-%.2f), distance %.3f, %d px%s",
             len(fills), store.path, framing.fill, *np.percentile(fills, [5, 95]), framing.distance,
             framing.image_size, ", greyscale views" if greyscale else "")
    return framing


def frame_object(image: np.ndarray, found: ObjectMask, fill: float, size: int) -> FramedView:
    """Crop and scale a photo so the object's bbox is centred and its larger side is `fill` of the side.

    image: uint8 (H, W, 3|4); found: its ObjectMask; size: side S of the framed view (px). Returns an RGBA
    view with the background transparent. Colour is resampled premultiplied by alpha (antialiased), so
    compositing the result on white (prepare_view) equals resampling the photo composited on white.
    Where the square reaches beyond the photo it is transparent.
    """
    from PIL import Image

    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill}")
    rows, cols = np.nonzero(found.mask)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    side = max(r1 - r0, c1 - c0) / fill
    x0, y0 = (c0 + c1) / 2 - side / 2, (r0 + r1) / 2 - side / 2
    h, w = found.mask.shape
    pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 1
    alpha = found.alpha.astype(np.float32) / 255.0
    channels = [image[..., c].astype(np.float32) * alpha for c in range(3)] + [alpha * 255.0]
    box = (x0 + pad, y0 + pad, x0 + pad + side, y0 + pad + side)
    out = []
    for channel in channels:
        padded = np.pad(channel, pad)
        resized = Image.fromarray(padded, mode="F").resize((size, size), Image.Resampling.BILINEAR, box=box)
        out.append(np.asarray(resized, np.float32))
    a = np.clip(out[3], 0.0, 255.0)
    rgb = np.stack(out[:3], axis=-1) / np.maximum(a[..., None] / 255.0, 1e-6)
    rgba = np.concatenate([np.clip(rgb, 0, 255), a[..., None]], axis=-1)
    rgba[a < 0.5] = 0
    touches = r0 == 0 or c0 == 0 or r1 == h or c1 == w
    return FramedView(np.rint(rgba).astype(np.uint8), (float(x0), float(y0), float(side)), (c0, r0, c1, r1),
                      bool(touches))


# ---- the canonical camera --------------------------------------------------------------------------------


def canonical_camera(size: int, distance: float = DEFAULT_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """K (3, 3) float32: R2N2's intrinsics for an S x S image; Rt (3, 4) float32 = [R0 | (0, 0, distance)].

    The camera sits at (0, 0, distance) of the output frame looking down -z, image x to the right and image
    y down (= output y up); the output frame's origin projects to the image centre.
    """
    Rt = np.concatenate([R0, [[0.0], [0.0], [float(distance)]]], axis=1)
    return intrinsics(size).astype(np.float32), Rt.astype(np.float32)


def to_output_frame(points: np.ndarray, Rt_true: np.ndarray) -> np.ndarray:
    """Normalised-frame points (N, 3) -> the output frame of a photo taken by the camera Rt_true (3, 4):
    R0^T R_true p (rotation only: the output frame is centred on the object as the normalised frame is)."""
    R = np.asarray(Rt_true, np.float64)[:, :3]
    return (np.asarray(points, np.float64) @ (R0.T @ R).T).astype(np.float32)
