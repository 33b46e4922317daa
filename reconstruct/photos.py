"""Reading photos: a file -> uint8 (H, W, 3) RGB or (H, W, 4) RGBA, and the pixel conversions a photo needs
before the network sees it.

The size is checked from the header first (MAX_PIXELS, width x height): a JPEG above it is decoded at 1/2,
1/4 or 1/8 scale (libjpeg's draft mode), anything else is refused with one line naming the file and the limit,
so memory stays bounded whatever the file claims. EXIF orientation is applied, 16-bit and float grey scaled
into 8 bits (a float image with NaN or infinite pixels is refused, naming how many), transparency kept as
RGBA. to_greyscale turns a view grey as IM-NET's training views were.
Imports nothing of the package; only PIL and common.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path

import numpy as np

from common.errors import first_line

log = logging.getLogger(__name__)

# Largest image decoded at full size (width x height, pixels). Reconstruction holds ~50 bytes per pixel at its
# peak (float copies for the background model and the framing), so this bounds it to a few GB; larger JPEGs
# are decoded at 1/2, 1/4 or 1/8 scale to fit, anything else is refused from its header (docs/RECONSTRUCT.md).
MAX_PIXELS = 50_000_000


class PhotoError(ValueError):
    """A photo refused for a reason of its own, in one line that names the file."""


class ImageTooLarge(PhotoError):
    """An image above MAX_PIXELS that cannot be reduced while decoding (anything but a JPEG)."""


def _grey_to_8_bits(values: np.ndarray, path: Path) -> np.ndarray:
    """A 16-bit, 32-bit or float grey image (H, W) -> uint8, its largest value (or 1) at 255, negatives at 0.
    NaN or infinite pixels have no grey level: PhotoError naming how many (numpy would warn and turn the
    whole image to 0, and the object would be "not found")."""
    values = np.asarray(values, np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise PhotoError(f"{path}: {bad} of {values.size} pixels of this float image are NaN or infinite; "
                         "replace them with numbers first")
    values = np.clip(values, 0.0, None)
    return (255.0 * values / max(float(values.max()), 1.0)).astype(np.uint8)


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
    limit = f"the limit of {max_pixels / 1e6:g} megapixels (reconstruct.photos.MAX_PIXELS)"
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
                im = Image.fromarray(_grey_to_8_bits(np.asarray(im), path))
            image = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), np.uint8)
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageTooLarge(f"{path}: {int(pixels.group(1)) / 1e6 if pixels else 64 * max_pixels / 1e6:.0f} MP, "
                            f"far above {limit}; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, PhotoError):
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


def to_greyscale(rgba: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 -> the same with R = G = B = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, what IM-NET's views
    used); alpha kept."""
    out = np.array(rgba, copy=True)
    grey = np.rint(out[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    out[..., :3] = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    return out
