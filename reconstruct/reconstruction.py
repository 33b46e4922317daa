"""From one photo to a mesh: find the object, frame it as the training views were framed, reconstruct it
through a canonical camera (docs/RECONSTRUCT.md).

A photo has no known camera. The network does not need one: its decoder sees a query point in the CAMERA's
axes (R p, centred on the object; trainer.models.network), and the feature it samples depends only on where
the point lands in the image. So a photo is cropped and scaled until the object fills the frame as in the
rendered training views, and then predicted through the canonical camera

    K = R2N2's intrinsics for the S x S framed image,   Rt0 = [R0 | t0],  R0 = diag(1, -1, -1),  t0 = (0, 0, d0)

with d0 the training views' median camera distance. The decoder then sees R0 q for an output-frame point q:
exactly the camera-frame points it was trained on. The output frame is "as seen in the photo": x right,
y up, z towards the viewer, centred on the object, in (approximately) the normalised frame's scale. For a
stored view with rotation R_true, the object appears there as R0^T R_true p (p in the normalised frame).

reconstruct_image chains the rooms below it (segmentation, framing, then inference's predictor and
coarse-to-fine extraction in the box [-EXTRACT_HALF, EXTRACT_HALF]^3); metadata records what it used. Pure
(arrays in, arrays out); reconstruct.cli reads files and writes meshes, previews and metadata.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from inference.extract_mesh import BOX_HALF, Extraction, extract_mesh
from reconstruct.framing import FramedView, Framing, canonical_camera, frame_object
from reconstruct.photos import to_greyscale
from reconstruct.segmentation import LOW_CONFIDENCE, ObjectMask, find_object

log = logging.getLogger(__name__)

RECONSTRUCT_VERSION = "1"  # bump when the framing, camera or extraction of `aps reconstruct` changes

# A rotated unit-cube object reaches sqrt(3)/2 = 0.87 from its centre in the output frame, beyond the
# extraction box [-0.55, 0.55]^3: extract in [-EXTRACT_HALF, EXTRACT_HALF]^3 by scaling the field.
EXTRACT_HALF = 0.9


@dataclass
class Reconstruction:
    """One photo's result: mesh vertices (V, 3) float32 in the output frame (x right, y up, z to the viewer,
    normalised scale), faces (F, 3) int64, and what was made on the way."""

    vertices: np.ndarray
    faces: np.ndarray
    object_mask: ObjectMask
    framed: FramedView
    K: np.ndarray
    Rt: np.ndarray
    extraction: Extraction
    seconds: float
    level: float = 0.5
    """the occupancy level the mesh was extracted at (the predictor's: 0.5 unless it learnt a soft label)"""


def reconstruct_image(predictor, image: np.ndarray, framing: Framing = Framing(), resolution: int = 128,
                      coarse: int | None = 32, name: str = "image", found: ObjectMask | None = None,
                      box: tuple[int, int, int, int] | None = None) -> Reconstruction:
    """One photo -> a mesh in the output frame (module docstring).

    predictor: inference.predictor.Predictor; image: uint8 (H, W, 3|4). The field is queried in the box
    [-EXTRACT_HALF, EXTRACT_HALF]^3 (extract_mesh's grid scaled by EXTRACT_HALF / BOX_HALF), so the grid
    spacing is 2 * EXTRACT_HALF / resolution output units. found: the object's mask when the user gave one
    (segmentation.object_from_mask); box: where to look for it (segmentation.find_object). Raises NoObjectFound
    when there is no object.
    """
    t0 = time.perf_counter()
    found = found if found is not None else find_object(image, name, box)
    framed = frame_object(image, found, framing.fill, framing.image_size)
    if framing.greyscale:
        framed = replace(framed, rgba=to_greyscale(framed.rgba))
    K, Rt = canonical_camera(framing.image_size, framing.distance)
    field = predictor.field(framed.rgba, K, Rt)
    k = EXTRACT_HALF / BOX_HALF

    def scaled(points: np.ndarray) -> np.ndarray:  # field'(q) = field(k q): extract_mesh's box, k times larger
        return field(points * np.float32(k))

    extraction = extract_mesh(scaled, resolution, coarse, predictor.level)
    vertices = (extraction.vertices * k).astype(np.float32)
    if extraction.status != "ok":
        log.warning("%s: the field never crosses %g: empty mesh", name, predictor.level)
    return Reconstruction(vertices, extraction.faces, found, framed, K, Rt, extraction,
                          time.perf_counter() - t0, predictor.level)


class EmptyMesh(ValueError):
    """The network gave no surface, or a degenerate one, for a photo: a failure, not a mesh."""


def check_mesh(result: Reconstruction, resolution: int, name: str = "image") -> None:
    """Refuse an empty or degenerate mesh (fewer than 4 faces, or a largest side under 3 grid spacings) with
    EmptyMesh naming the photo: written, it would be a file of a few hundred bytes that looks like a result."""
    if result.extraction.status != "ok" or len(result.faces) == 0:
        raise EmptyMesh(f"{name}: empty mesh: the network's occupancy never reaches {result.level:g} in the box "
                        "(see the preview: is the mask the object?)")
    spacing = 2 * EXTRACT_HALF / resolution
    extent = float(np.ptp(result.vertices, axis=0).max())
    if len(result.faces) < 4 or extent < 3 * spacing:
        raise EmptyMesh(f"{name}: degenerate mesh: {len(result.faces)} faces, largest side {extent:.3f} output "
                        f"units (under 3 grid spacings of {spacing:.3f})")


def mask_warnings(result: Reconstruction) -> list[str]:
    """What may be wrong with the mask a mesh was made from, one sentence each (the console prints them; the
    .json keeps them): the object cut off at the photo's edge, an outline that follows no edge of the photo,
    a mask that took most of the photo."""
    notes = []
    m = result.object_mask
    if result.framed.touches_border or m.near_border:
        notes.append("the object's mask reaches the photo's edge: the object may be cut off, and its mesh with it")
    if m.method != "alpha" and m.confidence < LOW_CONFIDENCE:
        notes.append(f"the mask's outline follows the photo's edges at {100 * m.confidence:.0f}% of its length "
                     "only: it may not be the object (--mask FILE or --box x0,y0,x1,y1 say where it is)")
    if m.area / m.mask.size > 0.5:
        notes.append(f"the mask covers {100 * m.area / m.mask.size:.0f}% of the photo: the background may have "
                     "leaked into it")
    return notes


# Largest --size: the mesh is written in float32 (up to 3.4e38, 7 digits), and inf or 1e308 would put every
# vertex at infinity; a kilometre in micrometres is 1e9.
MAX_SIZE = 1e12


def check_size(size: float) -> None:
    """Refuse a --size that is not a finite number in (0, MAX_SIZE] (NaN, inf and 1e308 included)."""
    if not (math.isfinite(size) and 0 < size <= MAX_SIZE):
        raise ValueError(f"--size must be positive, finite and at most {MAX_SIZE:g} (the object's largest side, "
                         f"e.g. in mm), got {size}")


UNIT_METRES = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254}
"""the units --size takes, in metres; a bare number is millimetres (the unit of CAD parts and their drawings)"""
FORMAT_UNITS = {"glb": "m"}
"""formats whose own convention fixes the unit: glTF's is the metre (its spec); PLY, OBJ and STL have none and are
written in the unit --size was given in"""


@dataclass(frozen=True)
class Size:
    """The object's real largest dimension: a value and its unit (mm, cm, m or in)."""

    value: float
    unit: str

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"

    def unit_of(self, fmt: str) -> str:
        """The unit a mesh file of this format is written in."""
        return FORMAT_UNITS.get(fmt, self.unit)

    def value_in(self, unit: str) -> float:
        """The size in another unit (e.g. metres for glTF)."""
        return self.value * UNIT_METRES[self.unit] / UNIT_METRES[unit]


def parse_size(text: str) -> Size:
    """'120mm', '12 cm', '0.12m', '4.7in' or a bare '120' (millimetres) -> Size; anything else, a non-finite,
    non-positive or too large value is refused in one line naming the units."""
    t = str(text).strip().lower()
    unit = next((u for u in sorted(UNIT_METRES, key=len, reverse=True) if t.endswith(u)), "")
    number = t[: len(t) - len(unit)].strip() if unit else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"--size {text!r} is not a length like 120mm, 12cm, 0.12m or 4.7in (a bare number is "
                         "mm)") from None
    check_size(value)
    return Size(value, unit or "mm")


def scale_to_size(vertices: np.ndarray, size: float) -> np.ndarray:
    """Scale (about the origin) so the largest side of the bounding box is `size` (e.g. millimetres)."""
    check_size(size)
    if len(vertices) == 0:
        return vertices
    extent = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    return (vertices * (size / max(extent, 1e-12))).astype(np.float32)


def metadata(result: Reconstruction, framing: Framing) -> dict:
    """What a reconstruction used, as JSON-able values (written beside the mesh)."""
    m, f = result.object_mask, result.framed
    return {
        "mask": {"method": m.method, "area_px": m.area, "area_fraction": m.area / m.mask.size,
                 "background_rgb": m.background, "threshold": m.threshold, "confidence": round(m.confidence, 4)},
        "framing": {**asdict(framing), "crop_x0_y0_side_px": list(f.crop), "bbox_px": list(f.bbox),
                    "touches_border": f.touches_border},
        "canonical_camera": {"K": result.K.tolist(), "Rt": result.Rt.tolist(),
                             "frame": "x right, y up, z towards the viewer, centred on the object"},
        "extraction": {"resolution": result.extraction.resolution, "box_half": EXTRACT_HALF, "level": result.level,
                       "spacing": 2 * EXTRACT_HALF / result.extraction.resolution,
                       "queries": result.extraction.n_queries, "status": result.extraction.status},
        "n_vertices": len(result.vertices), "n_faces": len(result.faces),
    }
