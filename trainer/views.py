"""`prepare_view`: the one image preparation of training and inference alike, so that a photo is composited and
resized exactly as the network saw its training views. Its own module, so that inference (inference.predictor,
and through it evaluation and reconstruct) does not import the training data loader (trainer.data).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_view(image, K, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's view of a stored image: RGBA composited on white, resized to size x size, K scaled to match.

    image: uint8 (H, W, 3|4) or (B, H, W, 3|4), numpy or torch (any device; the work happens there).
    K: (3, 3) or (B, 3, 3) intrinsics in pixels of the stored image (u = column, v = row, pixel centres at
    integers). Returns (float32 (3, size, size) or (B, 3, size, size) RGB in [0, 1], float32 K of the
    resized image with the same leading shape as K). Pixel centres map as u' = (u + 0.5) * size / W - 0.5.
    """
    img = torch.as_tensor(image)
    K = torch.as_tensor(K, dtype=torch.float32, device=img.device)
    single = img.ndim == 3
    if single:
        img = img[None]
    if img.ndim != 4 or img.shape[-1] not in (3, 4) or img.dtype != torch.uint8:
        raise ValueError(f"prepare_view: expected uint8 (H, W, 3|4) or (B, H, W, 3|4), got "
                         f"{tuple(img.shape)} {img.dtype}")
    x = img.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B, C, H, W)
    if x.shape[1] == 4:  # transparent background -> white, as the renderings are shown to people
        alpha = x[:, 3:4]
        x = x[:, :3] * alpha + (1.0 - alpha)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    sx, sy = size / w, size / h
    scale = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]],
                         dtype=torch.float32, device=K.device)
    K_scaled = scale @ K
    return (x[0] if single else x), K_scaled
