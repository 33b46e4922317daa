"""From one photo to a mesh: find the object, frame it as the training views were framed, reconstruct it
through a canonical camera (docs/RECONSTRUCT.md).

A photo has no known camera. The network does not need one: its decoder sees a query point in the CAMERA's
axes (R p, centred on the object; trainer.models.network), and the feature it samples depends only on where
the point lands in the image. So a photo is cropped and scaled until the object fills the frame as in the
rendered training views, and then predicted through the canonical camera

    K = R2N2's intrinsics for the S x S framed image,   Rt0 = [R0 | t0],  R0 = diag(1, -1, -1),  t0 = (0, 0, d0)

with d0 the training views' median camera distance. The decoder then sees R0 q for an output-frame point q:
exactly the camera-frame points it was trained on. The output frame is "as seen in the photo": x right,
y up, z towards the viewer, centred on the object, in (approximately) the normalised frame's scale. For a
stored view with rotation R_true, the object appears there as R0^T R_true p (p in the normalised frame).

The functions here are pure (arrays in, arrays out); evaluation.reconstruct_cli reads files and writes
meshes, previews and metadata.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from common.errors import first_line
from inference.extract_mesh import BOX_HALF, THRESHOLD, Extraction, extract_mesh
from pipeline.cameras import intrinsics

log = logging.getLogger(__name__)

RECONSTRUCT_VERSION = "1"  # bump when the framing, camera or extraction of `aps reconstruct` changes

# Framing of the demo store's views (data/industrial-demo, all 384 views, measured): the larger side of the
# silhouette's bounding box is 0.59 of the image side at the median (5-95%: 0.41-0.80) and the median camera
# distance |t| is 1.85. Used when the training store is not at hand.
DEFAULT_FILL = 0.59
DEFAULT_DISTANCE = 1.85
DEFAULT_VIEW_SIZE = 137  # R2N2's view size, which the stores keep

R0 = np.diag([1.0, -1.0, -1.0])  # output frame (x right, y up, z to the viewer) -> OpenCV camera axes

# A rotated unit-cube object reaches sqrt(3)/2 = 0.87 from its centre in the output frame, beyond the
# extraction box [-0.55, 0.55]^3: extract in [-EXTRACT_HALF, EXTRACT_HALF]^3 by scaling the field.
EXTRACT_HALF = 0.9

# Finding the object on a plain background (docs/RECONSTRUCT.md, "Finding the object")
BORDER_FRACTION = 0.02  # width of the border strip that models the background, fraction of the shorter side
MIN_CONTRAST = 20.0  # smallest colour distance (0-255 RGB, Euclidean) that counts as "not background"
DENOISE_SIGMA = 1.0  # Gaussian smoothing (px) before the colour distance, on noisy backgrounds only
NOISE_MADS = 6.0  # threshold = median border distance + NOISE_MADS robust standard deviations
KEEP_COMPONENT = 0.1  # keep connected components at least this fraction of the largest (multi-part objects)
MIN_OBJECT_FRACTION = 0.0005  # a mask smaller than this fraction of the image is no object
MAX_OBJECT_FRACTION = 0.9  # a mask larger than this is the background leaking in, not an object
TRANSPARENT_FRACTION = 0.01  # RGBA with at least this fraction of transparent pixels: the alpha is the mask

# Largest image decoded at full size (width x height, pixels). Reconstruction holds ~50 bytes per pixel at its
# peak (float copies for the background model and the framing), so this bounds it to a few GB; larger JPEGs
# are decoded at 1/2, 1/4 or 1/8 scale to fit, anything else is refused from its header (docs/RECONSTRUCT.md).
MAX_PIXELS = 50_000_000


class NoObjectFound(ValueError):
    """The image holds no object that can be told from its background."""


class ImageTooLarge(ValueError):
    """An image above MAX_PIXELS that cannot be reduced while decoding (anything but a JPEG)."""


@dataclass
class ObjectMask:
    """Where the object is in a photo.

    alpha: uint8 (H, W) opacity used for the network input (soft edges kept from an RGBA input);
    mask: bool (H, W) the object's pixels; method: "alpha" or "background" (border colour model);
    background: the median border colour (RGB 0-255) or None; threshold: colour distance used or None.
    """

    alpha: np.ndarray
    mask: np.ndarray
    method: str
    background: tuple[float, float, float] | None
    threshold: float | None

    @property
    def area(self) -> int:
        return int(self.mask.sum())


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


@dataclass
class Reconstruction:
    """One photo's result: mesh vertices (V, 3) float32 in the output frame (x right, y up, z to the viewer,
    normalised scale), faces (F, 3) int64, and what was made on the way."""

    vertices: np.ndarray
    faces: np.ndarray
    object_mask: ObjectMask
    framed: FramedView
    K: np.ndarray
    Rt: np.ndarray
    extraction: Extraction
    seconds: float


# ---- reading -----------------------------------------------------------------------------------------
def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """A photo as uint8 (H, W, 3) or (H, W, 4) (RGBA kept where the file has transparency), and the factor
    (1, 2, 4 or 8) by which it was reduced while decoding.

    The size is read from the header before anything is decoded: an image of more than `max_pixels` pixels is
    refused (ValueError naming the file and the limit), except a JPEG, which libjpeg decodes at 1/2, 1/4 or
    1/8 scale (Pillow's draft mode) to the largest size within the limit; memory stays bounded by the limit.
    EXIF orientation is applied (phone photos are stored sideways). Raises ValueError naming the file when it
    is not an image PIL can read.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    limit = f"the limit of {max_pixels / 1e6:g} megapixels (evaluation.reconstruct.MAX_PIXELS)"
    # Pillow's own check warns above MAX_IMAGE_PIXELS and refuses twice that at open; ours (below) is stricter,
    # but a JPEG up to 64 x ours is decoded at 1/8 scale, so Pillow's refusal moves up to there while we read
    bomb_limit = Image.MAX_IMAGE_PIXELS
    if bomb_limit is not None:
        Image.MAX_IMAGE_PIXELS = max(bomb_limit, 32 * max_pixels)
    try:
        with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning), \
                Image.open(path) as im:
            w, h = im.size
            factor = 1
            if w * h > max_pixels and im.format in ("JPEG", "MPO"):
                k = next((k for k in (2, 4, 8) if math.ceil(w / k) * math.ceil(h / k) <= max_pixels), 8)
                im.draft(None, (max(1, w // k), max(1, h // k)))  # libjpeg scales by 1/k: ceil(w / k) x ceil(h / k)
                factor = round(w / im.size[0])
            if im.size[0] * im.size[1] > max_pixels:
                how = (" even decoded at 1/8 scale" if factor > 1 else "" if im.format in ("JPEG", "MPO") else
                       "; only JPEGs are reduced while decoding")
                raise ImageTooLarge(f"{path}: {im.format or 'image'} of {w} x {h} px ({w * h / 1e6:.0f} MP) is "
                                    f"above {limit}{how}; downscale it first")
            if factor > 1:
                log.info("%s: %d x %d px (%.0f MP) decoded at 1/%d scale: %d x %d px", path, w, h, w * h / 1e6,
                         factor, *im.size)
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit/float grey: scale into 8 bits
                values = np.asarray(im, np.float64)
                values = 255.0 * values / max(float(values.max()), 1.0)
                im = Image.fromarray(values.astype(np.uint8))
            image = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), np.uint8)
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageTooLarge(f"{path}: {int(pixels.group(1)) / 1e6 if pixels else 64 * max_pixels / 1e6:.0f} MP, "
                            f"far above {limit}; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageTooLarge):
            raise
        raise ValueError(f"{path}: not an image ({type(exc).__name__}: "
                         f"{first_line(exc, 'unreadable')})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"{path}: image of {image.shape[1]} x {image.shape[0]} px is too small to reconstruct")
    return image, factor


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image of read_photo (uint8 (H, W, 3|4)), without its reduction factor."""
    return read_photo(path, max_pixels)[0]


# ---- finding the object --------------------------------------------------------------------------------
def _border(values: np.ndarray, width: int) -> np.ndarray:
    """The pixels of a border strip `width` wide, as (N, ...) rows."""
    top, bottom = values[:width], values[-width:]
    left, right = values[width:-width, :width], values[width:-width, -width:]
    return np.concatenate([a.reshape(-1, *values.shape[2:]) for a in (top, bottom, left, right)])


def _clean(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component and those at least KEEP_COMPONENT of its size (an object can show
    as several pieces, e.g. the two fingers of a gripper); fill holes."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= KEEP_COMPONENT * sizes.max()) + 1
    return ndimage.binary_fill_holes(np.isin(labels, keep))


def _background_model(rgb: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, float]:
    """rgb float32 (H, W, 3) -> (median border colour (3,), colour distance to it (H, W), threshold): the
    threshold is the border distances' median + NOISE_MADS robust standard deviations, at least MIN_CONTRAST."""
    background = np.median(_border(rgb, width), axis=0)
    distance = np.linalg.norm(rgb - background, axis=-1)
    border_distance = _border(distance, width)
    med = float(np.median(border_distance))
    mad = 1.4826 * float(np.median(np.abs(border_distance - med)))
    return background, distance, max(MIN_CONTRAST, med + NOISE_MADS * mad)


def find_object(image: np.ndarray, name: str = "image") -> ObjectMask:
    """The object's pixels in a photo: image uint8 (H, W, 3|4) -> ObjectMask.

    RGBA with transparent pixels: the alpha channel is the mask. Otherwise the background is modelled from a
    border strip: its median colour, and a colour-distance threshold of median + NOISE_MADS robust standard
    deviations (1.4826 MAD) of the border's own distances, at least MIN_CONTRAST; the largest connected
    component (and comparably large ones) with holes filled is the object. Raises NoObjectFound naming
    `name` when nothing (or everything) differs from the background.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 image (H, W, 3|4), got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if image.shape[-1] == 4 and (image[..., 3] < 128).mean() >= TRANSPARENT_FRACTION:
        from scipy import ndimage

        alpha = image[..., 3].copy()
        mask = _clean(alpha >= 128)
        # specks of the cut-out away from the object are not shown to the network; its soft edge is kept
        alpha[~ndimage.binary_dilation(mask, iterations=2)] = 0
        found = ObjectMask(alpha, mask, "alpha", None, None)
    else:
        width = max(2, int(round(BORDER_FRACTION * min(h, w))))
        rgb = image[..., :3].astype(np.float32)
        background, distance, threshold = _background_model(rgb, width)
        if threshold > MIN_CONTRAST:  # a noisy background: smooth (noise shrinks ~3x, flat colours do not)
            from scipy import ndimage

            rgb = ndimage.gaussian_filter(rgb, sigma=(DENOISE_SIGMA, DENOISE_SIGMA, 0))
            background, distance, threshold = _background_model(rgb, width)
        mask = _clean(distance > threshold)
        found = ObjectMask(np.where(mask, 255, 0).astype(np.uint8), mask, "background",
                           tuple(float(c) for c in background), threshold)
        if not mask.any():
            raise NoObjectFound(f"{name}: no object found: no pixel differs from the background colour "
                                f"{tuple(int(c) for c in background)} by more than {threshold:.0f} (largest "
                                f"difference {float(distance.max()):.0f}); the image looks blank or uniform")
    fraction = found.area / (h * w)
    if fraction < MIN_OBJECT_FRACTION:
        raise NoObjectFound(f"{name}: no object found: the only candidate covers {found.area} px "
                            f"({100 * fraction:.3f}% of the image, below {100 * MIN_OBJECT_FRACTION:.2f}%)")
    if fraction > MAX_OBJECT_FRACTION:
        raise NoObjectFound(f"{name}: the object cannot be told from the background ({found.method} mask "
                            f"covers {100 * fraction:.0f}% of the image); use a plain background or an RGBA "
                            "cut-out")
    return found


# ---- framing -------------------------------------------------------------------------------------------
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


def to_greyscale(rgba: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 -> the same with R = G = B = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, what IM-NET's views
    used); alpha kept."""
    out = np.array(rgba, copy=True)
    grey = np.rint(out[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    out[..., :3] = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    return out


def reconstruct_image(predictor, image: np.ndarray, framing: Framing = Framing(), resolution: int = 128,
                      coarse: int | None = 32, name: str = "image") -> Reconstruction:
    """One photo -> a mesh in the output frame (module docstring).

    predictor: inference.predictor.Predictor; image: uint8 (H, W, 3|4). The field is queried in the box
    [-EXTRACT_HALF, EXTRACT_HALF]^3 (extract_mesh's grid scaled by EXTRACT_HALF / BOX_HALF), so the grid
    spacing is 2 * EXTRACT_HALF / resolution output units. Raises NoObjectFound when there is no object.
    """
    t0 = time.perf_counter()
    found = find_object(image, name)
    framed = frame_object(image, found, framing.fill, framing.image_size)
    if framing.greyscale:
        framed = replace(framed, rgba=to_greyscale(framed.rgba))
    K, Rt = canonical_camera(framing.image_size, framing.distance)
    field = predictor.field(framed.rgba, K, Rt)
    k = EXTRACT_HALF / BOX_HALF

    def scaled(points: np.ndarray) -> np.ndarray:  # field'(q) = field(k q): extract_mesh's box, k times larger
        return field(points * np.float32(k))

    extraction = extract_mesh(scaled, resolution, coarse, THRESHOLD)
    vertices = (extraction.vertices * k).astype(np.float32)
    if extraction.status != "ok":
        log.warning("%s: the field never crosses %.1f: empty mesh", name, THRESHOLD)
    return Reconstruction(vertices, extraction.faces, found, framed, K, Rt, extraction,
                          time.perf_counter() - t0)


def scale_to_size(vertices: np.ndarray, size: float) -> np.ndarray:
    """Scale (about the origin) so the largest side of the bounding box is `size` (e.g. millimetres)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if len(vertices) == 0:
        return vertices
    extent = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    return (vertices * (size / max(extent, 1e-12))).astype(np.float32)


def metadata(result: Reconstruction, framing: Framing) -> dict:
    """What a reconstruction used, as JSON-able values (written beside the mesh)."""
    m, f = result.object_mask, result.framed
    return {
        "mask": {"method": m.method, "area_px": m.area, "area_fraction": m.area / m.mask.size,
                 "background_rgb": m.background, "threshold": m.threshold},
        "framing": {**asdict(framing), "crop_x0_y0_side_px": list(f.crop), "bbox_px": list(f.bbox),
                    "touches_border": f.touches_border},
        "canonical_camera": {"K": result.K.tolist(), "Rt": result.Rt.tolist(),
                             "frame": "x right, y up, z towards the viewer, centred on the object"},
        "extraction": {"resolution": result.extraction.resolution, "box_half": EXTRACT_HALF,
                       "spacing": 2 * EXTRACT_HALF / result.extraction.resolution,
                       "queries": result.extraction.n_queries, "status": result.extraction.status},
        "n_vertices": len(result.vertices), "n_faces": len(result.faces),
    }


# ---- synthetic photos ------------------------------------------------------------------------------------
def photo_from_render(rgba: np.ndarray, height: int, width: int, top_left: tuple[int, int],
                      background=(205.0, 190.0, 165.0), noise: float = 8.0, seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 (height, width, 3): an RGBA render (h, w, 4) composited at top_left (row, col)
    onto a uniform background colour with Gaussian sensor noise of `noise` per channel (0-255).

    For tests and documentation: a real render of a known mesh, shown the way a photo of it on a table is.
    """
    rgba = np.asarray(rgba)
    top, left = top_left
    h, w = rgba.shape[:2]
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"a {w} x {h} render at {top_left} does not fit a {width} x {height} photo")
    rng = np.random.default_rng(seed)
    photo = rng.normal(np.asarray(background, np.float64), noise, size=(height, width, 3))
    a = rgba[..., 3:].astype(np.float64) / 255.0
    region = photo[top:top + h, left:left + w]
    photo[top:top + h, left:left + w] = rgba[..., :3] * a + region * (1 - a)
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8)


# ---- the preview -----------------------------------------------------------------------------------------
def _square_tile(image: np.ndarray, tile: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Letterbox an RGB image into a white tile x tile square -> (tile, scale, (dx, dy) offset)."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = tile / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (tile, tile), "white")
    dx, dy = (tile - nw) // 2, (tile - nh) // 2
    canvas.paste(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS), (dx, dy))
    return np.asarray(canvas), scale, (dx, dy)


def preview(image: np.ndarray, result: Reconstruction, tile: int = 256, turn_deg: float = 50.0) -> np.ndarray:
    """Strip (tile + caption, 5 tiles, 3) uint8: photo | mask used (+ the crop square) | network input |
    mesh from the photo's viewpoint (the canonical camera) | mesh turned by turn_deg about the vertical."""
    from PIL import Image, ImageDraw

    from evaluation.render import PRED_COLOR, compose_strip, rgba_on_white
    from pipeline.cameras import render_mesh, scale_intrinsics

    photo = rgba_on_white(image)
    photo_tile, scale, (dx, dy) = _square_tile(photo, tile)
    shown = photo.copy()
    shown[~result.object_mask.mask] = (0.35 * shown[~result.object_mask.mask] + 0.65 * 170).astype(np.uint8)
    mask_tile = Image.fromarray(_square_tile(shown, tile)[0])
    x0, y0, side = result.framed.crop
    ImageDraw.Draw(mask_tile).rectangle([dx + x0 * scale, dy + y0 * scale, dx + (x0 + side) * scale,
                                         dy + (y0 + side) * scale], outline=(220, 40, 40), width=2)
    size = result.framed.rgba.shape[0]
    K = scale_intrinsics(result.K, tile / size)
    front = render_mesh(result.vertices, result.faces, K, result.Rt, tile, tile, PRED_COLOR)
    a = np.radians(turn_deg)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rt_turned = np.concatenate([R0 @ turn, result.Rt[:, 3:]], axis=1)
    side_view = render_mesh(result.vertices, result.faces, K, Rt_turned, tile, tile, PRED_COLOR)
    empty = " (empty)" if len(result.faces) == 0 else ""
    return compose_strip(
        [photo_tile, np.asarray(mask_tile), rgba_on_white(result.framed.rgba), rgba_on_white(front),
         rgba_on_white(side_view)],
        ["photo", f"mask ({result.object_mask.method}) + crop", "network input",
         f"mesh, photo's view{empty}", f"mesh, turned {turn_deg:.0f} deg{empty}"], tile=tile)
