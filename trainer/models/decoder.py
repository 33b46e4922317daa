"""Decoder D (paper §5.1): five linear layers with Leaky-ReLU and batch norm on [z, embedded p], giving the logit
of the occupancy; the paper's final sigmoid is applied by the caller (see Decoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointEmbedding(nn.Module):
    """Lifts p (3 numbers) to the width of z's parts. docs/METHOD.md ("Measured while planning"): concatenating raw p to
    a 512-d z did not learn at all; a small point MLP (as in DISN) fixed it."""

    def __init__(self, out_dim: int, slope: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, out_dim // 2), nn.LeakyReLU(slope),
                                 nn.Linear(out_dim // 2, out_dim), nn.LeakyReLU(slope))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3) normalised frame -> (B, N, out_dim)."""
        return self.net(points)


class Decoder(nn.Module):
    """D(z, p): hidden layers Linear -> Leaky-ReLU -> BatchNorm (the paper's order), a last Linear to one logit.

    The sigmoid of the paper is applied by the caller (BCE-with-logits in training, `torch.sigmoid` at
    inference) because it is numerically safer and mixed-precision friendly; the function is the same.
    """

    def __init__(self, z_dim: int, point_dim: int, hidden: int, layers: int, slope: float):
        super().__init__()
        self.embed = PointEmbedding(point_dim, slope)
        blocks: list[nn.Module] = []
        width = z_dim + point_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(slope), nn.BatchNorm1d(hidden)]
            width = hidden
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(width, 1)

    @property
    def first(self) -> nn.Linear:
        """The first Linear, W1 (hidden, z_dim + point_dim): columns [:z_dim] take z, the rest the embedded p."""
        return self.hidden[0]

    def forward(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """z: (B, N, z_dim) sampled features, points: (B, N, 3) normalised frame -> logits (B, N).

        The definition; the network runs `forward_folded`, the same function with W1's z-columns applied
        before sampling (OccupancyNetwork.encode)."""
        b, n, _ = z.shape
        x = torch.cat([z, self.embed(points).to(z.dtype)], dim=-1).reshape(b * n, -1)  # batch norm over points
        return self.out(self.hidden(x)).reshape(b, n)

    def forward_folded(self, z_first: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """z_first: (B, N, hidden) = W1[:, :z_dim] z, points: (B, N, 3) normalised frame -> logits (B, N)."""
        b, n, _ = z_first.shape
        embedded = self.embed(points)
        z_dim = self.first.in_features - embedded.shape[-1]
        x = z_first + F.linear(embedded.to(z_first.dtype), self.first.weight[:, z_dim:], self.first.bias)
        return self.out(self.hidden[1:](x.reshape(b * n, -1))).reshape(b, n)
