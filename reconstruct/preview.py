"""The preview of one reconstruction: a strip uint8 (tile + caption, 5 tiles, 3) of photo | mask used (+ the
crop square) | network input | mesh from the photo's viewpoint | mesh turned about the vertical.

The mesh is drawn through the canonical camera with pipeline.cameras' ray caster, and the strip composed
with evaluation.render's picture helpers (the eval's own colours and captions).
"""

from __future__ import annotations

import numpy as np

from reconstruct.framing import R0
from reconstruct.reconstruction import Reconstruction


def _square_tile(image: np.ndarray, tile: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Letterbox an RGB image into a white tile x tile square -> (tile, scale, (dx, dy) offset)."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = tile / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (tile, tile), "white")
    dx, dy = (tile - nw) // 2, (tile - nh) // 2
    canvas.paste(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS), (dx, dy))
    return np.asarray(canvas), scale, (dx, dy)


def mesh_views(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, Rts: list[np.ndarray], tile: int
               ) -> list[np.ndarray]:
    """The mesh (output frame) through camera K from each Rt (3, 4): uint8 (tile, tile, 4) RGBA each, in the
    eval's mesh colour; transparent for an empty mesh. The same pixels as pipeline.cameras.render_mesh, for
    less: the views share one ray-casting scene (its BVH built once, not once a view), and the rays cast are
    bounded by the mesh's bounding box rather than its convex hull (a few more rays at this size, no hull to
    compute and no scipy.spatial to import)."""
    from evaluation.render import PRED_COLOR
    from pipeline.cameras import MeshRenderer

    if len(faces) == 0:
        return [np.zeros((tile, tile, 4), np.uint8) for _ in Rts]
    renderer = MeshRenderer(vertices, faces, color=PRED_COLOR, outline="box")
    return [renderer.render(K, Rt, tile, tile) for Rt in Rts]


def mask_picture(image: np.ndarray, result: Reconstruction, tile: int = 256) -> np.ndarray:
    """(tile, tile, 3) uint8: the photo with what the mask left out greyed, and the crop square in red."""
    from PIL import Image, ImageDraw

    from evaluation.render import rgba_on_white

    shown = rgba_on_white(image).copy()
    shown[~result.object_mask.mask] = (0.35 * shown[~result.object_mask.mask] + 0.65 * 170).astype(np.uint8)
    square, scale, (dx, dy) = _square_tile(shown, tile)
    picture = Image.fromarray(square)
    x0, y0, side = result.framed.crop
    ImageDraw.Draw(picture).rectangle([dx + x0 * scale, dy + y0 * scale, dx + (x0 + side) * scale,
                                       dy + (y0 + side) * scale], outline=(220, 40, 40), width=2)
    return np.asarray(picture)


def preview(image: np.ndarray, result: Reconstruction, tile: int = 256, turn_deg: float = 50.0) -> np.ndarray:
    """Strip (tile + caption, 5 tiles, 3) uint8: photo | mask used (+ the crop square) | network input |
    mesh from the photo's viewpoint (the canonical camera) | mesh turned by turn_deg about the vertical."""
    from evaluation.render import compose_strip, rgba_on_white
    from pipeline.cameras import scale_intrinsics

    photo = rgba_on_white(image)
    photo_tile = _square_tile(photo, tile)[0]
    mask_tile = mask_picture(image, result, tile)
    size = result.framed.rgba.shape[0]
    K = scale_intrinsics(result.K, tile / size)
    a = np.radians(turn_deg)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rt_turned = np.concatenate([R0 @ turn, result.Rt[:, 3:]], axis=1)
    front, side_view = mesh_views(result.vertices, result.faces, K, [result.Rt, Rt_turned], tile)
    empty = " (empty)" if len(result.faces) == 0 else ""
    return compose_strip(
        [photo_tile, np.asarray(mask_tile), rgba_on_white(result.framed.rgba), rgba_on_white(front),
         rgba_on_white(side_view)],
        ["photo", f"mask ({result.object_mask.method}) + crop", "network input",
         f"mesh, photo's view{empty}", f"mesh, turned {turn_deg:.0f} deg{empty}"], tile=tile)


def failure_preview(image: np.ndarray, reason: str, tile: int = 256) -> np.ndarray:
    """Strip (tile + caption, 2 tiles, 3) uint8 for a photo that gave no mesh before a mask was made: the photo |
    why (the error's words, wrapped)."""
    import textwrap

    from PIL import Image, ImageDraw

    from evaluation.render import compose_strip, rgba_on_white

    photo_tile = _square_tile(rgba_on_white(image), tile)[0]
    note = Image.new("RGB", (tile, tile), "white")
    ImageDraw.Draw(note).multiline_text((8, 8), "\n".join(textwrap.wrap(reason, width=max(20, tile // 7))),
                                        fill=(150, 20, 20))
    return compose_strip([photo_tile, np.asarray(note)], ["photo", "no mesh: why"], tile=tile)
