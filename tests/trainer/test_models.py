"""The networks: shapes, gradients, and the two projections against the camera's own formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.models import OccupancyNetwork
from trainer.models.network import pixels_to_grid, project

SMALL = dict(fpn_channels=16, point_embed_dim=32, decoder_hidden=32)


def _camera(batch: int, size: int = 64, depth: float = 2.0):
    K = torch.tensor([[80.0, 0.0, (size - 1) / 2], [0.0, 90.0, (size - 1) / 2 + 3], [0.0, 0.0, 1.0]])
    angle = torch.tensor(0.3)
    R = torch.tensor([[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0],
                      [-torch.sin(angle), 0.0, torch.cos(angle)]])
    Rt = torch.cat([R, torch.tensor([[0.05], [-0.02], [depth]])], dim=1)
    return K.expand(batch, 3, 3), Rt.expand(batch, 3, 4)


@pytest.mark.parametrize("extractor, z_dim", [("global", 512), ("multilevel", 960), ("fpn", 64)])
def test_shapes_and_gradients(extractor, z_dim):
    torch.manual_seed(0)
    net = OccupancyNetwork(extractor, **SMALL)
    assert net.feature_extractor.out_channels == z_dim
    K, Rt = _camera(2)
    images = torch.rand(2, 3, 64, 64)
    points = torch.rand(2, 100, 3) - 0.5
    logits = net(images, points, K, Rt)
    assert logits.shape == (2, 100)
    logits.sum().backward()
    first_conv = net.feature_extractor.stem[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0, "no gradient reaches the image encoder"


def test_global_features_do_not_depend_on_the_point():
    net = OccupancyNetwork("global", **SMALL).eval()
    maps = net.feature_extractor(torch.rand(1, 3, 64, 64))
    z = net.feature_extractor.sample(maps, torch.rand(1, 7, 2) * 2 - 1)
    assert torch.allclose(z, z[:, :1].expand_as(z))


def test_local_features_follow_the_image():
    """Local extractors read z where the point projects: the same position gives the same z, another one not."""
    net = OccupancyNetwork("multilevel", **SMALL).eval()
    maps = net.feature_extractor(torch.rand(1, 3, 64, 64))
    grid = torch.tensor([[[-0.5, -0.5], [0.5, 0.5], [-0.5, -0.5]]])
    z = net.feature_extractor.sample(maps, grid)
    assert torch.allclose(z[0, 0], z[0, 2]) and not torch.allclose(z[0, 0], z[0, 1])


def test_perspective_projection_is_K_Rt():
    K, Rt = _camera(1)
    points = torch.rand(1, 50, 3) - 0.5
    homog = torch.cat([points[0], torch.ones(50, 1)], dim=1)
    uvw = (K[0] @ Rt[0] @ homog.T).T
    expected = uvw[:, :2] / uvw[:, 2:]
    assert torch.allclose(project(points, K, Rt, "perspective")[0], expected, atol=1e-4)


def test_orthographic_projection_is_exact_at_the_centre_depth_and_scaled_by_f_over_depth():
    """eq. 5: p' = (a X, b Y) + c with a = f_x / t_z: equal to the pinhole for points at the depth of the object's
    centre, and independent of depth elsewhere."""
    K, Rt = _camera(1, depth=2.5)
    R, t = Rt[0, :, :3], Rt[0, :, 3]
    cam = torch.rand(30, 3) - 0.5
    cam[:, 2] = t[2]  # camera-frame depth = depth of the centre
    points = ((cam - t) @ R)[None]  # back to the normalised frame
    ortho = project(points, K, Rt, "orthographic")
    assert torch.allclose(ortho, project(points, K, Rt, "perspective"), atol=1e-4)
    cam2 = cam.clone()
    cam2[:, 2] += 0.3
    moved = project(((cam2 - t) @ R)[None], K, Rt, "orthographic")
    assert torch.allclose(moved, ortho, atol=1e-4)
    assert torch.allclose(ortho[0, :, 0], cam[:, 0] * K[0, 0, 0] / t[2] + K[0, 0, 2], atol=1e-4)


def test_pixel_centres_sample_exactly_their_pixel():
    size = 8
    image = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    uv = torch.tensor([[[0.0, 0.0], [3.0, 5.0], [7.0, 7.0]]])
    vals = F.grid_sample(image, pixels_to_grid(uv, size)[:, :, None, :], align_corners=False)[0, 0, :, 0]
    assert vals.tolist() == [0.0, 5 * size + 3.0, 63.0]


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="feature extractor"):
        OccupancyNetwork("vit")
    K, Rt = _camera(1)
    with pytest.raises(ValueError, match="projection"):
        project(torch.zeros(1, 1, 3), K, Rt, "fisheye")


def test_pretrained_weights_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    """No internet here: --pretrained must fail with advice, not a traceback from urllib (an empty hub cache
    makes sure a cached file on a developer's machine does not hide the path)."""
    from trainer.models.feature_extractor import resnet18_backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("no_proxy", "*")
    try:
        resnet18_backbone(pretrained=True)
    except RuntimeError as exc:
        assert "--pretrained: could not load torchvision's ImageNet ResNet-18 weights" in str(exc)
    else:
        pytest.skip("this machine could download the ImageNet weights")


@pytest.mark.parametrize("extractor", ["global", "multilevel", "fpn"])
@pytest.mark.parametrize("point_frame", ["camera", "object"])
def test_decode_through_the_folded_first_layer_is_the_decoders_definition(extractor, point_frame):
    """decode samples W1's z-columns applied to the maps (ImageCode.table) instead of z: the same logits and the
    same gradients as sampling z and running the whole decoder, also for points that project off the image
    (border padding) and with batch-norm statistics that are not the identity. "The same" is measured against
    the definition in float64: the folded path in float32 is no further from it than the definition's own
    float32 path (rounding only)."""
    torch.manual_seed(0)
    net = OccupancyNetwork(extractor, point_frame=point_frame, **SMALL)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    K, Rt = _camera(2)
    images = torch.rand(2, 3, 64, 64)
    points = (torch.rand(2, 700, 3) - 0.5) * 1.6  # some fall outside the image

    def run(folded: bool, dtype: torch.dtype):
        net.to(dtype).zero_grad()
        args = (points.to(dtype), K.to(dtype), Rt.to(dtype), 64)
        code = net.encode(images.to(dtype))
        logits = net.decode(code, *args) if folded else net.decode_unfolded(code.maps, *args)
        logits.sin().sum().backward()
        grads = {n: p.grad.double() for n, p in net.named_parameters() if p.grad is not None}
        return logits.detach().double(), grads

    for mode in ("eval", "train"):
        getattr(net, mode)()
        truth, g_truth = run(False, torch.float64)
        (folded, g_folded), (plain, g_plain) = run(True, torch.float32), run(False, torch.float32)
        assert g_folded.keys() == g_plain.keys() == g_truth.keys()
        for name, want in [("logits", truth), *g_truth.items()]:
            got, plain_got = (folded, plain) if name == "logits" else (g_folded[name], g_plain[name])
            scale = want.abs().max()
            error, plain_error = (got - want).abs().max() / scale, (plain_got - want).abs().max() / scale
            assert error <= 2 * plain_error + 1e-6, (mode, name, error.item(), plain_error.item())


def test_our_resnet18_is_torchvisions_module_for_module_and_draw_for_draw():
    """trainer.models.resnet builds what torchvision.models.resnet18(weights=None) builds, without importing
    torchvision (1.1-1.8 s of every command's start-up): the same state_dict keys in the same order, so
    checkpoints and ImageNet weights load as they are; the same weights from the same seed; the same outputs."""
    from torchvision.models import resnet18

    from trainer.models.resnet import ResNet18

    torch.manual_seed(3)
    ours = ResNet18().eval()
    torch.manual_seed(3)
    theirs = resnet18(weights=None).eval()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 137, 137)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
