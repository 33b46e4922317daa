"""Where objects come from: each source type turns a manifest entry into ObjectSpecs (id, category, mesh path).

A source may provide more than a mesh file (a dataset's own renderings with their cameras, a CAD tolerance,
the dataset's name for the object); it says so in `ObjectSpec.extras`, a JSON object that travels with the
object to `process_object` and into its content hash:

    {"key": "02691156/1a04e3...",            # the dataset's own name, matched by split files
     "views": {"type": "r2n2", "dir": ".../rendering", "v1_source": ".../model.obj"},   # or "imnet"
     "tessellation": {"tolerance": 0.001, "angular_deg": 12.0}}
"""

from __future__ import annotations

import importlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.schema import is_id_char  # the id grammar is part of the store's contract (a reader checks it)


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a source lists it, before a split is assigned."""

    object_id: str
    category: str
    source: str
    extras: str = ""
    """JSON object of source-provided inputs beyond the mesh file (see the module docstring); "" for none"""


class SourceError(ValueError):
    """A manifest source that cannot be read (missing root, bad pattern, failed download)."""


_ID_RUNS = re.compile("\0+")

SOURCE_TYPES = ("folder", "pypi_wheel", "shapenet_v1", "shapenet_v2", "step_folder", "imnet_hdf5")
_LISTER_MODULE = {"folder": "folder", "pypi_wheel": "pypi_wheel", "shapenet_v1": "shapenet", "shapenet_v2": "shapenet",
                  "step_folder": "step", "imnet_hdf5": "imnet"}


def make_object_id(*parts: str) -> str:
    """A file-name-safe object id from its parts (category, relative path...), joined by '-'.

    Each part is put in Unicode NFC first (macOS spells file names decomposed, Linux as written: one id for
    both); runs of other characters become one '_', and '_' is stripped from the ends of each part. An ASCII
    name gives the same id as before Unicode letters were kept."""
    out = []
    for p in parts:
        if p:
            kept = "".join(c if is_id_char(c) else "\0" for c in unicodedata.normalize("NFC", p))
            out.append(_ID_RUNS.sub("_", kept).strip("_"))
    return "-".join(out)


def suffix_colliding_ids(specs: list[ObjectSpec]) -> list[ObjectSpec]:
    """Files of one source whose ids are equal but whose suffixes differ (`part.obj` and `part.stl`: a robot
    package's visual and collision meshes side by side) get their lower-case suffix appended, `cat-part_obj`
    and `cat-part_stl`; every other id is left as it is. Ids still equal after this are refused by the manifest."""
    suffixes: dict[str, set[str]] = {}
    for s in specs:
        suffixes.setdefault(s.object_id, set()).add(Path(s.source).suffix.lower())
    return [replace(s, object_id=f"{s.object_id}_{Path(s.source).suffix.lower().lstrip('.')}")
            if len(suffixes[s.object_id]) > 1 else s for s in specs]


@dataclass(frozen=True)
class Key:
    """What one key of a [[sources]] table must hold: `what` is said in the error, `ok` tests a value."""

    what: str
    ok: Callable[[Any], bool]
    required: bool = False


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(_text(x) for x in v)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


TEXT = Key("a non-empty string", _text)
TEXTS = Key("a list of non-empty strings", _texts)
TEXT_OR_TEXTS = Key("a string or a list of strings", lambda v: _text(v) or (_texts(v) and v != []))
FLAG = Key("true or false", lambda v: isinstance(v, bool))


def needed(key: Key, purpose: str) -> Key:
    """The same key, required; `purpose` (what the value is for) is said after its type."""
    return replace(key, what=f"{key.what} ({purpose})", required=True)


def number_in(lo: float, hi: float, lo_open: bool = True, hi_open: bool = False, what: str = "") -> Key:
    """A number in the interval lo..hi (open or closed at each end), e.g. (0, 0.1)."""
    text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}{' ' + what if what else ''}"
    return Key(text, lambda v: _number(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi))


def check_source(source: Any) -> str:
    """Refuse a [[sources]] table with no known type, unknown keys (a typo such as `rooot` would otherwise be
    ignored), a missing required key or a value of the wrong type; returns its type. Each source module says its
    keys in SOURCE_KEYS (type -> key -> Key)."""
    if not isinstance(source, dict):
        raise SourceError(f"must be a table ([[sources]]), got {source!r}")
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise SourceError(f"unknown source type {kind!r} (known: {', '.join(SOURCE_TYPES)})")
    keys: dict[str, Key] = importlib.import_module(f"pipeline.sources.{_LISTER_MODULE[kind]}").SOURCE_KEYS[kind]
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


def encode_extras(extras: dict[str, Any]) -> str:
    """The canonical JSON text of a source's extras (sorted keys, so equal extras hash equally)."""
    return json.dumps(extras, sort_keys=True) if extras else ""


def decode_extras(extras: str) -> dict[str, Any]:
    return json.loads(extras) if extras else {}


def list_objects(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """Dispatch one manifest [[sources]] table to its source type, once its keys are checked (check_source)."""
    kind = check_source(source)
    if kind == "folder":
        from pipeline.sources.folder import list_folder

        return list_folder(source, manifest_dir)
    if kind == "pypi_wheel":
        from pipeline.sources.pypi_wheel import list_wheel

        return list_wheel(source)
    if kind in ("shapenet_v1", "shapenet_v2"):
        from pipeline.sources.shapenet import list_shapenet

        return list_shapenet(source, manifest_dir, version=int(kind[-1]))
    if kind == "step_folder":
        from pipeline.sources.step import list_step_folder

        return list_step_folder(source, manifest_dir)
    from pipeline.sources.imnet import list_imnet

    return list_imnet(source, manifest_dir)


def extra_input_files(extras: str) -> list[Path]:
    """Files besides the mesh whose bytes shape an object's arrays (view images, their metadata, a reference
    mesh), for the content hash. Files that should exist but do not are listed too; the caller hashes their
    absence, and process_object fails the object with the reason."""
    views = decode_extras(extras).get("views")
    if not views:
        return []
    from pipeline.sources.r2n2 import METADATA_FILE, view_files

    if views.get("type") == "imnet":  # the images are in the HDF5 row (hash_source); the cameras are here
        return [Path(views["dir"]) / METADATA_FILE]
    return view_files(views)


def hash_source(h, source: str) -> None:
    """Feed an object's own input bytes to a hash: the mesh file with every file it names that its loader reads
    (a glTF's buffers and images: pipeline.stages.load.referenced_files), or one model's row of an IM-NET file."""
    from pipeline.sources.imnet import hash_row, parse_row_source
    from pipeline.stages.load import referenced_files

    if parse_row_source(source) is not None:
        hash_row(h, source)
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
    """vertices (V, 3) float64 in the file's units, faces (F, 3) int64: a mesh file, a CAD file tessellated
    at the source's stated tolerance, or the voxel surface of one model of an IM-NET file (`<file>.hdf5#<row>`).
    A mesh of more than `max_triangles` triangles (default: pipeline.stages.load.DEFAULT_MAX_TRIANGLES) is refused,
    from its header where the format has one."""
    from pipeline.sources.imnet import load_imnet_mesh, parse_row_source
    from pipeline.stages.load import DEFAULT_MAX_TRIANGLES, MeshError, load_mesh

    limit = DEFAULT_MAX_TRIANGLES if max_triangles is None else max_triangles
    if parse_row_source(source) is not None:
        vertices, faces = load_imnet_mesh(source)
    elif (tessellation := decode_extras(extras).get("tessellation")) is not None:
        from pipeline.sources.step import load_cad

        vertices, faces = load_cad(source, **tessellation)
    else:
        return load_mesh(source, limit)
    if len(faces) > limit:
        raise MeshError(f"{source}: {len(faces):,} triangles, above the limit of {limit:,} (max_triangles in the "
                        "manifest's [params])")
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
        from pipeline.sources.imnet import load_imnet_views

        return load_imnet_views(views, source, vertices, faces, scale, center, n_views, image_size)
    if views.get("type") != "r2n2":
        raise SourceError(f"unknown view type {views.get('type')!r} (known: r2n2, imnet)")
    from pipeline.sources.r2n2 import load_r2n2_views

    return load_r2n2_views(views, vertices, faces, scale, center, n_views, image_size)
