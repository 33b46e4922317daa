"""ShapeNetCore as users have it on disk: v1 (`<synset>/<model_id>/model.obj`) and v2
(`<synset>/<model_id>/models/model_normalized.obj`), optionally with 3D-R2N2's renderings of each model
(`<renderings>/<synset>/<model_id>/rendering/`), whose images and cameras are then used instead of rendering.

Object ids are `<category name>-<model_id>`; the dataset's own name `<synset>/<model_id>` travels in the
object's extras as "key", which split files match (pipeline.sources.splits).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources.keys import TEXT, TEXTS, needed
from pipeline.sources.spec import ObjectSpec, SourceError, encode_extras, make_object_id
from pipeline.sources.walk import resolve_root
from pipeline.stages.distances import udf
from pipeline.stages.load import load_mesh
from pipeline.stages.sample_points import sample_surface

log = logging.getLogger(__name__)

_V1_KEYS = {"root": needed(TEXT, "the folder holding the synset folders"), "categories": TEXTS,
            "renderings": TEXT}
SOURCE_KEYS = {"shapenet_v1": _V1_KEYS, "shapenet_v2": {**_V1_KEYS, "v1_root": TEXT}}

# The 13 categories of the 3D-R2N2 subset of ShapeNetCore (Choy et al. 2016), by WordNet synset id.
R2N2_CATEGORIES: dict[str, str] = {
    "02691156": "airplane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "loudspeaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}
# The paper's Table 1 categories (a subset of R2N2's 13).
PAPER_CATEGORIES = ("airplane", "bench", "cabinet", "car", "chair", "display", "lamp")
SYNSET_OF = {name: synset for synset, name in R2N2_CATEGORIES.items()}

MESH_PATH = {1: Path("model.obj"), 2: Path("models") / "model_normalized.obj"}
# the v2 model must lie within this fraction of v1's bounding-box diagonal of the v1 surface once aligned
V2_ALIGNMENT_TOLERANCE = 0.01


def synset_of(category: str) -> str:
    """A category name of the R2N2 subset or a synset id (8 digits) -> the synset id."""
    if category in SYNSET_OF:
        return SYNSET_OF[category]
    if category.isdigit() and len(category) == 8:
        return category
    raise SourceError(f"unknown ShapeNet category {category!r}: give a synset id (8 digits) or one of "
                      f"{', '.join(sorted(SYNSET_OF))}")


def _root(source: dict[str, Any], key: str, manifest_dir: Path) -> Path:
    path = resolve_root(str(source[key]), manifest_dir)
    if not path.is_dir():
        raise SourceError(f"{path}: {key} folder not found (set {key!r} in the manifest to your copy)")
    return path


def list_shapenet(source: dict[str, Any], manifest_dir: Path, version: int) -> list[ObjectSpec]:
    """[[sources]] type = "shapenet_v1" | "shapenet_v2": root, categories (names or synset ids; default every
    synset folder), renderings (optional: the 3D-R2N2 `ShapeNetRendering` root), v1_root (v2 with renderings:
    the v1 copy whose frame R2N2's cameras live in).

    Every model folder is listed, in the mesh root and, with renderings, in the renderings root too, so a
    model missing its obj or its views fails alone with the reason instead of vanishing from the dataset.
    """
    kind = f"shapenet_v{version}"
    root = _root(source, "root", manifest_dir)
    renderings = _root(source, "renderings", manifest_dir) if source.get("renderings") else None
    v1_root = _root(source, "v1_root", manifest_dir) if source.get("v1_root") else None
    if version == 2 and renderings is not None and v1_root is None:
        raise SourceError("shapenet_v2 with 'renderings' needs 'v1_root': R2N2's cameras live in ShapeNetCore "
                          "v1 coordinates, and the v1 model is what places a v2 model in them")
    if "categories" in source:
        synsets = [synset_of(str(c)) for c in source["categories"]]
        for s in synsets:
            if not (root / s).is_dir():
                raise SourceError(f"{root / s}: no folder for category {R2N2_CATEGORIES.get(s, s)} ({s})")
    else:
        synsets = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        if not synsets:
            raise SourceError(f"{root}: no synset folders (8-digit names); is this a ShapeNetCore root?")
    specs = []
    for synset in synsets:
        name = R2N2_CATEGORIES.get(synset, synset)
        model_ids = {p.name for p in (root / synset).iterdir() if p.is_dir() and not p.name.startswith(".")}
        if renderings is not None and (renderings / synset).is_dir():
            model_ids |= {p.name for p in (renderings / synset).iterdir() if p.is_dir() and not p.name.startswith(".")}
        for model_id in sorted(model_ids):
            extras: dict[str, Any] = {"key": f"{synset}/{model_id}"}
            if renderings is not None:
                extras["views"] = {"type": "r2n2", "dir": str(renderings / synset / model_id / "rendering")}
                if version == 2:
                    extras["views"]["v1_source"] = str(v1_root / synset / model_id / MESH_PATH[1])
            specs.append(ObjectSpec(make_object_id(name, model_id), name,
                                    str(root / synset / model_id / MESH_PATH[version]), encode_extras(extras)))
    if not specs:
        raise SourceError(f"{root}: no model folders in {', '.join(synsets)}")
    log.info("%s %s: %d models in %d categories", kind, root, len(specs), len(synsets))
    return specs


# ShapeNetCore v2 turned every v1 model a quarter turn about the up axis: (x, y, z)_v2 = (z, y, -x)_v1, so
# v1 = V2_TO_V1_AXES @ v2. Two independent published conversions agree: IM-NET's point_sampling ("flip &
# transpose to convert coord from shapenet_v1 to shapenet_v2": out[a, b, c] = v1[255 - c, b, a]) and the
# v1->SRN / v2->SRN rotations of neurips/shapenet_to_srn tools (R_v1 = [[0,0,1],[1,0,0],[0,1,0]],
# R_v2 = [[1,0,0],[0,0,-1],[0,1,0]]).
V2_TO_V1_AXES = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])


def v2_to_v1(v2_vertices: np.ndarray, v2_faces: np.ndarray, v1_path: str | Path
             ) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity v1 = s * Q @ v2 + c that places a ShapeNetCore v2 `model_normalized.obj` in its v1 model's
    frame.

    Q is V2_TO_V1_AXES (v2's quarter turn about y undone); a copy whose v2 models kept v1's axes is accepted too
    (Q = identity) when only that lines up. v2 also re-centred and re-scaled every model, so matching the two
    bounding boxes (centre and diagonal) gives s and c. The match is checked on the surface: 95% of points
    sampled on the mapped v2 model must lie within V2_ALIGNMENT_TOLERANCE of v1's diagonal of the v1 surface,
    else the object fails (a remodelled v2 shape cannot use R2N2's cameras).
    v2_vertices (V, 3) float, v2 file units. Returns s (float), Q (3, 3) and c (3,) in v1 units.
    """
    v1_vertices, v1_faces = load_mesh(v1_path)
    box1 = v1_vertices[np.unique(v1_faces)]
    lo1, hi1 = box1.min(0), box1.max(0)
    diag1 = float(np.linalg.norm(hi1 - lo1))
    v2 = np.asarray(v2_vertices, np.float64)
    offs = []
    for Q in (V2_TO_V1_AXES, np.eye(3)):
        turned = v2 @ Q.T
        box2 = turned[np.unique(v2_faces)]
        lo2, hi2 = box2.min(0), box2.max(0)
        s = diag1 / float(np.linalg.norm(hi2 - lo2))
        c = (lo1 + hi1) / 2 - s * (lo2 + hi2) / 2
        points, _ = sample_surface(s * turned + c, v2_faces, 2000, np.random.default_rng(0))
        off = float(np.quantile(udf(v1_vertices, v1_faces, points, "open3d"), 0.95)) / diag1
        if off <= V2_ALIGNMENT_TOLERANCE:
            return s, Q, c
        offs.append(off)
    raise ValueError(f"{v1_path}: the v2 model does not line up with this v1 model by v2's quarter turn, a scale "
                     f"and a shift (95% of its surface within {offs[0]:.3f} of the diagonal, {offs[1]:.3f} without "
                     f"the turn; need {V2_ALIGNMENT_TOLERANCE}); R2N2's cameras cannot be placed on it")
