"""A page of ours opened in the real browser (the `chromium` fixture), with what a person would check."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


@contextmanager
def opened(chromium, path: Path, width: int = 1400, height: int = 900):
    """(page, errors): the page from its file, loaded, its first view drawn; errors collects page errors and
    console errors (a test asserts it stays empty)."""
    page = chromium.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    try:
        page.goto(path.resolve().as_uri())
        page.wait_for_function("window.apsViewer && window.apsViewer.frames > 0", timeout=20_000)
        yield page, errors
    finally:
        page.close()


def canvas_pixels(page) -> np.ndarray:
    """(H, W, 3) uint8 of the 3D view as the browser shows it (a screenshot of the canvas element)."""
    page.wait_for_timeout(150)  # the next animation frame draws what the last event changed
    return np.asarray(Image.open(io.BytesIO(page.locator("#canvas").screenshot())).convert("RGB"))


def drawn_fraction(pixels: np.ndarray) -> float:
    """Share of the pixels that are not the white background."""
    return float((pixels.min(axis=2) < 235).mean())


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 24).mean())


def drag(page, dx: float, dy: float) -> None:
    box = page.locator("#canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=8)
    page.mouse.up()


def body_column(page, index: int) -> list[str]:
    return page.eval_on_selector_all("#table tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent)")
