"""Pictures of the network's current shape during training, for TensorBoard: a few fixed objects, each from its
input view and two views spread around it, the stored view (the ground truth as rendered) beside the predicted
mesh rendered from that view's camera. What a falling loss hides (a lost bore, a slab grown into a bean, wrong
depth) shows from the other views long before the run ends.

The mesh is the network's 0.5-level (sigmoid(logit) = 0.5) on a dense grid of GRID^3 points in the padded box,
marching cubes; coarse on purpose (~1 s per object on a CPU): it shows the shape, the eval measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from pipeline.cameras import picture_views, render_mesh
from pipeline.schema.read import Store
from trainer.models import precision
from trainer.views import prepare_view

log = logging.getLogger(__name__)

GRID = 40
BOX_HALF = 0.55  # the unit cube [-0.5, 0.5]^3 padded by 0.05 per side (inference.extract_mesh's box)
PRED_RGB = (0.93, 0.55, 0.25)
VIEWS = 3
CHUNK = 16384


@torch.no_grad()
def predicted_mesh(model: torch.nn.Module, image: np.ndarray, K: np.ndarray, Rt: np.ndarray, image_size: int,
                   device: torch.device, dtype: torch.dtype | None = None, grid: int = GRID
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The network's 0.5-level surface seen from one stored view: vertices (V, 3) float32 (normalised frame),
    faces (F, 3) int64; empty arrays when the field never crosses 0.5 in the box."""
    from skimage.measure import marching_cubes

    was_training = model.training
    model.eval()
    try:
        images, K_net = prepare_view(image, K, image_size)
        images, K_net = images[None].to(device), K_net[None].to(device)
        Rt_t = torch.as_tensor(Rt, dtype=torch.float32, device=device)[None]
        axis = np.linspace(-BOX_HALF, BOX_HALF, grid, dtype=np.float32)
        points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        logits = []
        with precision.autocast(device, dtype):
            code = model.encode(images)
            for start in range(0, len(points), CHUNK):
                chunk = torch.from_numpy(points[start:start + CHUNK]).to(device)[None]
                logits.append(model.decode(code, chunk, K_net, Rt_t, image_size).float().reshape(-1).cpu())
    finally:
        model.train(was_training)
    field = torch.cat(logits).numpy().reshape(grid, grid, grid)
    if not (field.min() < 0 < field.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    vertices, faces, _, _ = marching_cubes(field, level=0.0, spacing=(2 * BOX_HALF / (grid - 1),) * 3)
    return (vertices - BOX_HALF).astype(np.float32), faces.astype(np.int64)


def snapshot(model: torch.nn.Module, store: Store, object_id: str, image_size: int, device: torch.device,
             dtype: torch.dtype | None = None, input_view: int = 0) -> np.ndarray:
    """uint8 (VIEWS * S, 2 * S, 3): one row per view (the input view first), the stored view | the prediction
    from its camera, at the stored image size S, on white."""
    images, K, Rt = store.read(object_id, "images"), store.read(object_id, "K"), store.read(object_id, "Rt")
    vertices, faces = predicted_mesh(model, images[input_view], K[input_view], Rt[input_view], image_size, device,
                                     dtype)
    h, w = images.shape[1:3]
    rows = []
    for v in picture_views(Rt, input_view, VIEWS):
        pred = render_mesh(vertices, faces, K[v], Rt[v], h, w, PRED_RGB)
        rows.append(np.concatenate([_on_white(images[v]), _on_white(pred)], axis=1))
    return np.concatenate(rows, axis=0)


def _on_white(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.shape[-1] == 3:
        return image
    alpha = image[..., 3:].astype(np.float32) / 255.0
    return np.rint(image[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)


def snapshot_objects(val_ids: Sequence[str], train_ids: Sequence[str], count: int) -> list[str]:
    """The objects pictured at every snapshot: the first `count` validation objects (train objects when the run
    has none), the same all run long."""
    return list(val_ids or train_ids)[:count]
