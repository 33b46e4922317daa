"""Finding the object in a photo: uint8 (H, W, 3|4) -> ObjectMask (bool (H, W) mask, uint8 (H, W) alpha).

An RGBA cut-out with transparent pixels is its own mask. Otherwise the background is modelled from a border
strip (BORDER_FRACTION of the shorter side): a smooth colour field fitted to it (a quadratic in x and y per
channel, so a brightness gradient or vignetting is background too), and a colour-distance threshold (0-255 RGB,
Euclidean) of median + NOISE_MADS robust standard deviations of the border's own distances; the large connected
components, holes filled, are the object. Where that model cannot separate (a textured or cluttered border: its
threshold above MAX_PLAIN_THRESHOLD, or a mask of no plausible size), OpenCV's GrabCut decides, seeded with the
border strip as background. Too small or too large a mask is NoObjectFound, with the reason; every mask carries
a confidence, how far apart the object's and the background's colours are (docs/RECONSTRUCT.md, "Finding the
object"). Pure: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Finding the object on a plain background (docs/RECONSTRUCT.md, "Finding the object")
BORDER_FRACTION = 0.02  # width of the border strip that models the background, fraction of the shorter side
MIN_CONTRAST = 20.0  # smallest colour distance (0-255 RGB, Euclidean) that counts as "not background"
DENOISE_SIGMA = 1.0  # Gaussian smoothing (px) before the colour distance, on noisy backgrounds only
NOISE_MADS = 6.0  # threshold = median border distance + NOISE_MADS robust standard deviations
KEEP_COMPONENT = 0.1  # keep connected components at least this fraction of the largest (multi-part objects)
MIN_OBJECT_FRACTION = 0.0005  # a mask smaller than this fraction of the image is no object
MAX_OBJECT_FRACTION = 0.9  # a mask larger than this is the background leaking in, not an object
TRANSPARENT_FRACTION = 0.01  # RGBA with at least this fraction of transparent pixels: the alpha is the mask
MAX_PLAIN_THRESHOLD = 60.0  # a border whose own spread needs a larger threshold is not plain: GrabCut decides
GRABCUT_SIDE = 400  # GrabCut runs on the photo shrunk to this longer side (its mask is scaled back up)
GRABCUT_ITERATIONS = 5
GRABCUT_BORDER = 0.03  # the strip GrabCut is told is background, fraction of the shorter side
LOW_CONFIDENCE = 0.35  # below this the console warns that the mask may be wrong


class NoObjectFound(ValueError):
    """The image holds no object that can be told from its background."""


@dataclass
class ObjectMask:
    """Where the object is in a photo.

    alpha: uint8 (H, W) opacity used for the network input (soft edges kept from an RGBA input);
    mask: bool (H, W) the object's pixels; method: "alpha", "background" (the border's colour model) or "grabcut";
    background: the median border colour (RGB 0-255) or None; threshold: colour distance used or None;
    confidence: in [0, 1], how well the mask's outline follows the photo's edges (mask_confidence; 1 for an
    alpha cut-out); near_border: the mask reaches the photo's edge, or for GrabCut (which is told the border
    strip is background) that strip: the object may be cut off.
    """

    alpha: np.ndarray
    mask: np.ndarray
    method: str
    background: tuple[float, float, float] | None
    threshold: float | None
    confidence: float = 1.0
    near_border: bool = False

    @property
    def area(self) -> int:
        return int(self.mask.sum())


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


def _smooth_field(rgb: np.ndarray, width: int) -> np.ndarray:
    """The background's colour at every pixel, (H, W, 3) float32: per channel the quadratic in (x, y) that fits
    the border strip best (least squares, refitted once without the 20% of border pixels farthest from the first
    fit: a part that touches the border does not bend it)."""
    h, w = rgb.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = 2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)  # (H, W, 6)
    A, b = _border(terms, width), _border(rgb, width)
    keep = np.ones(len(A), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(A[keep], b[keep], rcond=None)
        residual = np.linalg.norm(A @ coef - b, axis=1)
        keep = residual <= np.quantile(residual, 0.8)
    return (terms.reshape(-1, 6) @ coef).reshape(h, w, 3).astype(np.float32)


def _background_model(rgb: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, float]:
    """rgb float32 (H, W, 3) -> (median border colour (3,), colour distance to the smooth background field
    (H, W), threshold): the threshold is the border distances' median + NOISE_MADS robust standard deviations,
    at least MIN_CONTRAST."""
    background = np.median(_border(rgb, width), axis=0)
    distance = np.linalg.norm(rgb - _smooth_field(rgb, width), axis=-1)
    border_distance = _border(distance, width)
    med = float(np.median(border_distance))
    mad = 1.4826 * float(np.median(np.abs(border_distance - med)))
    return background, distance, max(MIN_CONTRAST, med + NOISE_MADS * mad)


def find_object(image: np.ndarray, name: str = "image", box: tuple[int, int, int, int] | None = None) -> ObjectMask:
    """The object's pixels in a photo: image uint8 (H, W, 3|4) -> ObjectMask.

    RGBA with transparent pixels: the alpha channel is the mask. Otherwise the background is modelled from a
    border strip: its median colour, and a colour-distance threshold of median + NOISE_MADS robust standard
    deviations (1.4826 MAD) of the border's own distances, at least MIN_CONTRAST; the largest connected
    component (and comparably large ones) with holes filled is the object; GrabCut where the border is not plain.
    box (x0, y0, x1, y1), photo pixels, end-exclusive: the object lies inside it; GrabCut, told that everything
    outside is background, finds it there (an alpha cut-out keeps its alpha). Raises NoObjectFound naming `name`
    when nothing (or everything) differs from the background.
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
    elif box is not None:
        x0, y0, x1, y1 = check_box(box, w, h, name)
        outside = np.ones((h, w), bool)
        outside[y0:y1, x0:x1] = False
        mask = _clean(_grabcut(image[..., :3], None, outside))
        found = ObjectMask(np.where(mask, 255, 0).astype(np.uint8), mask, "grabcut in --box", None, None,
                           mask_confidence(image, mask))
    else:
        found = _colour_mask(image[..., :3], name)
    margin = 1 if found.method != "grabcut" else int(np.ceil(GRABCUT_BORDER * min(h, w))) + 2
    m = found.mask
    found.near_border = bool(m[:margin].any() or m[-margin:].any() or m[:, :margin].any() or m[:, -margin:].any())
    fraction = found.area / (h * w)
    if fraction < MIN_OBJECT_FRACTION:
        raise NoObjectFound(f"{name}: no object found: the only candidate covers {found.area} px "
                            f"({100 * fraction:.3f}% of the image, below {100 * MIN_OBJECT_FRACTION:.2f}%)")
    if fraction > MAX_OBJECT_FRACTION:
        raise NoObjectFound(f"{name}: the object cannot be told from the background ({found.method} mask "
                            f"covers {100 * fraction:.0f}% of the image); use a plain background or an RGBA "
                            "cut-out")
    return found


def _colour_mask(image: np.ndarray, name: str) -> ObjectMask:
    """An RGB photo's object: the border's colour model where the background is plain, GrabCut where it is not."""
    h, w = image.shape[:2]
    width = max(2, int(round(BORDER_FRACTION * min(h, w))))
    rgb = image.astype(np.float32)
    background, distance, threshold = _background_model(rgb, width)
    if threshold > MIN_CONTRAST:  # a noisy background: smooth (noise shrinks ~3x, flat colours do not)
        from scipy import ndimage

        rgb = ndimage.gaussian_filter(rgb, sigma=(DENOISE_SIGMA, DENOISE_SIGMA, 0))
        background, distance, threshold = _background_model(rgb, width)
    colour = tuple(float(c) for c in background)
    if float(distance.max()) <= MIN_CONTRAST:
        raise NoObjectFound(f"{name}: no object found: no pixel differs from the background (colour "
                            f"{tuple(int(c) for c in background)} at the border) by more than {MIN_CONTRAST:.0f} "
                            f"of 441 (the largest RGB distance; here {float(distance.max()):.0f}): the image "
                            "looks blank or uniform")
    if threshold <= MAX_PLAIN_THRESHOLD:
        mask = _clean(distance > threshold)
        if MIN_OBJECT_FRACTION <= mask.mean() <= MAX_OBJECT_FRACTION:
            return ObjectMask(np.where(mask, 255, 0).astype(np.uint8), mask, "background", colour, threshold,
                              mask_confidence(image, mask))
    mask = _clean(_grabcut(image, distance > threshold if threshold <= MAX_PLAIN_THRESHOLD else None))
    return ObjectMask(np.where(mask, 255, 0).astype(np.uint8), mask, "grabcut", colour, None,
                      mask_confidence(image, mask))


def _grabcut(image: np.ndarray, likely: np.ndarray | None, outside: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): OpenCV's GrabCut on the photo shrunk to GRABCUT_SIDE, told that a border strip (or `outside`,
    bool (H, W), a user's box's outside) is background and that the rest may be object (`likely`: pixels the
    colour model found, marked as probable object and the others as probable background); its mask scaled back
    to the photo."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, GRABCUT_SIDE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    seeds = np.full(small.shape[:2], cv2.GC_PR_FGD, np.uint8)
    if likely is not None:
        shrunk = cv2.resize(likely.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        seeds[~shrunk] = cv2.GC_PR_BGD
    if outside is None:
        strip = max(2, int(round(GRABCUT_BORDER * min(small.shape[:2]))))
        seeds[:strip], seeds[-strip:], seeds[:, :strip], seeds[:, -strip:] = (cv2.GC_BGD,) * 4
    else:
        seeds[cv2.resize(outside.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)] = cv2.GC_BGD
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(small[..., ::-1].copy(), seeds, None, *models, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    found = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(found, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def mask_confidence(image: np.ndarray, mask: np.ndarray) -> float:
    """How well the mask's outline follows edges of the photo, in [0, 1]: the share of its outline pixels (away
    from the photo's border) within 2 px of a strong edge, one whose colour gradient is in the photo's top 10%.
    An outline on the object's true edges scores ~0.8-1; one cut through a textured table or across the object,
    < LOW_CONFIDENCE (docs/RECONSTRUCT.md, "Finding the object")."""
    from scipy import ndimage

    if not mask.any() or mask.all():
        return 0.0
    rgb = ndimage.gaussian_filter(image[..., :3].astype(np.float32), sigma=(1, 1, 0))
    gradient = np.sqrt(sum(ndimage.sobel(rgb, axis=a) ** 2 for a in (0, 1)).sum(-1))
    strong = ndimage.maximum_filter(gradient, size=5) >= np.quantile(gradient, 0.9)
    outline = mask & ~ndimage.binary_erosion(mask)
    outline[:2], outline[-2:], outline[:, :2], outline[:, -2:] = False, False, False, False
    if not outline.any():
        return 0.0
    return float(strong[outline].mean())


def check_box(box, width: int, height: int, name: str = "image") -> tuple[int, int, int, int]:
    """--box x0,y0,x1,y1 (photo pixels, end-exclusive) as ints inside a width x height photo, or ValueError."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"{name}: --box {x0},{y0},{x1},{y1} is not a box inside the {width} x {height} photo "
                         "(x0 < x1 <= width, y0 < y1 <= height, pixels)")
    if (x1 - x0) * (y1 - y0) >= 0.98 * width * height:
        raise ValueError(f"{name}: --box {x0},{y0},{x1},{y1} is the whole photo: it says nothing of where the "
                         "object is")
    return x0, y0, x1, y1


def object_from_mask(image: np.ndarray, user_mask: np.ndarray, name: str = "image", source: str = "--mask"
                     ) -> ObjectMask:
    """A user's mask as the object: user_mask uint8 (H, W), (H, W, 3) or (H, W, 4) of the photo's size; an RGBA
    mask's alpha, else its grey level >= 128, is the object (so a cut-out of the photo is a mask too)."""
    user_mask = np.asarray(user_mask)
    if user_mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"{name}: the mask {source} is {user_mask.shape[1]} x {user_mask.shape[0]} px, the photo "
                         f"{image.shape[1]} x {image.shape[0]}: they must be the same size")
    if user_mask.ndim == 3 and user_mask.shape[-1] == 4 and (user_mask[..., 3] < 128).any():
        on = user_mask[..., 3] >= 128
    else:
        grey = user_mask if user_mask.ndim == 2 else user_mask[..., :3].mean(axis=-1)
        on = grey >= 128
    mask = _clean(on)
    if not mask.any():
        raise NoObjectFound(f"{name}: the mask {source} marks no pixel as the object (white or opaque = object)")
    return ObjectMask(np.where(mask, 255, 0).astype(np.uint8), mask, "mask file", None, None,
                      mask_confidence(image, mask))
