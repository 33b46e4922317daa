"""OUT/reconstruct.html: the photos of one `aps reconstruct` call and their meshes on one offline page
(evaluation.mesh_page): a table of the photos, and for each its photo, the mask used and the network's input
beside the mesh in a 3D view that starts at the photo's viewpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from evaluation.mesh_page import PRED_RGB, Column, PageItem, encode_meshes, png_data_url, view_from_camera, write_page
from reconstruct.preview import mask_picture
from reconstruct.reconstruction import Reconstruction

COLUMNS = (Column("photo", "photo", numeric=False), Column("faces", "faces"), Column("seconds", "seconds"),
           Column("mask", "mask", numeric=False), Column("mask_confidence", "mask confidence", True, True),
           Column("status", "status", numeric=False), Column("warnings", "warnings", numeric=False))


def page_item(path: Path, image: np.ndarray, result: Reconstruction, face_budget: int, mesh_file: str,
              notes: Sequence[str] = ()) -> PageItem:
    """One photo's row: its images (photo, mask, network input) and its mesh (the output frame: y up)."""
    from evaluation.render import rgba_on_white

    return PageItem(path.name, {"photo": path.name, "faces": len(result.faces), "seconds": round(result.seconds, 2),
                                "mask": result.object_mask.method,
                                "mask_confidence": round(result.object_mask.confidence, 3), "status": "ok",
                                "warnings": "; ".join(notes)},
                    [("photo", png_data_url(rgba_on_white(image))),
                     ("mask used (grey: left out) + crop", png_data_url(mask_picture(image, result))),
                     ("network input", png_data_url(rgba_on_white(result.framed.rgba)))],
                    encode_meshes([("mesh", PRED_RGB, result.vertices, result.faces)], face_budget),
                    view_from_camera(result.Rt), [("the full mesh (beside this page)", mesh_file)])


def failed_item(path: Path, reason: str) -> PageItem:
    return PageItem(path.name, {"photo": path.name, "status": f"error: {reason}"})


def write_reconstruct_page(out: str | os.PathLike, items: Sequence[PageItem], settings: Mapping[str, object],
                           face_budget: int) -> tuple[Path, int]:
    """OUT/reconstruct.html; returns (path, bytes)."""
    notes = [f"{len(items)} photos. Click a row to see the photo, the mask the object was found by, the network's "
             "input and the mesh (drag to orbit; it starts at the photo's viewpoint, y up). Meshes are shown "
             f"decimated to at most {face_budget} faces; the files beside this page are the full meshes."]
    path = Path(out) / "reconstruct.html"
    return path, write_page(path, "Reconstructions", COLUMNS, items, settings, notes, face_budget)
