"""IM-NET's released HDF5 files (Chen & Zhang 2019, `all_vox256_img_{train,test}.hdf5`), for users who have
IM-NET's data rather than (or besides) ShapeNet's meshes.

One file holds N models, row for row with the names file beside it (`<stem>.txt`, `<synset>/<model_id>` a line;
bare model ids in per-category files named `<synset>_...`):

    voxels     uint8 (N, 64, 64, 64, 1)   solid occupancy (flood-filled), the 64^3 grid of IM-NET's evaluation
    pixels     uint8 (N, 24, 137, 137)    3D-R2N2's 24 views, greyscale composited on white
    points_16/32/64, values_16/32/64      IM-NET's own training samples (not read here: we sample the surface)

Frame: IM-NET turned HSP's v1-frame voxels into ShapeNet v2's axes ("flip & transpose to convert coord from
shapenet_v1 to shapenet_v2"), so voxel (a, b, c) has its centre at ((a, b, c) + 0.5) / 64 - 0.5 in v2 axes (y up)
and v1 = V2_TO_V1_AXES @ p. That is where 3D-R2N2's cameras (v1 coordinates) are placed; each object checks it on
its own images (silhouette IoU against the voxel surface, in IM-NET's frame and unturned), so a copy in another
frame fails with a reason instead of training on misplaced cameras.

The geometry of an object is the surface of its voxels: marching cubes at level 0.5 on the zero-padded grid,
watertight by construction; distances, inside flags and reference points are taken on it like on any mesh.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cameras import MeshRenderer
from pipeline.sources.keys import FLAG, TEXT, TEXT_OR_TEXTS, TEXTS, needed
from pipeline.sources.r2n2 import ViewsError, r2n2_cameras, read_metadata, to_normalised_frame
from pipeline.sources.shapenet import R2N2_CATEGORIES, V2_TO_V1_AXES, synset_of
from pipeline.sources.spec import ObjectSpec, SourceError, encode_extras, make_object_id
from pipeline.sources.splits import read_split_file
from pipeline.sources.walk import resolve_root

log = logging.getLogger(__name__)
# h5py and scikit-image are imported where an IM-NET file is read: heavy, and most runs read none

SOURCE_KEYS = {"imnet_hdf5": {"files": needed(TEXT_OR_TEXTS, "IM-NET's .hdf5 files, paths or globs"),
                              "categories": TEXTS, "images": FLAG, "renderings": TEXT}}

# mean silhouette IoU over the views between IM-NET's images (non-white pixels) and the voxel surface seen through
# the derived cameras: at least this, and no worse (by the margin) than without v2's turn. Measured on 8 robot
# parts written in IM-NET's frame: 0.83-0.98 (0.83: a thin part the 64^3 grid coarsens); the same files in v1's
# axes score 0.15-0.79 in IM-NET's frame, and better unturned.
IMNET_SILHOUETTE_IOU = 0.6
IMNET_FRAME_MARGIN = 0.02
WHITE_LEVEL = 250  # a greyscale pixel below this is object (IM-NET composites the RGBA views on white)
_ROW = re.compile(r"^(?P<file>.+\.(?:hdf5|h5))#(?P<row>\d+)$")


def row_source(path: Path, row: int) -> str:
    """The `source` of one model of an IM-NET file, as stored in the store: `<file>#<row>`."""
    return f"{path}#{row}"


def parse_row_source(source: str) -> tuple[Path, int] | None:
    """(file, row) of a `<file>.hdf5#<row>` source, None for any other source."""
    m = _ROW.match(str(source))
    return (Path(m["file"]), int(m["row"])) if m else None


def read_names(path: Path, n_rows: int) -> list[str]:
    """`<synset>/<model_id>` of every row of an IM-NET file, from the names file beside it."""
    txt = path.with_suffix(".txt")
    if not txt.is_file():
        raise SourceError(f"{txt}: missing (IM-NET ships the model names of {path.name} in it, one a row)")
    names = read_split_file(txt)
    if len(names) != n_rows:
        raise SourceError(f"{txt}: {len(names)} names for the {n_rows} rows of {path.name}")
    bad = [n for n in names if "/" not in n]
    if bad:
        raise SourceError(f"{txt}: {bad[0]!r} is not `<synset>/<model_id>` (and the file name gives no synset)")
    return names


def list_imnet(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """[[sources]] type = "imnet_hdf5": files (paths or globs), categories (optional), images (default true:
    store IM-NET's own 24 views; their cameras come from `renderings`, the 3D-R2N2 root, of which only
    `rendering_metadata.txt` is read), renderings."""
    import h5py

    patterns = source["files"] if isinstance(source["files"], list) else [source["files"]]
    paths: list[Path] = []
    for pattern in patterns:
        resolved = resolve_root(str(pattern), manifest_dir)
        found = sorted(resolved.parent.glob(resolved.name)) if any(ch in resolved.name for ch in "*?[") else (
            [resolved] if resolved.exists() else [])
        if not found:
            raise SourceError(f"{resolved}: no IM-NET HDF5 file (set 'files' in the manifest to your copy)")
        paths += found
    use_images = bool(source.get("images", True))
    renderings = None
    if use_images:
        if not source.get("renderings"):
            raise SourceError("imnet_hdf5 with images = true needs 'renderings' (the 3D-R2N2 root): the HDF5 files "
                              "hold the views but not their cameras, which are in rendering_metadata.txt; or set "
                              "images = false to render views of the voxel surface")
        renderings = resolve_root(str(source["renderings"]), manifest_dir)
        if not renderings.is_dir():
            raise SourceError(f"{renderings}: renderings folder not found")
    wanted = {synset_of(str(c)) for c in source["categories"]} if "categories" in source else None
    specs = []
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                if "voxels" not in f:
                    raise SourceError(f"{path}: no 'voxels' dataset (datasets: {', '.join(sorted(f))}); not an "
                                      "IM-NET file")
                n_rows = int(f["voxels"].shape[0])
                if use_images and "pixels" not in f:
                    raise SourceError(f"{path}: no 'pixels' dataset; set images = false to render views")
        except OSError as exc:
            raise SourceError(f"{path}: not a readable HDF5 file ({exc})") from None
        for row, key in enumerate(read_names(path, n_rows)):
            synset, model_id = key.split("/", 1)
            if wanted is not None and synset not in wanted:
                continue
            name = R2N2_CATEGORIES.get(synset, synset)
            extras: dict[str, Any] = {"key": key}
            if renderings is not None:
                extras["views"] = {"type": "imnet", "dir": str(renderings / synset / model_id / "rendering")}
            specs.append(ObjectSpec(make_object_id(name, model_id), name, row_source(path, row),
                                    encode_extras(extras)))
    if not specs:
        raise SourceError(f"{', '.join(map(str, paths))}: no model of the wanted categories")
    log.info("imnet_hdf5: %d models in %d files", len(specs), len(paths))
    return specs


def read_row(source: str, names: tuple[str, ...] = ("voxels",)) -> dict[str, np.ndarray]:
    """Datasets of one model of an IM-NET file, by its `<file>#<row>` source."""
    import h5py

    parsed = parse_row_source(source)
    if parsed is None:
        raise ValueError(f"{source}: not an IM-NET row (`<file>.hdf5#<row>`)")
    path, row = parsed
    try:
        with h5py.File(path, "r") as f:
            if row >= f["voxels"].shape[0]:
                raise ValueError(f"{source}: row {row} past the file's {f['voxels'].shape[0]} rows")
            return {name: np.asarray(f[name][row]) for name in names}
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None


def hash_row(h, source: str) -> None:
    """Feed one model's bytes (voxels and views) to a hash, not the whole multi-GB file."""
    import h5py

    path, row = parse_row_source(source)
    with h5py.File(path, "r") as f:
        for name in ("voxels", "pixels"):
            if name in f and row < f[name].shape[0]:
                h.update(name.encode())
                h.update(np.ascontiguousarray(f[name][row]).tobytes())


def voxel_surface(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The watertight surface of an occupancy grid (G, G, G[, 1]), in IM-NET's frame: voxel centres at
    (index + 0.5) / G - 0.5. Marching cubes at level 0.5 on the grid padded with one empty layer, faces wound
    outwards (positive volume)."""
    from skimage.measure import marching_cubes

    occupancy = np.asarray(voxels).reshape(voxels.shape[:3]) > 0
    if not occupancy.any():
        raise ValueError("no occupied voxel: an empty model")
    grid = occupancy.shape[0]
    padded = np.pad(occupancy.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    vertices = (verts.astype(np.float64) - 0.5) / grid - 0.5
    faces = faces.astype(np.int64)
    tri = vertices[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if volume < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


def load_imnet_mesh(source: str) -> tuple[np.ndarray, np.ndarray]:
    """vertices (V, 3) float64 in IM-NET's frame and faces (F, 3) of one row's voxel surface."""
    voxels = read_row(source)["voxels"]
    try:
        return voxel_surface(voxels)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def greyscale_to_rgba(pixels: np.ndarray) -> np.ndarray:
    """IM-NET's greyscale-on-white views (V, S, S) -> RGBA (V, S, S, 4): grey in RGB, alpha 0 on pure white.

    The trainer composites RGBA on white, so it sees IM-NET's pixels exactly; the alpha is only a silhouette
    estimate (an object pixel of pure white reads as background)."""
    grey = np.asarray(pixels, np.uint8)
    alpha = np.where(grey < 255, 255, 0).astype(np.uint8)
    return np.stack([grey, grey, grey, alpha], axis=-1)


def silhouette_iou(renderer, K: np.ndarray, Rt: np.ndarray, pixels: np.ndarray) -> float:
    """Mean IoU over views between a mesh (its pipeline.cameras.MeshRenderer) seen through the cameras
    (K (V, 3, 3), Rt (V, 3, 4)) and the non-white pixels of greyscale views (V, S, S)."""
    size = pixels.shape[-1]
    seen = renderer.render_many(K, Rt, size, size)[..., 3] > 0
    drawn = np.asarray(pixels) < WHITE_LEVEL
    return float(np.mean([(s & d).sum() / max((s | d).sum(), 1) for s, d in zip(seen, drawn)]))


def load_imnet_views(views: dict[str, Any], source: str, vertices: np.ndarray, faces: np.ndarray, scale: float,
                     center: np.ndarray, n_views: int, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IM-NET's own views of one model with R2N2's cameras for its normalised frame, checked on the silhouette.

    vertices (V, 3): the normalised voxel surface, IM-NET frame = vertices * scale + center. Returns images uint8
    (V, S, S, 4), K float32 (V, 3, 3), Rt float32 (V, 3, 4).
    """
    pixels = read_row(source, ("pixels",))["pixels"]
    if pixels.shape != (n_views, image_size, image_size):
        raise ViewsError(f"{source}: pixels of shape {pixels.shape}, the manifest expects views.n_views = {n_views} "
                         f"and views.image_size = {image_size}")
    K, Rt_v1 = r2n2_cameras(read_metadata(Path(views["dir"]), n_views), image_size)
    center = np.asarray(center, np.float64)
    # v1 = Q (vertices * scale + center) = scale Q vertices + Q center; the unturned frame is scored too
    Rt = to_normalised_frame(Rt_v1, scale, V2_TO_V1_AXES @ center, V2_TO_V1_AXES)
    renderer = MeshRenderer(vertices, faces)
    iou = silhouette_iou(renderer, K, Rt, pixels)
    iou_unturned = silhouette_iou(renderer, K, to_normalised_frame(Rt_v1, scale, center), pixels)
    if iou < IMNET_SILHOUETTE_IOU or iou < iou_unturned - IMNET_FRAME_MARGIN:
        raise ViewsError(f"{source}: IM-NET's views do not line up with its voxels under 3D-R2N2's cameras "
                         f"(mean silhouette IoU {iou:.2f} in IM-NET's frame, {iou_unturned:.2f} without v2's turn; "
                         f"need {IMNET_SILHOUETTE_IOU} and the best of the two); is this file in IM-NET's frame, "
                         "and are these the model's renderings?")
    return greyscale_to_rgba(pixels), K.astype(np.float32), Rt.astype(np.float32)
