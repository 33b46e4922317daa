"""Where objects come from: each source type turns a manifest entry into ObjectSpecs (id, category, mesh path).

This module is the registry: which module lists each source type and checks its keys, and the dispatch by source
of what a later step needs (an object's input bytes for its content hash, its mesh, its dataset views). The
modules below it: spec.py (ObjectSpec, object ids, extras), keys.py (a [[sources]] table's keys), one module per
source type (folder, pypi_wheel, shapenet, step, imnet, catalogue; r2n2 for 3D-R2N2's views), walk.py and splits.py.

A source may provide more than a mesh file (a dataset's own renderings with their cameras, a CAD tolerance,
the dataset's name for the object); it says so in `ObjectSpec.extras`, a JSON object that travels with the
object to `process_object` and into its content hash:

    {"key": "02691156/1a04e3...",            # the dataset's own name, matched by split files
     "views": {"type": "r2n2", "dir": ".../rendering", "v1_source": ".../model.obj"},   # or "imnet"
     "tessellation": {"tolerance": 0.001, "angular_deg": 12.0}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources import catalogue, folder, imnet, pypi_wheel, shapenet, step
from pipeline.sources.keys import Key
from pipeline.sources.r2n2 import METADATA_FILE, load_r2n2_views, view_files
from pipeline.sources.spec import ObjectSpec, SourceError, decode_extras, encode_extras, make_object_id
from pipeline.stages.load import DEFAULT_MAX_TRIANGLES, check_triangles, load_mesh, referenced_files

# the names scripts and tests use from this package; library code imports them from spec.py
__all__ = ["SOURCE_TYPES", "ObjectSpec", "SourceError", "check_source", "decode_extras", "encode_extras",
           "extra_input_files", "hash_source", "list_objects", "load_dataset_views", "load_source_mesh",
           "make_object_id"]

SOURCE_TYPES = ("folder", "pypi_wheel", "shapenet_v1", "shapenet_v2", "step_folder", "imnet_hdf5", "catalogue")
_LISTER_MODULE = {"folder": folder, "pypi_wheel": pypi_wheel, "shapenet_v1": shapenet, "shapenet_v2": shapenet,
                  "step_folder": step, "imnet_hdf5": imnet, "catalogue": catalogue}


def check_source(source: Any) -> str:
    """Refuse a [[sources]] table with no known type, unknown keys (a typo such as `rooot` would otherwise be
    ignored), a missing required key or a value of the wrong type; returns its type. Each source module says its
    keys in SOURCE_KEYS (type -> key -> Key)."""
    if not isinstance(source, dict):
        raise SourceError(f"must be a table ([[sources]]), got {source!r}")
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise SourceError(f"unknown source type {kind!r} (known: {', '.join(SOURCE_TYPES)})")
    keys: dict[str, Key] = _LISTER_MODULE[kind].SOURCE_KEYS[kind]
    unknown = sorted(set(source) - set(keys) - {"type"})
    if unknown:
        raise SourceError(f"unknown key(s) {unknown}; known: {sorted({'type', *keys})}")
    for name, key in keys.items():
        if name not in source:
            if key.required:
                raise SourceError(f"{kind} source needs {name!r}: {key.what}")
        elif not key.ok(source[name]):
            raise SourceError(f"{name} must be {key.what}, got {source[name]!r}")
    return kind


def list_objects(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """Dispatch one manifest [[sources]] table to its source type, once its keys are checked (check_source)."""
    kind = check_source(source)
    if kind == "folder":
        return folder.list_folder(source, manifest_dir)
    if kind == "pypi_wheel":
        return pypi_wheel.list_wheel(source)
    if kind in ("shapenet_v1", "shapenet_v2"):
        return shapenet.list_shapenet(source, manifest_dir, version=int(kind[-1]))
    if kind == "step_folder":
        return step.list_step_folder(source, manifest_dir)
    if kind == "catalogue":
        return catalogue.list_catalogue(source)
    return imnet.list_imnet(source, manifest_dir)


def extra_input_files(extras: str) -> list[Path]:
    """Files besides the mesh whose bytes shape an object's arrays (view images, their metadata, a reference
    mesh), for the content hash. Files that should exist but do not are listed too; the caller hashes their
    absence, and process_object fails the object with the reason."""
    views = decode_extras(extras).get("views")
    if not views:
        return []
    if views.get("type") == "imnet":  # the images are in the HDF5 row (hash_source); the cameras are here
        return [Path(views["dir"]) / METADATA_FILE]
    return view_files(views)


def hash_source(h, source: str) -> None:
    """Feed an object's own input bytes to a hash: the mesh file with every file it names that its loader reads
    (a glTF's buffers and images: pipeline.stages.load.referenced_files), or one model's row of an IM-NET file."""
    if imnet.parse_row_source(source) is not None:
        imnet.hash_row(h, source)
        return
    if catalogue.is_catalogue_source(source):
        catalogue.hash_catalogue_source(h, source)
        return
    _hash_file(h, source)
    for uri, path in referenced_files(source):
        h.update(json.dumps(["uri", uri]).encode())
        if path is None or not path.is_file():  # the load fails the object, naming the URI; hashing the absence
            h.update(b"<missing>")  # redoes it once fixed
        else:
            _hash_file(h, path)


def _hash_file(h, path: str | Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def load_source_mesh(source: str, extras: str, max_triangles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """vertices (V, 3) float64 in the file's units, faces (F, 3) int64: a mesh file, a CAD file or a catalogue
    part (built from its parameters) tessellated at the source's stated tolerance, or the voxel surface of one
    model of an IM-NET file (`<file>.hdf5#<row>`).
    A mesh of more than `max_triangles` triangles (default: pipeline.stages.load.DEFAULT_MAX_TRIANGLES) is refused,
    from its header where the format has one."""
    limit = DEFAULT_MAX_TRIANGLES if max_triangles is None else max_triangles
    if imnet.parse_row_source(source) is not None:
        vertices, faces = imnet.load_imnet_mesh(source)
    elif catalogue.is_catalogue_source(source):
        vertices, faces = catalogue.load_catalogue_part(source, extras)
    elif (tessellation := decode_extras(extras).get("tessellation")) is not None:
        vertices, faces = step.load_cad(source, **tessellation)
    else:
        return load_mesh(source, limit)
    check_triangles(source, len(faces), limit)
    return vertices, faces


def load_dataset_views(extras: str, source: str, vertices: np.ndarray, faces: np.ndarray, scale: float,
                       center: np.ndarray, n_views: int, image_size: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The dataset's own views of an object, or None when its source ships none (then views are rendered).

    vertices (V, 3) are the normalised mesh, original = vertices * scale + center. Returns images uint8
    (n_views, S, S, 4), K float32 (n_views, 3, 3), Rt float32 (n_views, 3, 4) mapping the normalised frame
    to OpenCV camera coordinates.
    """
    views = decode_extras(extras).get("views")
    if not views:
        return None
    if views.get("type") == "imnet":
        return imnet.load_imnet_views(views, source, vertices, faces, scale, center, n_views, image_size)
    if views.get("type") != "r2n2":
        raise SourceError(f"unknown view type {views.get('type')!r} (known: r2n2, imnet)")
    return load_r2n2_views(views, vertices, faces, scale, center, n_views, image_size)
