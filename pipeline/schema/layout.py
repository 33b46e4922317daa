"""The store's contract in names (drawn in pipeline/schema/__init__.py): its files and constants, the object id
grammar and the one way to build a path from an id, the quantisers of points and distances, what each array is called
and told to zarr clients, and who an object is (ObjectMeta) with what preprocess makes of it (ObjectRecord)."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

LAYOUT_VERSION = 1
N_SURFACE = 9872  # paper §5.1: jittered surface points per object
N_UNIFORM = 128  # paper §5.1: uniform points per object
N_POINTS = N_SURFACE + N_UNIFORM

# uint16 fixed point over [-0.6, 0.6]: step 1.8e-5, well under the 1e-4 distance tolerance, and jittered
# surface points may leave the unit cube by a few sigma.
POINT_HALF_RANGE = 0.6
POINT_STEP = 2 * POINT_HALF_RANGE / 65535
# uint16 fixed point over [0, 1.2]: no point of the padded cube is farther than sqrt(3) * 0.6 ~ 1.04 from a
# surface that touches all six faces of the unit cube; the step keeps distances exact to 1e-4.
UDF_MAX = 1.2
UDF_STEP = UDF_MAX / 65535

TRAINING_ARRAYS = ("points", "udf", "inside", "scale", "center", "images", "K", "Rt")
REFERENCE_ARRAYS = ("ref_surface_points", "ref_surface_normals", "ref_uniform_points", "ref_uniform_inside")

INDEX_FILE = "index.json"
RUNS_FILE = "runs.jsonl"
SHARDS_DIR = "shards"
LOCK_FILE = "writer.lock"
FILES_ATTR = "files"  # shard attrs: {path relative to the shard: [bytes, crc32c]} of every file but its zarr.json

# <run id>-<split>-<k>, run id = UTC time + 6 hex digits (pipeline.runner): the only folder names we create
SHARD_NAME = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}-[A-Za-z0-9_]+-\d{5}$")
_TMP_SHARD_NAME = re.compile(r"^\.tmp-(?P<name>.+)-[0-9a-f]{8}$")


SHARDS_META_KEY = f"{SHARDS_DIR}/zarr.json"  # the group of the shards (SHARDS_GROUP_ATTRS)
PENDING_SUFFIX = ".pending"  # zarr.json.pending: a metadata upgrade's new document until it is committed
METADATA_KEY = "metadata"  # index.json: {path relative to the store: [bytes, crc32c]} of the zarr.json we read
INDEX_CRC_KEY = "crc32c"  # index.json: its own checksum (pipeline/schema/__init__.py)

# The object id grammar (manifests/README.md, "Object ids"): what pipeline.sources.spec.make_object_id keeps.
_ID_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
ID_GRAMMAR = "letters, digits, '_', '.' and '-'; no path separators; not '.' or '..'"


def is_id_char(c: str) -> bool:
    """A character kept in object ids and dataset names: ASCII letters, digits and `_.-`, and any other Unicode
    letter, digit or combining mark (categories L, N, M), so `零件/轴承.stl` keeps its name."""
    return c in _ID_ASCII if c.isascii() else unicodedata.category(c)[0] in "LNM"


def is_object_id(text: Any) -> bool:
    """True for an object id (or shard name) of the grammar: a file name in any folder, never a path."""
    return isinstance(text, str) and text not in ("", ".", "..") and all(is_id_char(c) for c in text)


def is_category(text: Any) -> bool:
    """A category as sources give it: a folder's or a manifest's name, spaces and punctuation included, but one
    line of text (it goes into one-line messages, metrics.csv and report.md). It never names a file."""
    return isinstance(text, str) and text != "" and not any(unicodedata.category(c) in ("Cc", "Zl", "Zp")
                                                           for c in text)


def object_file(folder: str | os.PathLike, object_id: str, suffix: str) -> Path:
    """folder/<object_id><suffix>, the one way to name an object's file: refuses an id outside the grammar (read
    from an edited store, say `../../../tmp/x`) and a result that is not directly inside `folder`."""
    folder = Path(folder)
    if not is_object_id(object_id):
        raise ValueError(f"object id {object_id!r} is not an object id ({ID_GRAMMAR}); refusing to build a path "
                         f"from it in {folder}")
    path = folder / f"{object_id}{suffix}"
    if os.path.normpath(path.parent) != os.path.normpath(folder) or "/" in suffix:
        raise ValueError(f"{path}: the file of object {object_id!r} would leave {folder}")
    return path


def is_safe_relative(rel: Any) -> bool:
    """A path of a shard's "files" record: relative, inside the shard (no '..', no empty or absolute part)."""
    return isinstance(rel, str) and all(part not in ("", ".", "..") for part in rel.split("/")) and "\\" not in rel


def shard_meta_key(shard: str) -> str:
    """The key of a shard's zarr.json in index.json's "metadata": its path relative to the store."""
    return f"{SHARDS_DIR}/{shard}/zarr.json"


def array_of(rel: str) -> str:
    return rel.split("/", 1)[0]


class StoreError(RuntimeError):
    """A store that is missing, incomplete or not of this layout."""


class DamagedObjectError(StoreError):
    """Stored bytes of an object that are missing or differ from what was written; rerunning preprocess redoes it."""


class StoreLockedError(StoreError):
    """Another preprocess run holds the store's writer lock."""


def is_shard_name(name: str) -> bool:
    return bool(SHARD_NAME.match(name))


def is_tmp_shard_name(name: str) -> bool:
    """A temporary folder of write_shard (left behind only by a killed run)."""
    m = _TMP_SHARD_NAME.match(name)
    return bool(m and is_shard_name(m.group("name")))


def quantize_points(points: np.ndarray) -> np.ndarray:
    """points: (..., 3) float, normalised frame -> uint16 codes (clipped to the quantisation range)."""
    q = np.rint((np.asarray(points, np.float64) + POINT_HALF_RANGE) / POINT_STEP)
    return np.clip(q, 0, 65535).astype(np.uint16)


def dequantize_points(codes: np.ndarray) -> np.ndarray:
    """uint16 codes -> (..., 3) float32 points in the normalised frame."""
    return (codes.astype(np.float64) * POINT_STEP - POINT_HALF_RANGE).astype(np.float32)


def quantize_udf(udf: np.ndarray) -> np.ndarray:
    """Unsigned distances (...,) in normalised units -> uint16 codes; refuses distances past UDF_MAX."""
    udf = np.asarray(udf, np.float64)
    if udf.size and (udf.min() < 0 or udf.max() > UDF_MAX):
        raise ValueError(f"unsigned distances must lie in [0, {UDF_MAX}], got [{udf.min():.3g}, {udf.max():.3g}]")
    return np.rint(udf / UDF_STEP).astype(np.uint16)


def dequantize_udf(codes: np.ndarray) -> np.ndarray:
    return (codes.astype(np.float64) * UDF_STEP).astype(np.float32)


# What a zarr client is told about each array, so that xarray, dask or plain zarr read a shard right without this
# module: zarr v3 "dimension_names", and for the quantised arrays CF's scale_factor / add_offset, which xarray
# applies itself (in float64: codes * scale_factor + add_offset, the very values dequantize_points / dequantize_udf
# round to float32). A shard's dimensions must agree in size across its arrays, as an xarray Dataset requires: so
# K's and Rt's 3- and 4-long axes have names of their own (K @ Rt @ [p, 1] contracts camera_xyz, then xyz1) instead
# of the images' row and col.
ARRAY_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "points": ("object", "point", "xyz"),
    "udf": ("object", "point"),
    "inside": ("object", "point"),
    "scale": ("object",),
    "center": ("object", "xyz"),
    "images": ("object", "view", "row", "col", "channel"),
    "K": ("object", "view", "uvw", "camera_xyz"),
    "Rt": ("object", "view", "camera_xyz", "xyz1"),
    "ref_surface_points": ("object", "ref_surface_point", "xyz"),
    "ref_surface_normals": ("object", "ref_surface_point", "xyz"),
    "ref_uniform_points": ("object", "ref_uniform_point", "xyz"),
    "ref_uniform_inside": ("object", "ref_uniform_point"),
}
_ARRAY_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "points": {"long_name": "sample points, normalised frame (unit cube, longest side 1)", "units": "1",
               "scale_factor": POINT_STEP, "add_offset": -POINT_HALF_RANGE},
    "udf": {"long_name": "unsigned distance to the surface", "units": "1", "scale_factor": UDF_STEP,
            "add_offset": 0.0},
    "inside": {"long_name": "point inside the object (generalised winding number)"},
    "scale": {"long_name": "original = points * scale + center", "units": "source units"},
    "center": {"long_name": "original = points * scale + center", "units": "source units"},
    "images": {"long_name": "views, RGB or RGBA (transparent background)"},
    "K": {"long_name": "camera intrinsics (u = column, v = row)", "units": "pixel"},
    "Rt": {"long_name": "normalised frame to OpenCV camera (x right, y down, z forward)"},
    "ref_surface_points": {"long_name": "points on the true surface, normalised frame", "units": "1"},
    "ref_surface_normals": {"long_name": "unit normals of ref_surface_points", "units": "1"},
    "ref_uniform_points": {"long_name": "uniform points in the reference box, normalised frame", "units": "1"},
    "ref_uniform_inside": {"long_name": "ref_uniform_points inside the object (winding number)"},
}
# The attributes of STORE/shards/zarr.json: the group a zarr client walks through from the root to the shards
SHARDS_GROUP_ATTRS = {"layout_version": LAYOUT_VERSION,
                      "description": "one group per shard of objects; a shard's attribute object_ids names the object "
                                     "of each row (its leading 'object' axis); index.json maps each object id to the "
                                     "[shard, row] that holds it now"}


def describe_array(name: str, ndim: int) -> tuple[list[str], dict[str, Any]]:
    """(dimension_names, attributes) of a shard's array `name` with `ndim` axes, the object row first. An array
    this module does not name gets `<name>_<axis>` dimensions and no attributes."""
    dims = ARRAY_DIMENSIONS.get(name)
    if dims is None or len(dims) != ndim:
        return ["object", *(f"{name}_{axis}" for axis in range(1, ndim))], {}
    return list(dims), dict(_ARRAY_ATTRIBUTES.get(name, {}))


@dataclass(frozen=True)
class ObjectMeta:
    """Who an object is: what a source says about it, its split, and the hash that names its unit of work. The
    preprocess driver plans with it, a shard's attributes store it (OBJECT_FIELDS), `Store.info` returns it."""

    object_id: str
    category: str
    split: str
    source: str
    """the mesh file (or `<file>.hdf5#<row>` for an IM-NET model)"""
    content_hash: str = ""
    extras: str = ""
    """the source's JSON extras (pipeline.sources.spec.ObjectSpec: a CAD tolerance, dataset views): with `source`,
    what reloads the exact geometry preprocess used"""
    draw_seed: str = ""
    """the hash the object's random draws (points, views) are seeded from: stable across code versions
    (pipeline.runner.object_hashes)"""

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in OBJECT_FIELDS}


OBJECT_FIELDS = tuple(f.name for f in fields(ObjectMeta))


@dataclass
class ObjectRecord:
    """What the preprocess stage produces for one object: who it is and its arrays (above, without the row axis)."""

    meta: ObjectMeta
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """seconds per step; reported, not stored"""
    cpu: dict[str, float] = field(default_factory=dict)
    """core-seconds per step (this process's CPU time, all of its threads); reported, not stored"""

    @property
    def object_id(self) -> str:
        return self.meta.object_id
