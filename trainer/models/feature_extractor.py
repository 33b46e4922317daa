"""Feature extractors E over a ResNet-18 backbone (paper Fig. 3): global | multilevel | fpn.

Each turns a batch of images into a list of feature maps, and `sample` reads one feature vector z per
query point from them by bilinear interpolation at the point's image position.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import first_line
from trainer.models.resnet import ResNet18

log = logging.getLogger(__name__)

RESNET18_CHANNELS = (64, 128, 256, 512)  # layer1..layer4 outputs, strides 4, 8, 16, 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet18_backbone(pretrained: bool) -> nn.Module:
    """torchvision's ResNet-18, from scratch (trainer.models.resnet: the same modules and initialisation, without
    importing torchvision) or (pretrained=True) torchvision's own, with its ImageNet weights."""
    if not pretrained:
        return ResNet18()  # torchvision's, without importing it (1.1-1.8 s: torch._dynamo comes with it)
    from torchvision.models import ResNet18_Weights, resnet18  # the ImageNet weights: only --pretrained needs them

    try:
        return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except Exception as exc:  # noqa: BLE001 - any download/cache failure gets the same advice
        raise RuntimeError(
            "--pretrained: could not load torchvision's ImageNet ResNet-18 weights "
            f"({type(exc).__name__}: {first_line(exc, '')}); "
            "this machine needs internet access or the file in the torch hub cache "
            "(~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth); or train from scratch without --pretrained"
        ) from exc


class FeatureExtractor(nn.Module):
    """E: images (B, 3, S, S) float in [0, 1] -> feature maps; `out_channels` = length of the sampled z."""

    def __init__(self, kind: str, fpn_channels: int = 256, pretrained: bool = False):
        super().__init__()
        if kind not in ("global", "multilevel", "fpn"):
            raise ValueError(f"unknown feature extractor {kind!r}")
        self.kind = kind
        net = resnet18_backbone(pretrained)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if kind == "fpn":
            # FPN (Lin et al. 2017): 1x1 lateral convs to a common width, a top-down pathway that adds the
            # upsampled coarser map, and a 3x3 conv on each sum to reduce aliasing.
            self.lateral = nn.ModuleList([nn.Conv2d(c, fpn_channels, 1) for c in RESNET18_CHANNELS])
            self.smooth = nn.ModuleList([nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1)
                                         for _ in RESNET18_CHANNELS])
            self.out_channels = 4 * fpn_channels
        elif kind == "multilevel":
            self.out_channels = sum(RESNET18_CHANNELS)
        else:
            self.out_channels = RESNET18_CHANNELS[-1]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, S, S) float RGB in [0, 1] -> maps (B, C_i, S/4 .. S/32, ...) (global: [(B, 512, 1, 1)])."""
        x = self.stem((images - self.mean) / self.std)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        if self.kind == "global":
            return [F.adaptive_avg_pool2d(maps[-1], 1)]  # Fig. 3a: one pooled vector per image
        if self.kind == "multilevel":
            return maps  # Fig. 3b: the four backbone maps as they are
        # Fig. 3c: combine the maps from the highest level down
        laterals = [conv(m) for conv, m in zip(self.lateral, maps, strict=True)]
        top_down = [laterals[-1]]
        for lat in reversed(laterals[:-1]):
            top_down.insert(0, lat + F.interpolate(top_down[0], size=lat.shape[-2:], mode="nearest"))
        return [conv(m) for conv, m in zip(self.smooth, top_down, strict=True)]

    def sample(self, maps: list[torch.Tensor], grid: torch.Tensor) -> torch.Tensor:
        """z for each point: maps from forward, grid (B, N, 2) image positions in [-1, 1] (x right, y down,
        grid_sample's align_corners=False convention, so one grid serves maps of every stride) -> (B, N, C).

        Points that project outside the image read the border features.
        """
        if self.kind == "global":
            return maps[0].flatten(1)[:, None, :].expand(-1, grid.shape[1], -1)
        g = grid[:, :, None, :].to(maps[0].dtype)  # (B, N, 1, 2)
        feats = [F.grid_sample(m, g, mode="bilinear", padding_mode="border", align_corners=False)
                 for m in maps]  # each (B, C_i, N, 1)
        return torch.cat(feats, dim=1).squeeze(-1).transpose(1, 2)


def bilinear_taps(sizes: list[tuple[int, int]], grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `FeatureExtractor.sample` reads: for maps of `sizes` [(H, W), ...] laid out one after another as
    rows of a table (map l's pixel (y, x) is row offset_l + y W_l + x), and grid (B, N, 2) as in `sample` ->
    rows (B, N, 4 L) int64 and their weights (B, N, 4 L) float32, so that sum_k weight_k row_k is, per map, what
    grid_sample(mode="bilinear", padding_mode="border", align_corners=False) reads.

    Border padding clamps the pixel position to [0, W - 1] before the four taps are taken; a tap past the edge
    then has weight 0 and is pointed at the edge pixel, so every row index is valid.
    """
    rows, weights, offset = [], [], 0
    g = grid.float()
    for height, width in sizes:
        x = (((g[..., 0] + 1) * width - 1) / 2).clamp(0, width - 1)
        y = (((g[..., 1] + 1) * height - 1) / 2).clamp(0, height - 1)
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        x0, y0 = x0.long(), y0.long()
        x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
        rows += [offset + y0 * width + x0, offset + y0 * width + x1, offset + y1 * width + x0,
                 offset + y1 * width + x1]
        weights += [(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]
        offset += height * width
    return torch.stack(rows, dim=-1), torch.stack(weights, dim=-1)
