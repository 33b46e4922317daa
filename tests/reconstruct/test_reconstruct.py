"""The pure steps of `aps reconstruct` on images whose answer is known by construction: a disc and a rectangle
drawn at known places, a real network's decoder for the frame identity (no training needed for an identity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.cameras import project
from reconstruct.framing import R0, canonical_camera, frame_object, to_output_frame
from reconstruct.photos import load_image
from reconstruct.reconstruction import scale_to_size
from reconstruct.segmentation import NoObjectFound, find_object


def disc_photo(h=240, w=360, centre=(100.0, 230.0), radius=40.0, noise=10.0, seed=0):
    """RGB uint8 (h, w, 3): a dark-blue disc on a noisy beige background, and its true mask (row, col centre)."""
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    truth = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(seed)
    image = rng.normal([205.0, 190.0, 165.0], noise, size=(h, w, 3))
    image[truth] = rng.normal([60.0, 70.0, 110.0], noise, size=(int(truth.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_finds_a_disc_on_a_noisy_background():
    image, truth = disc_photo()
    found = find_object(image)
    assert found.method == "background"
    # noise sigma 10 per channel triggers the sigma = 1 px denoising blur, which moves a high-contrast edge
    # outwards by up to ~1.5 px: the mask must lie between the disc shrunk by 1 px and grown by 2 px
    assert not (found.mask & ~ndimage.binary_dilation(truth, iterations=2)).any()
    assert not (ndimage.binary_erosion(truth, iterations=1) & ~found.mask).any()
    assert np.allclose(found.background, [205, 190, 165], atol=3)


def test_finds_a_cutout_by_its_alpha_and_ignores_its_specks():
    image, truth = disc_photo(noise=0.0)
    rgba = np.concatenate([image, np.where(truth, 255, 0).astype(np.uint8)[..., None]], axis=-1)
    rgba[5:7, 5:7, 3] = 255  # a 4-px speck of the cut-out, far from the object
    found = find_object(rgba)
    assert found.method == "alpha" and np.array_equal(found.mask, truth)
    assert found.alpha[5:7, 5:7].max() == 0


def test_an_opaque_rgba_photo_uses_the_background_model():
    image, truth = disc_photo(noise=0.0)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    found = find_object(rgba)
    assert found.method == "background" and np.array_equal(found.mask, truth)


def test_two_pieces_are_one_object_and_holes_are_filled():
    image, _ = disc_photo(noise=0.0)
    rows, cols = np.mgrid[0:240, 0:360]
    left = (np.abs(rows - 120) < 50) & (np.abs(cols - 120) < 20)  # two fingers of a gripper, 60 px apart
    right = (np.abs(rows - 120) < 50) & (np.abs(cols - 200) < 20)
    image[:] = (205, 190, 165)
    image[left | right] = (60, 70, 110)
    image[110:115, 115:125] = (205, 190, 165)  # a highlight of background colour inside a finger
    found = find_object(image)
    assert np.array_equal(found.mask, left | right)


@pytest.mark.parametrize("make, message", [
    (lambda: np.full((120, 160, 3), 200, np.uint8), "no object found"),
    (lambda: np.random.default_rng(0).normal(128, 8, (120, 160, 3)).clip(0, 255).astype(np.uint8),
     "no object found"),
    (lambda: np.zeros((120, 160, 4), np.uint8), "no object found"),
])
def test_blank_and_uniform_images_have_no_object(make, message):
    with pytest.raises(NoObjectFound, match=f"blank.png: {message}"):
        find_object(make(), "blank.png")


def test_framing_centres_the_object_at_the_training_fill():
    image, truth = disc_photo(h=300, w=500, centre=(60.0, 400.0), radius=45.0, noise=0.0)
    framed = frame_object(image, find_object(image), fill=0.59, size=137)
    alpha = framed.rgba[..., 3]
    rows, cols = np.nonzero(alpha >= 128)
    # the disc's 90 px diameter becomes 0.59 * 137 = 80.8 px, centred at 68.5 (pixel edges), within 1 px
    assert abs((rows.max() + 1 - rows.min()) - 0.59 * 137) <= 1.5
    assert abs((cols.max() + 1 + cols.min()) / 2 - 68.5) <= 1.0 and abs((rows.max() + 1 + rows.min()) / 2 - 68.5) <= 1.0
    assert framed.bbox == (355, 15, 445, 105) and not framed.touches_border
    assert alpha[0, 0] == 0 and alpha[68, 68] == 255  # background transparent, the object opaque


def test_framing_resamples_like_the_photo_on_white():
    """prepare_view composites RGBA on white; the framed view must then equal the photo on white, resampled."""
    from PIL import Image

    image, truth = disc_photo(noise=0.0)
    image[truth] = np.array([[30, 160, 90]], np.uint8)
    framed = frame_object(image, find_object(image), fill=0.5, size=64)
    a = framed.rgba[..., 3:].astype(np.float32) / 255
    on_white = framed.rgba[..., :3] * a + 255 * (1 - a)
    x0, y0, side = framed.crop
    white = np.where(truth[..., None], image, 255).astype(np.float32)
    expected = np.stack([np.asarray(Image.fromarray(white[..., c], mode="F").resize(
        (64, 64), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))) for c in range(3)], axis=-1)
    assert np.abs(on_white - expected).max() <= 2.0  # uint8 rounding of colour and alpha


def test_canonical_camera_sees_the_output_frame_as_the_photo_does():
    K, Rt = canonical_camera(137, 1.85)
    pts = np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [0, 0, 0.3]], np.float32)
    uv = project(pts.astype(np.float64), K.astype(np.float64), Rt.astype(np.float64))
    assert np.allclose(uv[0], [68.5, 68.5])  # the object's centre at the image centre
    assert uv[1, 0] > 68.5 + 10 and abs(uv[1, 1] - 68.5) < 1e-6  # +x: to the right
    assert uv[2, 1] < 68.5 - 10 and abs(uv[2, 0] - 68.5) < 1e-6  # +y: up (rows grow downwards)
    cam = pts @ Rt[:, :3].T + Rt[:, 3]
    assert cam[3, 2] < cam[0, 2]  # +z: towards the viewer (nearer the camera)


def test_decoder_sees_the_same_points_in_the_output_frame():
    """The claim the whole command rests on: a stored view's field at p equals the canonical field at
    R0^T R_true p when the canonical camera keeps the view's translation (a real, untrained network)."""
    from trainer.config import preset
    from trainer.models import build_model

    torch.manual_seed(0)
    cfg = preset("cpu-test")
    rng = np.random.default_rng(1)
    from pipeline.cameras import camera_centre, intrinsics, look_at_origin

    Rt_true = look_at_origin(camera_centre(37.0, 28.0, 1.7, "z"), np.array([0, 0, 1.0]))
    points = rng.uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    image = torch.rand(1, 3, 32, 32)
    K = torch.as_tensor(intrinsics(32), dtype=torch.float32)[None]
    for projection in ("orthographic", "perspective"):
        cfg.model.projection = projection
        model = build_model(cfg.model, load_pretrained=False).eval()
        with torch.no_grad():
            maps = model.encode(image)
            true = model.decode(maps, torch.from_numpy(points)[None], K,
                                torch.as_tensor(Rt_true, dtype=torch.float32)[None], 32)
            Rt_canon = np.concatenate([R0, Rt_true[:, 3:]], axis=1)
            canon = model.decode(maps, torch.from_numpy(to_output_frame(points, Rt_true))[None], K,
                                 torch.as_tensor(Rt_canon, dtype=torch.float32)[None], 32)
        np.testing.assert_allclose(canon.numpy(), true.numpy(), atol=1e-4)


def test_scale_to_size():
    v = np.array([[-0.2, -0.1, 0.0], [0.3, 0.4, 0.25]], np.float32)
    scaled = scale_to_size(v, 250.0)
    assert np.isclose((scaled.max(0) - scaled.min(0)).max(), 250.0)
    with pytest.raises(ValueError, match="size must be positive"):
        scale_to_size(v, 0.0)


def test_a_size_carries_its_unit_and_glb_is_written_in_metres():
    from reconstruct.reconstruction import parse_size

    assert (parse_size("120").value, parse_size("120").unit) == (120.0, "mm")  # a bare number: millimetres
    twelve = parse_size(" 12 cm ")
    assert (twelve.value, twelve.unit, str(twelve)) == (12.0, "cm", "12 cm")
    assert twelve.unit_of("ply") == twelve.unit_of("stl") == twelve.unit_of("obj") == "cm"
    assert twelve.unit_of("glb") == "m" and twelve.value_in("m") == pytest.approx(0.12)
    assert parse_size("4.7in").value_in("mm") == pytest.approx(119.38)
    assert parse_size("0.12m").value_in("mm") == pytest.approx(120.0)
    for bad, reason in (("12ft", "not a length like 120mm"), ("mm", "not a length"), ("0mm", "must be positive"),
                        ("-3cm", "must be positive"), ("infm", "finite")):
        with pytest.raises(ValueError, match=reason):
            parse_size(bad)


def test_load_image_reads_cutouts_and_refuses_other_files(tmp_path):
    from PIL import Image

    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    palette.paste(1, (10, 10, 20, 20))
    palette.info["transparency"] = 0
    palette.save(tmp_path / "cut.png", transparency=0)
    image = load_image(tmp_path / "cut.png")
    assert image.shape == (30, 40, 4) and image[0, 0, 3] == 0 and tuple(image[15, 15]) == (10, 20, 30, 255)
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes.txt: not an image"):
        load_image(tmp_path / "notes.txt")


def test_greyscale_training_views_turn_photos_grey(demo_store):
    from pipeline.schema import open_store
    from reconstruct.framing import framing_from_store
    from reconstruct.photos import to_greyscale

    assert framing_from_store(open_store(demo_store)).greyscale  # rendered views are grey (pipeline.cameras.VIEW_GREY)
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 128], [10, 20, 30, 0]]], np.uint8)
    grey = to_greyscale(rgba)
    assert grey[0, :, 0].tolist() == [76, 150, 18] and (grey[..., 0] == grey[..., 2]).all()
    assert grey[..., 3].tolist() == rgba[..., 3].tolist()
