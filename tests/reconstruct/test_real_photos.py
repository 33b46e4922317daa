"""`aps reconstruct` on photographs nobody here made (scikit-image's sample data, shipped in its wheel): a cup on a
wood-grain table, and a part on a backdrop with a brightness gradient and vignetting; a mask or a box from the
user; a failure that still leaves its preview; an empty mesh that is a failure; warnings on the console."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from reconstruct.photos import load_image
from reconstruct.segmentation import LOW_CONFIDENCE, NoObjectFound, find_object, object_from_mask
from trainer.checkpoint import save_checkpoint
from trainer.config import preset, to_dict
from trainer.models import build_model

APS = [sys.executable, "-c", "from aps.cli import main; main()"]
# skimage.data.coffee(): 400 x 600, a red cup and saucer on a wooden table. Points (row, col) read off the photo:
CUP = [(150, 280), (60, 200), (250, 150), (300, 380)]  # the coffee, the cup's rim, the saucer left and right
TABLE = [(30, 560), (380, 560), (380, 20), (20, 420)]  # wood in three corners, and above the cup on the right


def test_a_cup_on_a_wood_grain_table_is_found():
    photo = skimage.data.coffee()
    found = find_object(photo, "coffee.png")
    assert found.method == "grabcut"  # the wood's grain is no plain background
    assert all(found.mask[r, c] for r, c in CUP) and not any(found.mask[r, c] for r, c in TABLE)
    assert 0.3 < found.area / found.mask.size < 0.6
    assert found.confidence > 0.8  # its outline runs along the photo's edges


def test_a_brightness_gradient_and_vignetting_are_background():
    """A real photo's object (the cup, cut out by hand-free GrabCut above is not used: the coffee image's own
    pixels inside a disc) pasted on a grey backdrop that darkens by 45% to one side and in the corners."""
    h, w = 360, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    light = (1.0 - 0.45 * x / w) * (1.0 - 0.5 * (((x - w / 2) / w) ** 2 + ((y - h / 2) / h) ** 2))
    photo = np.clip(200 * light, 0, 255)[..., None].repeat(3, axis=2)
    part = skimage.data.coffee()[90:210, 200:320].astype(np.float64)  # the cup's coffee and rim
    disc = (y[:120, :120] - 60) ** 2 + (x[:120, :120] - 60) ** 2 < 55 ** 2
    region = photo[120:240, 180:300]
    region[disc] = part[disc]
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    found = find_object(photo, "backdrop.png")
    assert found.method == "background"  # the smooth field took the gradient: no need for GrabCut
    truth = np.zeros((h, w), bool)
    truth[120:240, 180:300] = disc
    assert (found.mask & truth).sum() / (found.mask | truth).sum() > 0.9


def test_a_blank_photo_is_refused_with_numbers_that_mean_what_they_say():
    with pytest.raises(NoObjectFound) as error:
        find_object(np.full((120, 160, 3), 128, np.uint8), "blank.png")
    message = str(error.value)
    assert "blank.png" in message and "blank or uniform" in message
    assert all(int(n) <= 441 for n in re.findall(r"(?<![\d(,])\d+(?![\d,)])", message.split("by more than")[1]))


def test_a_users_mask_and_a_box(tmp_path):
    photo = skimage.data.coffee()
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[100:300, 150:450] = 255
    found = object_from_mask(photo, mask, "coffee.png", "coffee.mask.png")
    assert found.method == "mask file" and found.area == 200 * 300
    with pytest.raises(ValueError, match=r"coffee.png: the mask m.png is 300 x 200 px, the photo 600 x 400"):
        object_from_mask(photo, mask[:200, :300], "coffee.png", "m.png")
    # a box around the cup alone: the saucer's far side and the table stay out
    boxed = find_object(photo, "coffee.png", box=(150, 0, 430, 250))
    assert boxed.method == "grabcut in --box" and boxed.mask[150, 280] and not boxed.mask[:, 440:].any()
    with pytest.raises(ValueError, match="not a box inside the 600 x 400 photo"):
        find_object(photo, "coffee.png", box=(0, 0, 700, 100))


@pytest.fixture(scope="module")
def empty_checkpoint(module_tmp):
    """A real checkpoint whose network says 'outside' everywhere (its output layer's bias -50)."""
    torch.manual_seed(0)
    cfg = preset("cpu-test")
    model = build_model(cfg.model, load_pretrained=False)
    with torch.no_grad():
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.fill_(-50.0)
    path = module_tmp("empty") / "empty.ckpt"
    save_checkpoint(path, {"config": to_dict(cfg), "model": model.state_dict(), "epoch": 0, "best_val_f1": 0.0})
    return path


def test_an_empty_mesh_is_a_failure_and_every_photo_gets_a_preview(empty_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.jpg", quality=92)
    Image.fromarray(np.full((100, 140, 3), 230, np.uint8)).save(photos / "blank.png")
    out = tmp_path / "out"
    done = subprocess.run([*APS, "reconstruct", str(photos), "--checkpoint", str(empty_checkpoint), "--out", str(out),
                           "--resolution", "16", "--coarse", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "aps: error: 2 of 2 images failed: blank.png, coffee.jpg"
    assert "coffee.jpg: empty mesh: the network's occupancy never reaches 0.5" in done.stderr
    assert not list(out.glob("coffee.ply")) and not list(out.glob("*.json"))  # no file that looks like a result
    # each failure leaves its preview: the cup's shows the mask that was found, the blank photo's says why
    coffee = load_image(out / "coffee.preview.png")
    assert coffee.shape[1] == 5 * (coffee.shape[0] - 18)
    blank = load_image(out / "blank.preview.png")
    assert blank.shape[1] == 2 * (blank.shape[0] - 18) and (blank[18:, blank.shape[1] // 2:, 0] > 120).any()


def test_a_part_cut_off_at_the_edge_is_warned_about(checkpoint, tmp_path):
    """The cup photo cropped through its saucer: the part runs off the left edge. (The untrained network's mesh is
    some shape; what is tested is the warning, not the mesh.)"""
    photo = tmp_path / "cup.jpg"
    Image.fromarray(skimage.data.coffee()[:, 160:]).save(photo, quality=92)
    out = tmp_path / "out"
    done = subprocess.run([*APS, "reconstruct", str(photo), "--checkpoint", str(checkpoint), "--out", str(out),
                           "--resolution", "16", "--coarse", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: cup.jpg: the object's mask reaches the photo's edge" in done.stderr
    assert "(see cup.preview.png)" in done.stderr
    info = json.loads((out / "cup.json").read_text())
    assert any("photo's edge" in w for w in info["warnings"])
    assert 0 <= info["mask"]["confidence"] <= 1 and LOW_CONFIDENCE < 1
