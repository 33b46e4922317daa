"""The whole occupancy network: image -> feature maps (E), point -> pixel (projection), [z, p] -> logit (D)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.decoder import Decoder
from trainer.models.feature_extractor import FeatureExtractor


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

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, S, S) float RGB in [0, 1] -> the extractor's feature maps (encode once, query often)."""
        return self.feature_extractor(images)

    def decode(self, maps: list[torch.Tensor], points: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor,
               image_size: int) -> torch.Tensor:
        """maps from encode; points (B, N, 3) normalised frame; K (B, 3, 3) for the S x S image; Rt (B, 3, 4)
        -> logits (B, N) (occupancy probability = sigmoid)."""
        grid = pixels_to_grid(project(points, K, Rt, self.projection), image_size)
        z = self.feature_extractor.sample(maps, grid)
        if self.point_frame == "camera":  # the object's points in the camera's axes, still centred on the object
            points = points @ Rt[:, :, :3].transpose(1, 2)
        return self.decoder(z, points)

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
