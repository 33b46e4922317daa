"""`aps reconstruct` on hostile and careless input (issue 22): a wide photo's memory, a float TIFF with NaN
pixels, a --size that is not a size, grid options no extraction can make, and the photo folder given as --out.
Real image files, a real (untrained) checkpoint file, the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from aps.cli import app
from reconstruct.photos import read_photo
from tests.grid_cases import RESOLUTION_CASES, RESOLUTION_IDS

APS = [sys.executable, "-c", "from aps.cli import main; main()"]


def part_photo(path, width: int, height: int, seed: int = 0) -> None:
    """A photo of a grey part with rounded ends on a noisy beige table, filling most of the frame's width."""
    rng = np.random.default_rng(seed)
    table = np.clip(rng.normal((205, 190, 165), 6, (height, width, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(table)
    if width > 2 * height:  # a long part (a rod, a rail) across a wide photo
        box, radius = (width // 20, height * 3 // 8, width - width // 20, height * 5 // 8), height // 8
    else:
        box, radius = (width // 5, height // 5, width * 4 // 5, height * 4 // 5), width // 10
    ImageDraw.Draw(im).rounded_rectangle(box, radius=radius, fill=(70, 75, 85))
    im.save(path, compress_level=1)


def reconstruct(*args):
    """`aps reconstruct ARGS` in this process: (exit code, the exception that ended it or None)."""
    result = CliRunner().invoke(app, ["reconstruct", *map(str, args)])
    return result.exit_code, result.exception


# ---- S8: a wide photo ---------------------------------------------------------------------------------------
# Peak resident memory of reading, finding and framing one photo, in a fresh process capped at 3 GB of address
# space (framing once padded the photo to its square: 16000 x 400 px asked for 3.6 GiB a channel).
MEASURE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from reconstruct.framing import frame_object
from reconstruct.photos import read_photo
from reconstruct.segmentation import find_object
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image, _ = read_photo(sys.argv[1])
framed = frame_object(image, find_object(image, sys.argv[1]), 0.59, 137)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"{grown:.0f} {framed.crop[2]:.0f} {int(framed.rgba[..., 3].max())}")
"""


def _peak_mb(path) -> tuple[float, float, int]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-1500:]
    grown, side, alpha = done.stdout.split()
    return float(grown), float(side), int(alpha)


def test_a_wide_photo_takes_the_memory_of_its_pixels_not_of_its_longest_side(tmp_path):
    """16000 x 400 px (6.4 MP) against a square photo of as many pixels (2530 x 2530): the same memory, though
    the wide photo's square (25000 px a side) is 100 times the photo."""
    part_photo(tmp_path / "wide.png", 16000, 400)
    part_photo(tmp_path / "square.png", 2530, 2530)
    wide_mb, wide_side, wide_alpha = _peak_mb(tmp_path / "wide.png")
    square_mb, _, _ = _peak_mb(tmp_path / "square.png")
    assert wide_side > 24000 and wide_alpha > 100  # the square reaches far beyond the photo; the part is seen
    assert wide_mb <= 1.2 * square_mb + 30, f"wide {wide_mb:.0f} MB, square of as many pixels {square_mb:.0f} MB"
    assert wide_mb <= 64 * 16000 * 400 / 2**20  # the budget of reconstruct.photos.MAX_PIXELS: ~50 bytes a pixel


# ---- D7: NaN pixels ---------------------------------------------------------------------------------------
def test_a_float_tiff_with_nan_pixels_names_them_without_numpy_warnings(tmp_path):
    values = np.full((120, 160), 0.85, np.float32)
    values[40:80, 50:110] = 0.2  # a dark part on a light background
    values[3, 5] = values[7, 9] = np.nan
    values[11, 13] = np.inf
    path = tmp_path / "scan.tif"
    Image.fromarray(values, mode="F").save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" would raise here
        with pytest.raises(ValueError) as refused:
            read_photo(path)
    assert str(refused.value) == (f"{path}: 3 of 19200 pixels of this float image are NaN or infinite; replace "
                                  "them with numbers first")
    # the same image without them is read as before: values in [0, 1] at 255 times their value
    values[3, 5] = values[7, 9] = values[11, 13] = 0.85
    Image.fromarray(values, mode="F").save(path)
    image, _ = read_photo(path)
    assert image.shape == (120, 160, 3) and image[0, 0, 0] == 216 and image[60, 80, 0] == 51


# ---- S9: --size ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["inf", "1e308", "nan", "-5"])
def test_a_size_that_is_not_finite_or_overflows_is_refused_before_anything_is_written(size, checkpoint, tmp_path):
    part_photo(tmp_path / "part.png", 200, 160)
    out = tmp_path / "out"
    done = subprocess.run([*APS, "reconstruct", str(tmp_path / "part.png"), "--checkpoint", str(checkpoint),
                           "--out", str(out), "--size", size, "--resolution", "16", "--coarse", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"aps: error: --size must be positive, finite and at most 1e+12 (the object's largest side, e.g. in mm), "
        f"got {float(size)}")
    assert not out.exists()


def _strict(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_the_photo_folder_is_not_its_own_out_and_a_subfolder_is(checkpoint, tmp_path):
    """D10: `aps reconstruct DIR --out DIR` said "the folder holds no files"; the outputs written there would be
    read as photos by the next run. DIR/meshes is fine, and its JSON is strict (S9)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    part_photo(photos / "part.png", 200, 160)
    code, error = reconstruct(photos, "--checkpoint", checkpoint, "--out", photos, "--resolution", "16")
    assert code == 1 and str(error) == (
        f"{photos}: --out is the folder of the photos; the meshes, previews and .json files written there would "
        f"be read as photos by the next run: give --out another folder (e.g. {photos / 'meshes'})")
    assert sorted(p.name for p in photos.iterdir()) == ["part.png"]
    code, error = reconstruct(photos, "--checkpoint", checkpoint, "--out", photos / "meshes", "--resolution", "16",
                              "--coarse", "0", "--no-preview", "--size", "120")
    assert code == 0, error
    info = _strict((photos / "meshes" / "part.json").read_text())
    assert info["size"] == 120.0 and info["image"] == str(photos / "part.png")
    # the next run over the folder reads the photo again, not the outputs in its subfolder
    code, error = reconstruct(photos, "--checkpoint", checkpoint, "--out", photos / "meshes", "--resolution", "16",
                              "--coarse", "0", "--no-preview")
    assert code == 0, error


# ---- D8: grid and thread options ------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", RESOLUTION_CASES + [
    (["--resolution", "128", "--coarse", "-4"], "--coarse must be 0 or at least --resolution (the dense grid), or "
                                                "a grid that --resolution 128 is a power of two times (64, 32, 16, "
                                                "8, 4, 2), got -4"),
    (["--resolution", "96", "--coarse", "32"], "--coarse must be 0 or at least --resolution (the dense grid), or a "
                                               "grid that --resolution 96 is a power of two times (48, 24, 12, 6, "
                                               "3), got 32"),
    (["--threads", "0"], "--threads must be an integer >= 1, got 0"),
], ids=RESOLUTION_IDS + ["coarse-negative", "coarse-not-a-divisor",
        "threads-0"])
def test_grid_and_thread_options_no_run_can_use_are_refused_before_anything_is_written(options, message, checkpoint,
                                                                                       tmp_path):
    part_photo(tmp_path / "part.png", 200, 160)
    out = tmp_path / "out"
    code, error = reconstruct(tmp_path / "part.png", "--checkpoint", checkpoint, "--out", out, "--no-preview",
                              *options)
    assert code == 1 and str(error) == message
    assert not out.exists()
