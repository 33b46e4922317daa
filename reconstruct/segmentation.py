"""Finding the object in a photo: uint8 (H, W, 3|4) -> ObjectMask (bool (H, W) mask, uint8 (H, W) alpha).

An RGBA cut-out with transparent pixels is its own mask. Otherwise the background is modelled from a border
strip (BORDER_FRACTION of the shorter side): its median colour, and a colour-distance threshold (0-255 RGB,
Euclidean) of median + NOISE_MADS robust standard deviations of the border's own distances; the large
connected components, holes filled, are the object. Too small or too large a mask is NoObjectFound, with the
reason (docs/RECONSTRUCT.md, "Finding the object"). Pure: arrays in, arrays out; numpy and scipy only.
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


class NoObjectFound(ValueError):
    """The image holds no object that can be told from its background."""


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
