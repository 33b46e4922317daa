"""docs/images/imnet_frame_check.png: what the per-object frame check of IM-NET's HDF5 files looks at.

For one fixture model written in IM-NET's layout (tests/fixtures/shapenet_layouts.py, a real robot part), three of
its greyscale views with the outline of the voxel surface seen through 3D-R2N2's cameras: green in IM-NET's frame
(the check passes), red without v2's quarter turn (what a copy in another frame looks like).

    python scripts/imnet_frame_picture.py [--out docs/images/imnet_frame_check.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    for axis in (0, 1):
        for shift in (1, -1):
            inner &= np.roll(mask, shift, axis=axis)
    return mask & ~inner


def main() -> None:
    from PIL import Image, ImageDraw

    from evaluation.render import compose_strip
    from pipeline.cameras import MeshRenderer
    from pipeline.sources import imnet
    from pipeline.sources.pypi_wheel import list_wheel
    from pipeline.sources.r2n2 import parse_metadata, r2n2_cameras, to_normalised_frame
    from pipeline.sources.shapenet import V2_TO_V1_AXES
    from pipeline.stages.normalize import normalize
    from tests.fixtures.shapenet_layouts import build_shapenet, write_imnet_hdf5

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/imnet_frame_check.png")
    args = ap.parse_args()
    specs = list_wheel({"package": "robosuite", "version": "1.5.2", "category": "arm_link",
                        "include": ["robosuite/models/assets/robots/panda/meshes/link2.stl"]})
    with tempfile.TemporaryDirectory() as tmp:
        copy = build_shapenet(Path(tmp), {"02691156": [Path(specs[0].source)]})
        key = f"02691156/{copy.models['02691156'][0]}"
        path = write_imnet_hdf5(copy, Path(tmp) / "IM-NET" / "all_vox256_img_train.hdf5", [key])
        source = imnet.row_source(path, 0)
        vertices, faces = imnet.load_imnet_mesh(source)
        pixels = imnet.read_row(source, ("pixels",))["pixels"]
        metadata = parse_metadata(copy.renderings / key / "rendering" / "rendering_metadata.txt")
    normalised, scale, center = normalize(vertices, faces)
    K, Rt_v1 = r2n2_cameras(metadata, 137)
    frames = {"IM-NET's frame": to_normalised_frame(Rt_v1, scale, V2_TO_V1_AXES @ center, V2_TO_V1_AXES),
              "without v2's turn": to_normalised_frame(Rt_v1, scale, center)}
    renderer = MeshRenderer(normalised, faces)
    tiles, labels = [], []
    for view in (0, 8, 16):
        tile = np.repeat(pixels[view][..., None], 3, axis=-1).astype(np.uint8)
        for Rt, color in zip(frames.values(), ((0, 170, 0), (220, 0, 0)), strict=True):
            seen = renderer.render_many(K[view:view + 1], Rt[view:view + 1], 137, 137)[0, ..., 3] > 0
            tile[outline(seen)] = color
        tiles.append(tile)
        labels.append(f"view {view}")
    turned, unturned = (imnet.silhouette_iou(renderer, K, Rt, pixels) for Rt in frames.values())
    strip = compose_strip(tiles, labels, tile=274, margin=0.02)
    caption = (f"green: voxel surface in IM-NET's frame (mean IoU over 24 views {turned:.2f}); "
               f"red: without v2's turn ({unturned:.2f})")
    canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + 22), "white")
    canvas.paste(Image.fromarray(strip), (0, 0))
    ImageDraw.Draw(canvas).text((8, strip.shape[0] + 4), caption, fill=(0, 0, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}: {caption}")


if __name__ == "__main__":
    main()
