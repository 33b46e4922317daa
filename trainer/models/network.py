"""The whole occupancy network: image -> feature maps (E), point -> pixel (projection), [z, p] -> logit (D)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.decoder import Decoder
from trainer.models.feature_extractor import FeatureExtractor, bilinear_taps


def project(points: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor, kind: str) -> torch.Tensor:
    """Pixel position of each point: (B, N, 2) (u = column, v = row, pixel centres at integers).

    points: (B, N, 3) normalised frame; K: (B, 3, 3) intrinsics in pixels of the image the network sees;
    Rt: (B, 3, 4) normalised frame -> OpenCV camera (x right, y down, z forward).
    perspective: the exact pinhole, K @ Rt @ [p, 1]. orthographic (paper eq. 5): p' = (a X, b Y) + c
    with (X, Y) the camera-frame coordinates and a = f_x / t_z, b = f_y / t_z the image-to-space size
    ratio at the depth t_z of the object's centre (the normalised-frame origin).
    """
    cam = points @ Rt[:, :, :3].transpose(1, 2) + Rt[:, None, :, 3]  # (B, N, 3)
    if kind == "perspective":
        uvw = cam @ K.transpose(1, 2)
        return uvw[..., :2] / uvw[..., 2:].clamp(min=1e-6)
    if kind == "orthographic":
        depth = Rt[:, None, 2:3, 3].clamp(min=1e-6)  # (B, 1, 1): t_z
        scale = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)[:, None, :]  # (B, 1, 2)
        return cam[..., :2] * scale / depth + K[:, None, :2, 2]
    raise ValueError(f"unknown projection {kind!r}")


def pixels_to_grid(uv: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, 2) pixel positions in an image of side `size` -> grid_sample positions in [-1, 1]
    (align_corners=False: -1 is the outer edge of pixel 0, pixel i's centre is (2 i + 1) / size - 1)."""
    return (2.0 * uv + 1.0) / size - 1.0


@dataclass
class ImageCode:
    """What `encode` keeps of a batch of images for the decoder.

    maps: the extractor's feature maps (B, C_l, H_l, W_l); table: (B * rows, hidden), every pixel of every map
    through the decoder's first Linear's z-columns (image b's rows at b * rows + offset_l + y W_l + x).
    Sampling and that Linear are both linear, so sampling the table gives W1[:, :z_dim] z(p) exactly (up to the
    order of floating-point sums) for hidden numbers a point instead of z_dim, and the per-point product with
    W1's z-columns is done once per pixel instead (docs/EVALUATION.md, "The network on a CPU").
    """

    maps: list[torch.Tensor]
    table: torch.Tensor

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H_l, W_l) of each map."""
        return [tuple(m.shape[-2:]) for m in self.maps]

    @property
    def rows(self) -> int:
        """Rows of the table per image: the pixels of all maps."""
        return sum(h * w for h, w in self.sizes)


class OccupancyNetwork(nn.Module):
    """D(p, E(I)): logits of occupancy for query points given one image and its camera."""

    def __init__(self, extractor: str = "fpn", projection: str = "orthographic", point_frame: str = "camera",
                 fpn_channels: int = 128,
                 point_embed_dim: int = 256, decoder_hidden: int = 256, decoder_layers: int = 5,
                 leaky_slope: float = 0.2, pretrained: bool = False):
        super().__init__()
        if point_frame not in ("camera", "object"):
            raise ValueError(f"unknown point frame {point_frame!r} (camera or object)")
        self.projection = projection
        self.point_frame = point_frame
        self.feature_extractor = FeatureExtractor(extractor, fpn_channels, pretrained)
        self.decoder = Decoder(self.feature_extractor.out_channels, point_embed_dim, decoder_hidden,
                               decoder_layers, leaky_slope)

    def encode(self, images: torch.Tensor) -> ImageCode:
        """images: (B, 3, S, S) float RGB in [0, 1] -> the feature maps and the first layer's table of them
        (encode once, query often)."""
        maps = self.feature_extractor(images)
        weight, start, tables = self.decoder.first.weight, 0, []
        for m in maps:  # a 1x1 convolution of each map with its slice of W1's z-columns, channels last
            channels = m.shape[1]
            tables.append(m.flatten(2).transpose(1, 2) @ weight[:, start:start + channels].T.to(m.dtype))
            start += channels
        table = torch.cat(tables, dim=1)  # (B, rows, hidden)
        return ImageCode(maps, table.reshape(-1, table.shape[-1]))

    def decode(self, code: ImageCode, points: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor,
               image_size: int) -> torch.Tensor:
        """code from encode; points (B, N, 3) normalised frame; K (B, 3, 3) for the S x S image; Rt (B, 3, 4)
        -> logits (B, N) (occupancy probability = sigmoid)."""
        grid = pixels_to_grid(project(points, K, Rt, self.projection), image_size)
        rows, weights = bilinear_taps(code.sizes, grid)
        b, n, taps = rows.shape
        rows = rows + code.rows * torch.arange(b, device=rows.device)[:, None, None]
        z_first = F.embedding_bag(rows.reshape(b * n, taps), code.table, mode="sum",
                                  per_sample_weights=weights.reshape(b * n, taps).to(code.table.dtype))
        return self.decoder.forward_folded(z_first.reshape(b, n, -1), self._decoder_points(points, Rt))

    def decode_unfolded(self, maps: list[torch.Tensor], points: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor,
                        image_size: int) -> torch.Tensor:
        """The definition `decode` computes faster: z sampled from the maps, then the whole decoder (tests and
        benchmarks compare the two)."""
        grid = pixels_to_grid(project(points, K, Rt, self.projection), image_size)
        z = self.feature_extractor.sample(maps, grid)
        return self.decoder(z, self._decoder_points(points, Rt))

    def _decoder_points(self, points: torch.Tensor, Rt: torch.Tensor) -> torch.Tensor:
        if self.point_frame == "camera":  # the object's points in the camera's axes, still centred on the object
            return points @ Rt[:, :, :3].transpose(1, 2)
        return points

    def forward(self, images: torch.Tensor, points: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S), points (B, N, 3), K (B, 3, 3), Rt (B, 3, 4) -> logits (B, N)."""
        return self.decode(self.encode(images), points, K, Rt, images.shape[-1])


def build_model(model_cfg, load_pretrained: bool = True) -> OccupancyNetwork:
    """The network of a ModelConfig; load_pretrained=False skips fetching ImageNet weights (a checkpoint
    will overwrite them anyway)."""
    return OccupancyNetwork(
        extractor=model_cfg.extractor, projection=model_cfg.projection, point_frame=model_cfg.point_frame,
        fpn_channels=model_cfg.fpn_channels,
        point_embed_dim=model_cfg.point_embed_dim, decoder_hidden=model_cfg.decoder_hidden,
        decoder_layers=model_cfg.decoder_layers, leaky_slope=model_cfg.leaky_slope,
        pretrained=model_cfg.pretrained and load_pretrained,
    )
