"""Framing: a photo cropped and scaled so its object fills the view as the training views' objects fill
theirs, and the canonical camera that looks at it.

Framing: the training store's median fill (larger side of the silhouette's bbox / image side), median camera
distance |t| (normalised units) and view size S (px), measured on the store or the demo store's defaults;
remembered_framing measures a store once and remembers the figures until its index.json changes.
frame_object: photo + ObjectMask -> an RGBA (S, S, 4) view with the object's bbox centred. canonical_camera:
K (3, 3) = R2N2's intrinsics for S x S, Rt (3, 4) = [R0 | (0, 0, d0)], R0 = diag(1, -1, -1), which maps the
output frame (x right, y up, z to the viewer, centred on the object) to OpenCV camera axes; to_output_frame
puts normalised-frame points of a stored view with rotation R_true into it (R0^T R_true p).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
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


# framing_from_store's measurement, by version: bump it when the measurement changes, and every remembered
# framing is measured again
FRAMING_VERSION = 1
MAX_REMEMBERED_BYTES = 4096  # a remembered framing is ~300 bytes; anything larger is not one of ours


def framing_cache() -> Path:
    """Where measured framings are remembered: $APS_CACHE/framing (default ~/.cache/aps/framing)."""
    return Path(os.environ.get("APS_CACHE", Path.home() / ".cache" / "aps")).expanduser() / "framing"


def remembered_framing(store, cache: Path | None = None) -> Framing:
    """framing_from_store(store), measured once per version of the store and remembered in `cache` (default
    framing_cache()): one small JSON file per store, keyed by the store's resolved path and the inode, size and
    mtime of its index.json (its writer rewrites that file with every object it adds), and FRAMING_VERSION.
    Measuring reads the views of up to 64 objects (importing zarr for it): 0.3-0.5 s of every `aps reconstruct`
    run, for the same four figures. A remembered file that is unreadable, of another store or version, or holds
    anything but a framing is ignored and measured again; a cache that cannot be written is only logged.
    """
    cache = framing_cache() if cache is None else cache
    root = Path(store.path).resolve()
    index = (root / "index.json").stat()
    key = {"version": FRAMING_VERSION, "store": str(root), "index": [index.st_ino, index.st_size, index.st_mtime_ns]}
    path = cache / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"
    remembered = _read_remembered(path, key)
    if remembered is not None:
        log.info("framing of %s as measured before (%s): fill %.3f, distance %.3f, %d px%s", store.path, path,
                 remembered["fill"], remembered["distance"], remembered["image_size"],
                 ", greyscale views" if remembered["greyscale"] else "")
        return Framing(**remembered, source=str(store.path))
    framing = framing_from_store(store)
    figures = {k: v for k, v in asdict(framing).items() if k != "source"}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**key, "framing": figures}, allow_nan=False) + "\n")
    except (OSError, ValueError) as exc:
        log.debug("framing of %s not remembered in %s: %s", root, cache, exc)
    return framing


def _read_remembered(path: Path, key: dict) -> dict | None:
    """The framing figures (fill, distance, image_size, greyscale) remembered in `path` under `key`, or None."""
    try:
        if path.stat().st_size > MAX_REMEMBERED_BYTES:
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in key.items()):
        return None
    figures = record.get("framing")
    if not isinstance(figures, dict) or set(figures) != {"fill", "distance", "image_size", "greyscale"}:
        return None
    fill, distance, size, grey = (figures[k] for k in ("fill", "distance", "image_size", "greyscale"))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (fill, distance))
    if not (numbers and math.isfinite(fill) and math.isfinite(distance) and 0 < fill <= 1 and distance > 0
            and isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096 and isinstance(grey, bool)):
        return None
    return {"fill": float(fill), "distance": float(distance), "image_size": size, "greyscale": grey}


def frame_object(image: np.ndarray, found: ObjectMask, fill: float, size: int) -> FramedView:
    """Crop and scale a photo so the object's bbox is centred and its larger side is `fill` of the side.

    image: uint8 (H, W, 3|4); found: its ObjectMask; size: side S of the framed view (px). Returns an RGBA
    view with the background transparent. Colour is resampled premultiplied by alpha (antialiased), so
    compositing the result on white (prepare_view) equals resampling the photo composited on white.
    Where the square reaches beyond the photo it is transparent. Memory grows with the photo's pixels under
    the square, not with the square: a wide photo's square reaches far above and below it (a long part across
    16000 x 400 px: a square of 24,400 px, 3.6 GiB a channel when it was padded with zeros to resample it).
    """
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill}")
    rows, cols = np.flatnonzero(found.mask.any(axis=1)), np.flatnonzero(found.mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(r1 - r0, c1 - c0) / fill
    x0, y0 = (c0 + c1) / 2 - side / 2, (r0 + r1) / 2 - side / 2
    h, w = found.mask.shape
    across, down = _resampling(x0, side / size, size, w), _resampling(y0, side / size, size, h)
    rgba = np.zeros((size, size, 4), np.float32)
    if across and down:  # else the square misses the photo (it cannot: it holds the object's bbox)
        (a0, a1), (b0, b1) = _span(across), _span(down)  # the photo pixels under the square
        alpha = found.alpha[b0:b1, a0:a1].astype(np.float32) / 255.0
        for c in range(4):
            channel = alpha * 255.0 if c == 3 else image[b0:b1, a0:a1, c].astype(np.float32) * alpha
            rgba[..., c] = _resample(channel, across, down, a0, b0, size)
    a = np.clip(rgba[..., 3], 0.0, 255.0)
    rgb = rgba[..., :3] / np.maximum(a[..., None] / 255.0, 1e-6)
    rgba = np.concatenate([np.clip(rgb, 0, 255), a[..., None]], axis=-1)
    rgba[a < 0.5] = 0
    touches = r0 == 0 or c0 == 0 or r1 == h or c1 == w
    return FramedView(np.rint(rgba).astype(np.uint8), (float(x0), float(y0), float(side)), (c0, r0, c1, r1),
                      bool(touches))


Taps = list[tuple[int, int, int, np.ndarray]]  # (output pixel, first photo pixel, end photo pixel, weights)


def _resampling(start: float, scale: float, n_out: int, n_in: int) -> Taps:
    """The weights of PIL's antialiased bilinear resize along one axis, with the photo's pixels outside
    [0, n_in) counting as transparent zeros (they weigh in the normalisation, and hold 0).

    Output pixel k covers [start + k scale, start + (k + 1) scale) in photo pixels (PIL's `box`); it weighs
    photo pixel x by the triangle 1 - |x + 0.5 - centre| / support, support = max(scale, 1) (a photo pixel
    wide, or an output pixel when shrinking), normalised over every pixel under the triangle. Returns, for
    the output pixels that reach the photo, (k, first, end, weights (end - first,) float32)."""
    support = max(scale, 1.0)
    reach = int(np.ceil(support)) + 1
    taps = []
    for k in range(n_out):
        centre = start + (k + 0.5) * scale
        x = np.arange(int(np.floor(centre)) - reach, int(np.floor(centre)) + reach + 1)
        weights = np.clip(1.0 - np.abs(x + 0.5 - centre) / support, 0.0, None)
        weights /= weights.sum()
        first, end = max(int(x[0]), 0), min(int(x[-1]) + 1, n_in)
        if first < end:
            taps.append((k, first, end, weights[first - x[0]:end - x[0]].astype(np.float32)))
    return taps


def _span(taps: Taps) -> tuple[int, int]:
    """The photo pixels [first, end) some output pixel reads."""
    return min(t[1] for t in taps), max(t[2] for t in taps)


def _resample(channel: np.ndarray, across: Taps, down: Taps, x_first: int, y_first: int, size: int) -> np.ndarray:
    """channel: float32 (h, w), the photo's pixels from (y_first, x_first) -> (size, size) float32: each row
    resampled across, then each column down (separable, as PIL resizes); output pixels that read no photo
    pixel stay 0."""
    rows = np.zeros((channel.shape[0], size), np.float32)
    for k, first, end, weights in across:
        rows[:, k] = channel[:, first - x_first:end - x_first] @ weights
    out = np.zeros((size, size), np.float32)
    for k, first, end, weights in down:
        out[k] = weights @ rows[first - y_first:end - y_first]
    return out


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
