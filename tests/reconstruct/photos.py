"""Synthetic photos for the reconstruct tests (and docs/RECONSTRUCT.md's README picture): a real render
pasted on a noisy table-coloured background."""

from __future__ import annotations

import numpy as np


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
