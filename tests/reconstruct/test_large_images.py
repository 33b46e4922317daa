"""Images above MAX_PIXELS: refused from their header before anything is decoded (PNG), or decoded at a reduced
scale (JPEG); a folder run reports the file and goes on with the others."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.schema import open_store
from reconstruct.photos import load_image
from tests.reconstruct.photos import photo_from_render
from trainer.config import override, preset
from trainer.loop import run_training

APS = [sys.executable, "-c", "from aps.cli import main; main()"]
LIMIT = "above the limit of 50 megapixels (reconstruct.photos.MAX_PIXELS)"  # test_the_limit_is_... checks 50


def _disc_image(mode: str, width: int, height: int) -> Image.Image:
    """A dark disc on a light grey background: compresses to little however large."""
    im = Image.new(mode, (width, height), 230 if mode == "L" else (230, 230, 230))
    r = min(width, height) // 4
    ImageDraw.Draw(im).ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r),
                               fill=60 if mode == "L" else (60, 60, 60))
    return im


@pytest.fixture(scope="module")
def huge_png(module_tmp):
    """A real 12000 x 12000 PNG (144 MP; under 1 MB on disk, 432 MB as RGB once decoded)."""
    path = module_tmp("huge") / "huge.png"
    _disc_image("L", 12000, 12000).save(path, compress_level=1)
    assert path.stat().st_size < 2_000_000
    return path


# Run in a fresh process so its peak resident memory (ru_maxrss) tells whether the pixels were decoded.
MEASURE = """
import resource, sys, time
from reconstruct.photos import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    image = load_image(sys.argv[1])
    print("decoded", image.shape)
except ValueError as exc:
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"{time.perf_counter() - t0:.3f} {grown:.0f} {exc}")
"""


def test_a_huge_png_is_refused_from_its_header(huge_png):
    done = subprocess.run([sys.executable, "-c", MEASURE, str(huge_png)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert not done.stdout.startswith("decoded"), f"the 144 MP image was decoded: {done.stdout}"
    seconds, grown_mb, message = done.stdout.strip().split(" ", 2)
    assert message == f"{huge_png}: PNG of 12000 x 12000 px (144 MP) is {LIMIT}; only JPEGs are reduced while " \
                      "decoding; downscale it first"
    assert float(seconds) < 1.0 and float(grown_mb) < 50, f"{seconds} s, {grown_mb} MB: more than a header read"
    assert "DecompressionBombWarning" not in done.stderr


def test_a_phone_sized_jpeg_is_decoded_at_half_scale(tmp_path):
    """A 108 MP JPEG (12000 x 9000, as from a 100+ MP phone camera) -> 6000 x 4500 RGB, within the limit."""
    from reconstruct.photos import MAX_PIXELS, read_photo

    path = tmp_path / "phone.jpg"
    _disc_image("RGB", 12000, 9000).save(path, quality=90)
    image, reduced = read_photo(path)
    assert reduced == 2 and image.shape == (4500, 6000, 3) and image.dtype == np.uint8
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS
    # the same picture, only smaller: the disc (radius 2250 px in the file) in the middle, background around
    assert abs(int(image[2250, 3000, 0]) - 60) < 8 and abs(int(image[100, 100, 0]) - 230) < 8
    rows = np.flatnonzero(image[:, 3000, 0] < 145)
    assert abs(len(rows) - 2250) < 8, len(rows)


def test_the_jpeg_reduction_picks_the_smallest_factor_that_fits(tmp_path):
    from reconstruct.photos import ImageTooLarge, read_photo

    path = tmp_path / "photo.jpg"
    _disc_image("RGB", 2000, 1500).save(path)
    assert read_photo(path, max_pixels=3_000_000)[1] == 1
    image, reduced = read_photo(path, max_pixels=200_000)  # 1/2: 750 kP, too many; 1/4: 500 x 375 fits
    assert reduced == 4 and image.shape == (375, 500, 3)
    with pytest.raises(ImageTooLarge, match=r"photo.jpg: JPEG of 2000 x 1500 px \(3 MP\) is above the limit of "
                                            r"0.04 megapixels .* even decoded at 1/8 scale; downscale it first"):
        read_photo(path, max_pixels=40_000)  # 1/8: 250 x 188 = 47 kP
    assert load_image(path, max_pixels=200_000).shape == (375, 500, 3)


@pytest.fixture(scope="module")
def tiny_run(demo_store, module_tmp):
    """A one-epoch cpu-test run on the demo store: a checkpoint for the CLI to load (what it learned is not
    the point here)."""
    out = module_tmp("tiny") / "run"
    run_training(override(preset("cpu-test"), ["optim.epochs=1", "data.val_split=", "data.batch_size=2"]),
                 demo_store, out, progress=False)
    return out


def test_a_folder_run_reports_the_huge_image_and_goes_on(huge_png, tiny_run, demo_store, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "huge.png").symlink_to(huge_png)
    store = open_store(demo_store)
    view = store.load(store.split("test")[0], ["images"])["images"][0]
    Image.fromarray(photo_from_render(view, 240, 300, (50, 80))).save(folder / "part.png")
    out = tmp_path / "out"
    done = subprocess.run([*APS, "reconstruct", str(folder), "--checkpoint", str(tiny_run), "--out", str(out),
                           "--resolution", "16", "--coarse", "0", "--no-preview"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {folder / 'huge.png'}: PNG of 12000 x 12000 px (144 MP) is {LIMIT}; only JPEGs "
                      "are reduced while decoding; downscale it first"], done.stderr
    assert done.stderr.strip().splitlines()[-1] == "aps: error: 1 of 2 images failed: huge.png"
    assert "1 of 2 images reconstructed" in done.stdout
    assert (out / "part.ply").is_file() and json.loads((out / "part.json").read_text())["decoded_scale"] == 1.0
    assert "DecompressionBomb" not in done.stderr and not list(out.glob("huge.*"))


def test_the_limit_is_in_the_help_and_the_docs():
    from pathlib import Path

    from reconstruct.cli import reconstruct
    from reconstruct.photos import MAX_PIXELS

    assert LIMIT == f"above the limit of {MAX_PIXELS / 1e6:g} megapixels (reconstruct.photos.MAX_PIXELS)"
    stated = f"{MAX_PIXELS / 1e6:g} megapixels"
    assert stated in " ".join(reconstruct.__doc__.split())
    assert stated in (Path(__file__).parents[2] / "docs" / "RECONSTRUCT.md").read_text()
