"""The zarr layout: the ONE contract between preprocess, train and eval.

Everything that reads or writes a preprocessed dataset goes through this module; the trainer and the
evaluation import it rather than re-declaring array names, dtypes or frames.

Layout (zarr v3, one folder per store; a complete hierarchy, so any zarr client walks from the root to every
array, and xarray opens a shard as a Dataset: README.md, "The store"; docs/PREPROCESS.md)::

    STORE/
      zarr.json          root group; attrs: layout_version, dataset, params, code_version
      index.json         {"status": "complete" | "in_progress", "objects": {object_id: [shard, row]},
                          "metadata": {"zarr.json": [bytes, crc32c], "shards/zarr.json": [bytes, crc32c],
                          "shards/<name>/zarr.json": [bytes, crc32c], ...}, "crc32c": <crc32c of the rest>}
                         written atomically (temporary name + rename) by the preprocess driver
      runs.jsonl         one JSON line per object per run (run_id, object_id, source, status, error, ...)
      writer.lock        held (flock) by the one preprocess run writing the store; the kernel releases it
                         when that process ends, however it ends
      shards/zarr.json   the group of the shards (SHARDS_GROUP_ATTRS), written by init_store
      shards/<name>/     a zarr group holding n objects; its attrs name each row's object ("object_ids", for any
                         client) and list them ("objects": [{object_id,
                         category, split, source, content_hash, extras, draw_seed}, ...]; extras = the source's
                         JSON extras, so eval reloads the exact geometry through
                         pipeline.sources.load_source_mesh) and record every file of the shard
                         ("files": {relative path: [bytes, crc32c]}). Written whole to
                         shards/.tmp-<name>-<uuid> and renamed, so a crash never leaves a half shard.
                         <name> is <run id>-<split>-<k>: only folders of that name are ever deleted.

Integrity: every inner chunk carries a crc32c (zarr's crc32c codec after the compressor) and every chunk is
stored, empty ones included, so an absent chunk is damage, never "fill value". A read first checks that the
array's files exist with the recorded sizes (a deleted or truncated file would otherwise read back as fill
values), then zarr checks the shard index's and the chunk's crc32c; any failure raises DamagedObjectError
naming the object, the array and the file. `verify_shard` compares whole files with their recorded crc32c and
finds the damaged objects (what validation reports and a rerun of preprocess redoes).

The metadata documents decide what a read returns (an array's zarr.json gives its shape: one edited digit and
zarr pads the read with fill values; index.json gives each object's shard and row), so they are verified like
the chunks, in a chain that ends at a document checking itself:

    index.json           its own "crc32c": of the document without that key, as compact JSON with sorted keys
                         (`_index_crc`); checked on every open
      -> "metadata"      size and crc32c of the root zarr.json and of every indexed shard's zarr.json, read
                         whole and checked before they are parsed
        -> "files"       (a shard's attributes) size and crc32c of every other file of the shard: its arrays'
                         zarr.json, checked before an array is opened, and its chunk files
          -> chunks      zarr's crc32c of each chunk and of each shard index, checked on every read

A careless edit anywhere is found. A deliberate one that recomputes every checksum is not (there is no key):
so the object ids and categories read are also checked against the id grammar (`is_object_id`), and every
path built from an id goes through `object_file`, which keeps it in its folder. Stores written before index.json
had "metadata" (no "crc32c" key) still open, with the arrays' zarr.json checked against the shards' "files";
the next `aps preprocess` into them records the rest (it rewrites index.json; nothing is recomputed). A
metadata-only change of an array (attributes, dimension names) goes through `rewrite_array_metadata`, which
re-records the checksums up the chain.

Arrays of a shard (leading axis = object row; every array uses zarr sharding with one shard file per
array and one inner chunk per object, so reading one object decompresses nothing of the others). Each carries its
"dimension_names" (ARRAY_DIMENSIONS) and a long_name; the quantised `points` and `udf` carry CF's scale_factor and
add_offset, which xarray applies on its own. Stores of before those get them from the next `aps preprocess`
(`upgrade_metadata`: metadata only, committed by one rewrite of index.json):

    points        uint16  (n, P, 3)       P = 10000 by default: rows 0..9871 the jittered surface
                                          points (in Morton order of their coordinates, which only
                                          helps compression), 9872..9999 the uniform points (paper
                                          §5.1). Quantised:
                                          p = q * POINT_STEP - POINT_HALF_RANGE in the normalised frame
                                          (unit cube [-0.5, 0.5]^3, longest side 1). Distances are
                                          computed on the quantised points, so `udf` is exact for the
                                          coordinates you read back.
    udf           uint16  (n, P)          unsigned distance to the surface, normalised units, quantised:
                                          d = q * UDF_STEP (step 1.8e-5); read back as float32
    inside        bool    (n, P)          inside the union of the mesh's parts (|generalised winding
                                          number| >= 0.5)
    scale         float64 (n,)            original = points * scale + center
    center        float64 (n, 3)
    images        uint8   (n, V, H, W, 4) RGBA views, transparent background (an object's views are one chunk)
    K             float32 (n, V, 3, 3)    intrinsics in pixels (u = column, v = row)
    Rt            float32 (n, V, 3, 4)    normalised frame -> OpenCV camera (x right, y down, z forward)

Evaluation reference data (shards of the split named in params["reference_splits"], "test" by default):

    ref_surface_points   float32 (n, R, 3)   points on the true surface, normalised frame
    ref_surface_normals  float32 (n, R, 3)   unit normals of those points
    ref_uniform_points   float32 (n, R, 3)   uniform in the reference box [-h, h]^3, h = 0.5 (1 +
                                             params["reference_padding"]): [-0.55, 0.55]^3 by default, OccNet's
                                             box (stores of pipeline-4 and before: [-0.5, 0.5]^3)
    ref_uniform_inside   bool    (n, R)      inside flags of those points (winding number)
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import DiskFullError, atomic_write_bytes, atomic_write_text, out_of_space, remove_stale_temporaries
from common.locking import single_writer

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
INDEX_CRC_KEY = "crc32c"  # index.json: its own checksum (module docstring)

# The object id grammar (manifests/README.md, "Object ids"): what pipeline.sources.make_object_id keeps.
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


_DECODERS = {"points": dequantize_points, "udf": dequantize_udf}

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


def file_checksum(path: Path) -> tuple[int, int]:
    """(bytes, crc32c) of a whole file, read in blocks (shards of reference data are tens of MB)."""
    import google_crc32c

    crc, size = 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = google_crc32c.extend(crc, block)
            size += len(block)
    return size, crc


def _record(data: bytes) -> list[int]:
    """[bytes, crc32c] of a document held in memory (the form of every checksum record of the store)."""
    import google_crc32c

    return [len(data), google_crc32c.value(data)]


def _index_crc(doc: Mapping[str, Any]) -> int:
    """index.json's own checksum: crc32c of the document without its "crc32c" key, as compact ASCII JSON with
    sorted keys, so it does not depend on how the file was indented."""
    import google_crc32c

    rest = {k: v for k, v in doc.items() if k != INDEX_CRC_KEY}
    return google_crc32c.value(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


_SEEN: dict[str, tuple[tuple[int, int, int], list[int]]] = {}  # path -> (inode, size, mtime_ns), its record


def _metadata_record(path: Path) -> list[int]:
    """[bytes, crc32c] of a metadata file, read again only when its inode, size or mtime changed: the driver
    rewrites index.json after every shard, and re-reading every shard's zarr.json each time would make a
    ShapeNet run read ~10^10 bytes."""
    st = path.stat()
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    seen = _SEEN.get(str(path))
    if seen is None or seen[0] != key:
        seen = _SEEN[str(path)] = (key, _record(path.read_bytes()))
    return list(seen[1])


def _safe_relative(rel: Any) -> bool:
    """A path of a shard's "files" record: relative, inside the shard (no '..', no empty or absolute part)."""
    return isinstance(rel, str) and all(part not in ("", ".", "..") for part in rel.split("/")) and "\\" not in rel


def _checked_record(value: Any) -> tuple[int, int] | None:
    """(bytes, crc32c) of a record read from a store, None when it is not two non-negative integers."""
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                             and v >= 0 for v in value)):
        return value[0], value[1]
    return None


def _codecs(name: str, dtype: np.dtype) -> dict[str, Any]:
    """Measured on the industrial dataset (benchmarks/bench_preprocess.py prints the bytes per object and array):
    - points, written in Morton order: a fifth smaller with bit shuffling, not at all with byte shuffling;
      zstd level 7 would save 2.5% over 3 at 4x its time (5.5 vs 1.3 ms an object: they are near their entropy,
      ~46 kB for 10,000 noisy points);
    - images: the rendered views have equal R, G and B channels, so byte shuffling over the 4 bytes of a pixel
      puts three identical planes side by side and zstd stores one of them (2.3x smaller than level 7 without
      shuffling); level 5 is within 2% of level 7 at a third of its time. Photographs (dataset views) lose
      nothing by it.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    typesize = np.dtype(dtype).itemsize
    shuffle = "noshuffle" if typesize == 1 else "shuffle"
    level = 3
    if name == "points":
        shuffle = "bitshuffle"
    if name == "images":
        shuffle, typesize, level = "shuffle", 4, 5
    # crc32c of each compressed chunk: zarr checks it on every read (4 bytes a chunk)
    return {"compressors": [BloscCodec(cname="zstd", clevel=level, shuffle=shuffle, typesize=typesize),
                            Crc32cCodec()]}


def _inner_chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One inner chunk per object, its views included: the trainer reads an object's views together, and one
    chunk per view made zarr's per-chunk work the costliest part of writing a shard (35 vs 20 ms an object;
    the views also compress 10% better together)."""
    return (1, *shape[1:])


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
    """the source's JSON extras (pipeline.sources.ObjectSpec: a CAD tolerance, dataset views): with `source`,
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


def write_shard(store_path: str | os.PathLike, shard_name: str, records: list[ObjectRecord]) -> str:
    """Write one shard of objects whole and atomically; returns the shard name.

    Only one task ever writes a given shard name, so parallel workers never share a file.
    """
    import zarr

    if not records:
        raise ValueError("write_shard needs at least one object")
    names = list(records[0].arrays)
    for r in records:
        if list(r.arrays) != names:
            raise ValueError(f"shard {shard_name}: object {r.object_id} has arrays {list(r.arrays)}, "
                             f"expected {names}")
    shards_dir = Path(store_path) / SHARDS_DIR
    final = shards_dir / shard_name
    tmp = shards_dir / f".tmp-{shard_name}-{uuid.uuid4().hex[:8]}"
    writing = final / "zarr.json"  # the file being written, as it is named once the shard is in place
    try:
        shards_dir.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        # object_ids: the object of each row for any zarr client, as JSON (docs/PREPROCESS.md: not a string array)
        group.attrs.update({"layout_version": LAYOUT_VERSION, "objects": [r.meta.as_dict() for r in records],
                            "object_ids": [r.object_id for r in records]})
        for name in names:
            data = np.stack([np.asarray(r.arrays[name]) for r in records])
            writing = final / name / "zarr.json"
            dims, attributes = describe_array(name, data.ndim)
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=_inner_chunks(name, data.shape),
                shards=data.shape, config={"write_empty_chunks": True}, dimension_names=dims,
                attributes=attributes, **_codecs(name, data.dtype),
            )
            writing = final / name / "c" / "/".join(["0"] * data.ndim)  # its one shard file
            arr[...] = data
        files = {}
        for f in sorted(tmp.rglob("*")):
            rel = f.relative_to(tmp).as_posix()
            if f.is_file() and rel != "zarr.json":
                files[rel] = list(file_checksum(f))
        writing = final / "zarr.json"
        group.attrs.update({FILES_ATTR: files})
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never complete, never read: its space goes back at once
        if out_of_space(exc):
            raise _shard_disk_full(writing, final, len(records)) from exc
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return shard_name


def _shard_disk_full(path: Path, final: Path, n_objects: int) -> DiskFullError:
    """The one line of a shard that did not fit: the file being written when the disk filled (under its name in
    the finished shard: zarr's error names no file), what is kept, what to do."""
    try:
        free = f"{shutil.disk_usage(final.parent).free / 1e6:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    error = DiskFullError(f"{path}: disk full while writing it ({free}); the {n_objects} object(s) of shard "
                          f"{final.name} are not written, every shard written before is kept: make space and "
                          "rerun `aps preprocess` to finish")
    error.errno = errno.ENOSPC
    return error


def append_run_records(store_path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Append one JSON line per record to STORE/runs.jsonl. On a full disk the lines of this call are taken back
    (the file is cut to its former size: no half line is left for the next append to run into) and DiskFullError
    names the file."""
    path = Path(store_path) / RUNS_FILE
    data = "".join(json.dumps(dict(r)) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        os.ftruncate(fd, start)
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free there"
        except OSError:
            free = "free space unknown"
        error = DiskFullError(f"{path}: disk full while appending this run's records ({free}); the shards written "
                              "so far are kept: make space and rerun `aps preprocess` to finish")
        error.errno = exc.errno
        raise error from None
    finally:
        os.close(fd)


def shard_objects(store_path: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """Completed shards and the objects they hold, read from the shard attributes (temporary ones skipped)."""
    shards_dir = Path(store_path) / SHARDS_DIR
    out: dict[str, list[dict[str, str]]] = {}
    if not shards_dir.is_dir():
        return out
    for d in sorted(shards_dir.iterdir()):
        meta = d / "zarr.json"
        if not is_shard_name(d.name) or not meta.is_file():  # a folder we did not write is never read
            continue
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {})
        except json.JSONDecodeError:
            continue
        out[d.name] = list(attrs.get("objects", []))
    return out


def read_shard_attrs(store_path: str | os.PathLike, shard: str, record: Sequence[int] | None = None
                     ) -> dict[str, Any]:
    """A shard's group attributes, parsed from the bytes checked against `record` (index.json's [bytes, crc32c]
    of the shard's zarr.json) when one is given; DamagedObjectError naming the file when they cannot be read or
    differ. A shard without "files" is refused by the callers as an older aps's, whatever its checksum."""
    meta = Path(store_path) / SHARDS_DIR / shard / "zarr.json"
    try:
        data = meta.read_bytes()
        attrs = dict(json.loads(data).get("attributes", {}))
    except FileNotFoundError:
        raise DamagedObjectError(f"{meta}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise DamagedObjectError(f"{meta}: not readable JSON ({exc})") from None
    if record is not None and _record(data) != list(record) and isinstance(attrs.get(FILES_ATTR), dict):
        raise DamagedObjectError(f"{meta}: checksum differs from the one recorded in {INDEX_FILE} (edited or "
                                 "damaged after it was written)")
    return attrs


def read_index(store_path: str | os.PathLike) -> dict[str, Any]:
    """index.json, checked: readable JSON with an "objects" table and, when it has one (stores of before the
    metadata checksums have not), its own crc32c. StoreError naming the file otherwise."""
    index_file = Path(store_path) / INDEX_FILE
    try:
        index = json.loads(index_file.read_bytes())
        if not isinstance(index, dict) or not isinstance(index.get("objects"), dict):
            raise ValueError("no 'objects' table")
        if INDEX_CRC_KEY in index:
            if index[INDEX_CRC_KEY] != _index_crc(index):
                raise ValueError("checksum differs from the one it was written with: edited or damaged")
            if not isinstance(index.get(METADATA_KEY), dict):
                raise ValueError(f"no {METADATA_KEY!r} table")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{index_file}: damaged ({exc}); rerun `aps preprocess` to rebuild it") from None
    return index


_RECORDED: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _recorded_metadata(store_path: str | os.PathLike) -> dict[str, Any]:
    """index.json's checksums of the metadata files, {} when it has none or cannot be trusted (a rerun then
    takes the files as it finds them, as for a store of before the checksums). Cached by the file's stat, for
    `verify_shard` over thousands of shards."""
    path = Path(store_path) / INDEX_FILE
    try:
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        seen = _RECORDED.get(str(path))
        if seen is None or seen[0] != key:
            seen = _RECORDED[str(path)] = (key, dict(read_index(store_path).get(METADATA_KEY) or {}))
    except (OSError, StoreError):
        return {}
    return seen[1]


def _shard_meta_key(shard: str) -> str:
    """The key of a shard's zarr.json in index.json's "metadata": its path relative to the store."""
    return f"{SHARDS_DIR}/{shard}/zarr.json"


def _array_of(rel: str) -> str:
    return rel.split("/", 1)[0]


def verify_shard(store_path: str | os.PathLike, shard: str) -> dict[int, str]:
    """Rows of a shard whose stored bytes are missing or damaged -> the reason; {} when every file matches the
    size and crc32c recorded at write time. Where a file's checksum differs but its index is intact, each row of
    that array is decoded on its own (zarr checks each chunk's crc32c), so only the damaged objects are named.
    The shard's zarr.json is checked first against index.json's record, when index.json has one: DamagedObjectError
    (every row) when it differs."""
    import zarr

    root = Path(store_path) / SHARDS_DIR / shard
    attrs = read_shard_attrs(store_path, shard, _recorded_metadata(store_path).get(_shard_meta_key(shard)))
    n = len(attrs.get("objects", []))
    files = attrs.get(FILES_ATTR)
    if not isinstance(files, dict) or not files:
        return dict.fromkeys(range(n), f"{root}: written without checksums (an older aps); it is redone")
    unsafe = next((rel for rel, rec in files.items() if not _safe_relative(rel) or _checked_record(rec) is None),
                  None)
    if unsafe is not None:
        return dict.fromkeys(range(n), f"{root / 'zarr.json'}: its record of the file {unsafe!r} is not a file of "
                                       "the shard with its size and checksum (edited or damaged)")
    damaged: dict[int, str] = {}
    for rel, (size, crc) in files.items():
        path = root / rel
        if not path.is_file():
            reason = f"{path}: missing"
        elif path.stat().st_size != size:
            reason = f"{path}: {path.stat().st_size} bytes, {size} were written"
        elif file_checksum(path)[1] != crc:
            reason = f"{path}: checksum differs from the one recorded at write time"
        else:
            continue
        rows = range(n)
        if path.is_file() and path.name != "zarr.json":  # the damage may be in a few objects' chunks only
            try:
                arr = zarr.open_array(str(root / _array_of(rel)), mode="r", zarr_format=3)
                bad = []
                for row in range(n):
                    try:
                        arr[row]
                    except Exception:  # noqa: BLE001 - any decode failure is damage of that row
                        bad.append(row)
                rows = bad or range(n)  # checksum differs and no chunk fails: trust none of them
            except Exception:  # noqa: BLE001 - index or metadata unreadable: every row of the array
                pass
        for row in rows:
            damaged.setdefault(row, reason)
    return damaged


@contextmanager
def writer_lock(store_path: str | os.PathLike, run_id: str) -> Iterator[None]:
    """Hold the store's single-writer lock (flock on STORE/writer.lock) for a preprocess run.

    A second writer is refused at once, naming the holder. The kernel drops the lock when its process ends
    (kill -9 included), so a crashed run never leaves the store locked; the file itself stays.
    """
    def refused(who: str) -> StoreLockedError:
        return StoreLockedError(f"{store_path}: another `aps preprocess` is writing this store: {who}; wait for it "
                                "to finish (a store has one writer at a time)")

    with single_writer(Path(store_path) / LOCK_FILE, refused, run_id=run_id):
        yield


def check_store_folder(store_path: str | os.PathLike, dataset: str | None = None,
                       replace_dataset: bool = False) -> None:
    """Refuse to write into a folder that holds something other than a store: we never touch files we did not
    create. An absent or empty folder (or one holding only our lock file) becomes a new store. A store of another
    dataset than `dataset` is refused too, naming it and its object count, unless `replace_dataset`: a run
    deletes the objects its manifest does not list, so writing `other.toml` into it would delete every one."""
    path = Path(store_path)
    if not path.exists():
        return
    if not path.is_dir():
        raise StoreError(f"{path}: exists and is not a folder; give --out a new or empty folder")
    meta = path / "zarr.json"
    if meta.is_file():
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise StoreError(f"{meta}: not readable JSON ({exc}); not an aps store, not touched") from None
        if not (isinstance(attrs, dict) and "layout_version" in attrs and "dataset" in attrs):
            raise StoreError(f"{path}: a zarr group that is not an aps store; give --out a new or empty folder")
        if dataset is not None and attrs["dataset"] != dataset and not replace_dataset:
            try:
                held = f"{len(read_index(path)['objects'])} objects"
            except (OSError, StoreError):
                held = "objects, how many is unknown (no readable index.json)"
            raise StoreError(f"{path}: holds dataset {attrs['dataset']!r} ({held}), not {dataset!r}; preprocessing "
                             f"{dataset!r} into it would delete them: give --out another folder, or pass "
                             "--replace-dataset to replace that dataset")
        return
    others = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if others:
        raise StoreError(f"{path}: folder is not empty and is not an aps store (holds {', '.join(others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}); give --out a new or empty folder")


def write_index(store_path: str | os.PathLike, index: Mapping[str, tuple[str, int]], complete: bool) -> None:
    """index.json for `index` {object_id: (shard, row)}, with the checksums of the root's and each indexed shard's
    zarr.json and its own (module docstring). Written atomically; DiskFullError names it on a full disk."""
    root = Path(store_path)
    payload: dict[str, Any] = {"status": "complete" if complete else "in_progress",
                               "objects": {k: [s, int(r)] for k, (s, r) in sorted(index.items())}}
    metadata = {rel: _metadata_record(root / rel) for rel in ("zarr.json", SHARDS_META_KEY) if (root / rel).is_file()}
    for shard in sorted({s for s, _ in index.values()}):
        metadata[_shard_meta_key(shard)] = _metadata_record(root / _shard_meta_key(shard))
    payload[METADATA_KEY] = metadata
    _write_index_doc(root, payload)


def _write_index_doc(root: Path, doc: dict[str, Any]) -> None:
    doc[INDEX_CRC_KEY] = _index_crc(doc)
    atomic_write_text(root / INDEX_FILE, json.dumps(doc, indent=0))


def rewrite_array_metadata(store_path: str | os.PathLike, shard: str, name: str,
                           attributes: Mapping[str, Any] | None = None,
                           dimension_names: Sequence[str | None] | None = None) -> None:
    """A metadata-only change of one array of a shard: update its zarr.json's "attributes" (CF's scale_factor,
    say) and set its "dimension_names", nothing that decides which bytes a read returns; then record the new
    checksums up the chain (the shard's "files", index.json's record of the shard's zarr.json, index.json's own).

    The documents are checked against their records first, so damage is never blessed with fresh checksums.
    Each file is replaced atomically; a crash between two of them leaves a chain that reads as damaged, which the
    next `aps preprocess` redoes. The caller holds the writer lock (`writer_lock`)."""
    root = Path(store_path)
    index = read_index(root)
    key = _shard_meta_key(shard)
    attrs = read_shard_attrs(root, shard, (index.get(METADATA_KEY) or {}).get(key))
    files = attrs.get(FILES_ATTR)
    rel = f"{name}/zarr.json"
    recorded = _checked_record(files.get(rel)) if isinstance(files, dict) else None
    array_meta = root / SHARDS_DIR / shard / rel
    if recorded is None:
        raise StoreError(f"{array_meta}: no checksum recorded for it in {root / key}; rerun `aps preprocess`")
    data = array_meta.read_bytes()
    if tuple(_record(data)) != recorded:
        raise DamagedObjectError(f"{array_meta}: checksum differs from the one recorded at write time; rerun "
                                 "`aps preprocess` to redo it")
    doc = json.loads(data)
    if attributes is not None:
        doc["attributes"] = {**doc.get("attributes", {}), **attributes}
    if dimension_names is not None:
        if len(dimension_names) != len(doc["shape"]):
            raise ValueError(f"{array_meta}: {len(dimension_names)} dimension names for {len(doc['shape'])} axes")
        doc["dimension_names"] = list(dimension_names)
    new = json.dumps(doc, indent=2).encode()
    atomic_write_bytes(array_meta, new)
    files[rel] = _record(new)
    shard_meta = root / key
    shard_doc = json.loads(shard_meta.read_bytes())
    shard_doc["attributes"] = {**attrs, FILES_ATTR: files}
    shard_bytes = json.dumps(shard_doc, indent=2).encode()
    atomic_write_bytes(shard_meta, shard_bytes)
    if INDEX_CRC_KEY in index:  # a store of before the metadata checksums gets them from the next preprocess
        index[METADATA_KEY][key] = _record(shard_bytes)
        _write_index_doc(root, index)


def init_store(store_path: str | os.PathLike, dataset: str, params: Mapping[str, Any], code_version: str) -> None:
    """Create (or reopen) a store's root group with the dataset-level attributes, and the group of its shards; bring
    the shards of an older store up to what write_shard writes now (`upgrade_metadata`). The caller holds the writer
    lock.

    The root zarr.json (zarr v3 group metadata) is written under a temporary name and renamed, as zarr itself
    would write it in place: a crash mid-write must not leave a store that no longer opens."""
    path = Path(store_path)
    path.mkdir(parents=True, exist_ok=True)
    meta = path / "zarr.json"
    attrs: dict[str, Any] = {}
    if meta.is_file():
        attrs = dict(json.loads(meta.read_text()).get("attributes", {}))
    attrs.update({"layout_version": LAYOUT_VERSION, "dataset": dataset, "params": dict(params),
                  "code_version": code_version})
    doc = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
    atomic_write_text(meta, json.dumps(doc, indent=2))
    shards_meta = path / SHARDS_META_KEY
    group = json.dumps({"attributes": SHARDS_GROUP_ATTRS, "zarr_format": 3, "node_type": "group"}, indent=2).encode()
    if not (shards_meta.is_file() and shards_meta.read_bytes() == group):
        atomic_write_bytes(shards_meta, group)
    upgrade_metadata(path)


def _pending(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def _shard_upgrade(root: Path, shard: str, record: Sequence[int] | None) -> dict[Path, bytes]:
    """The metadata documents of one shard that differ from what write_shard writes now (dimension names, CF
    attributes, object_ids), as {file: new bytes}, the shard's zarr.json last; {} when there is nothing to do or
    the shard's documents do not match their records (then they are left for verification to find as damage)."""
    folder = root / SHARDS_DIR / shard
    try:
        attrs = read_shard_attrs(root, shard, record)
    except DamagedObjectError:
        return {}
    files, objects = attrs.get(FILES_ATTR), attrs.get("objects")
    if not isinstance(files, dict) or not isinstance(objects, list):
        return {}  # an older aps's shard: redone anyway
    out: dict[Path, bytes] = {}
    files = dict(files)
    for rel, rec in sorted(files.items()):
        if not rel.endswith("/zarr.json") or rel.count("/") != 1 or not _safe_relative(rel):
            continue
        path = folder / rel
        try:
            data = path.read_bytes()
            doc = json.loads(data)
            ndim = len(doc["shape"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        if _checked_record(rec) is None or _record(data) != list(rec):
            return {}
        dims, wanted = describe_array(_array_of(rel), ndim)
        attributes = doc.get("attributes") or {}
        if doc.get("dimension_names") == dims and all(attributes.get(k) == v for k, v in wanted.items()):
            continue
        doc["attributes"] = {**attributes, **wanted}
        doc["dimension_names"] = dims
        try:
            out[path] = json.dumps(doc, indent=2, allow_nan=False).encode()
        except ValueError:  # a bare NaN in a document read back: not ours to rewrite
            return {}
        files[rel] = _record(out[path])
    ids = [m.get("object_id") if isinstance(m, dict) else None for m in objects]
    if not out and attrs.get("object_ids") == ids:
        return {}
    shard_doc = json.loads((folder / "zarr.json").read_bytes())
    shard_doc["attributes"] = {**attrs, FILES_ATTR: files, "object_ids": ids}
    try:
        out[folder / "zarr.json"] = json.dumps(shard_doc, indent=2, allow_nan=False).encode()
    except ValueError:
        return {}
    return out


def _finish_pending(folder: Path, commit: bool) -> None:
    """Move a shard's pending documents into place (arrays' first, its zarr.json last), or drop them."""
    pending = sorted(folder.glob(f"*/zarr.json{PENDING_SUFFIX}")) + [_pending(folder / "zarr.json")]
    for path in pending:
        if not path.is_file():
            continue
        if commit:
            os.replace(path, path.with_name("zarr.json"))
        else:
            path.unlink()


def upgrade_metadata(store_path: str | os.PathLike) -> int:
    """Give the shards of a store written by an older aps what write_shard writes now for zarr clients (dimension
    names, CF attributes, object_ids): metadata only, no chunk is touched. Returns how many shards changed.

    Atomic for the shards index.json records: each one's new documents are first written beside the old ones
    (zarr.json.pending), then one rewrite of index.json records them all, with the root's and the shards group's
    zarr.json as init_store has just written them (the commit), then they are renamed into place. A crash before the
    commit leaves the old documents, read as before; after it, the next call (the next `aps preprocess`, through
    init_store, before it verifies anything) finishes the renames. A shard that index.json does not record (one left
    by a killed run) is upgraded in place, file by file: a crash there costs its objects a recompute, never a wrong
    read; so is every shard of a store whose index.json is of before the metadata checksums. Documents that differ
    from their records are left alone: verification finds them. The caller holds the writer lock."""
    root = Path(store_path)
    try:
        index: dict[str, Any] | None = read_index(root)
    except (OSError, StoreError):
        index = None
    if index is not None and INDEX_CRC_KEY not in index:
        index = None  # a store of before the metadata checksums: nothing to commit to; the next write_index records
    recorded: dict[str, Any] = index[METADATA_KEY] if index is not None else {}
    shards = sorted(shard_objects(root))
    for shard in shards:  # a crash of an earlier upgrade: committed (index.json records the pending document) or not
        folder = root / SHARDS_DIR / shard
        for sub in (folder, *(d for d in folder.iterdir() if d.is_dir())):  # its killed atomic writes' temporaries
            remove_stale_temporaries(sub, ["zarr.json", f"zarr.json{PENDING_SUFFIX}"])
        pending = _pending(root / _shard_meta_key(shard))
        if pending.is_file() or any((root / SHARDS_DIR / shard).glob(f"*/zarr.json{PENDING_SUFFIX}")):
            done = pending.is_file() and recorded.get(_shard_meta_key(shard)) == _record(pending.read_bytes())
            _finish_pending(root / SHARDS_DIR / shard, commit=done)
    changed: list[str] = []
    for shard in shards:
        key = _shard_meta_key(shard)
        documents = _shard_upgrade(root, shard, recorded.get(key))
        if not documents:
            continue
        for path, data in documents.items():
            atomic_write_bytes(_pending(path) if key in recorded else path, data)
        if key in recorded:
            recorded[key] = _record(documents[root / key])
        changed.append(shard)
    committed = [s for s in changed if _shard_meta_key(s) in recorded]
    if committed:
        for rel in ("zarr.json", SHARDS_META_KEY):  # written by init_store under the same lock
            if (root / rel).is_file():
                recorded[rel] = _record((root / rel).read_bytes())
        _write_index_doc(root, index)
        for shard in committed:
            _finish_pending(root / SHARDS_DIR / shard, commit=True)
    return len(changed)


class Store:
    """Read access to a preprocessed dataset: `object_ids`, `load(object_id)`, splits and categories."""

    def __init__(self, path: str | os.PathLike, allow_incomplete: bool = False):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a preprocessed store (no zarr.json); run `aps preprocess` first")
        index_file = self.path / INDEX_FILE
        if not index_file.is_file():
            raise StoreError(f"{self.path}: no {INDEX_FILE}; preprocess never finished a shard here")
        index = read_index(self.path)
        if index.get("status") != "complete" and not allow_incomplete:
            raise StoreError(f"{self.path}: preprocess was interrupted (index is {index.get('status')!r}); "
                             "rerun `aps preprocess` to complete it")
        # None: an index.json of before the metadata checksums (module docstring); its arrays' zarr.json are still
        # checked against their shard's "files"
        recorded = index[METADATA_KEY] if INDEX_CRC_KEY in index else None
        self._index: dict[str, tuple[str, int]] = {}
        for oid, where in index["objects"].items():
            if not is_object_id(oid):
                raise StoreError(f"{index_file}: object id {oid!r} is not an object id ({ID_GRAMMAR}); the store "
                                 "was edited or damaged, nothing is read from it: rerun `aps preprocess` to rebuild "
                                 "it")
            if not (isinstance(where, list) and len(where) == 2 and is_object_id(where[0])
                    and isinstance(where[1], int) and not isinstance(where[1], bool) and where[1] >= 0):
                raise StoreError(f"{index_file}: object {oid!r}: {where!r} is not [shard name, row]; rerun "
                                 "`aps preprocess` to rebuild it")
            self._index[oid] = (where[0], where[1])
        self.attrs: dict[str, Any] = self._root_attrs(recorded)
        self._check_shards_group(recorded)
        if self.attrs.get("layout_version") != LAYOUT_VERSION:
            raise StoreError(f"{self.path}: layout version {self.attrs.get('layout_version')}, "
                             f"this code reads {LAYOUT_VERSION}")
        self._meta: dict[str, dict[str, str]] = {}
        # shard -> array -> [(file, bytes, crc32c)]: the files whose sizes a read checks, the array's zarr.json first
        self._files: dict[str, dict[str, list[tuple[Path, int, int]]]] = {}
        for shard in sorted({s for s, _ in self._index.values()}):
            self._read_shard_meta(shard, recorded)
        missing = sorted(set(self._index) - set(self._meta))
        if missing:
            raise StoreError(f"{self.path}: index names objects whose shard does not hold them: {missing[:5]}")
        self.object_ids: list[str] = sorted(self._index)
        self._arrays: dict[tuple[str, str], Any] = {}

    def _root_attrs(self, recorded: dict[str, Any] | None) -> dict[str, Any]:
        """The root group's attributes, from bytes checked against index.json's record."""
        meta = self.path / "zarr.json"
        data = meta.read_bytes()
        if recorded is not None and _record(data) != recorded.get("zarr.json"):
            raise DamagedObjectError(f"{meta}: checksum differs from the one recorded in {INDEX_FILE} (edited or "
                                     "damaged after it was written); rerun `aps preprocess` to rewrite it")
        try:
            attrs = json.loads(data).get("attributes", {})
            if not isinstance(attrs, dict):
                raise ValueError("its attributes are not a table")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ValueError) as exc:
            raise StoreError(f"{meta}: not readable JSON ({exc}); rerun `aps preprocess` to rewrite it") from None
        return dict(attrs)

    def _check_shards_group(self, recorded: dict[str, Any] | None) -> None:
        """STORE/shards/zarr.json against index.json's record, when it has one (stores of before the zarr hierarchy
        was complete have none): this reader does not need it, zarr clients walking from the root do."""
        if recorded is None or SHARDS_META_KEY not in recorded:
            return
        meta = self.path / SHARDS_META_KEY
        try:
            same = _record(meta.read_bytes()) == recorded[SHARDS_META_KEY]
        except FileNotFoundError:
            same = False
        if not same:
            raise DamagedObjectError(f"{meta}: missing, or its checksum differs from the one recorded in {INDEX_FILE} "
                                     "(edited or damaged after it was written); rerun `aps preprocess` to rewrite it")

    def _read_shard_meta(self, shard: str, recorded: dict[str, Any] | None) -> None:
        """A shard's attributes, checked (its zarr.json against index.json; its records of files, objects' ids and
        categories against their grammar), into self._files and self._meta."""
        names = sorted(o for o, (s, _) in self._index.items() if s == shard)
        record = None
        if recorded is not None:
            record = recorded.get(_shard_meta_key(shard))
            if record is None:
                raise DamagedObjectError(f"{self.path / INDEX_FILE}: records no checksum of shard {shard!r}'s "
                                         f"zarr.json (shard of {names[0]!r} and {len(names) - 1} more); rerun "
                                         "`aps preprocess` to rebuild it")
        meta = self.path / SHARDS_DIR / shard / "zarr.json"
        try:
            attrs = read_shard_attrs(self.path, shard, record)
        except DamagedObjectError as exc:
            raise DamagedObjectError(f"{exc} (shard of {names[0]!r} and {len(names) - 1} more); rerun "
                                     "`aps preprocess` to redo them") from None
        files = attrs.get(FILES_ATTR)
        if not isinstance(files, dict) or not files:
            raise StoreError(f"{self.path / SHARDS_DIR / shard}: written by an older aps, without checksums; "
                             "rerun `aps preprocess` to redo it")
        per_array: dict[str, list[tuple[Path, int, int]]] = {}
        for rel, rec in files.items():
            checked = _checked_record(rec)
            if not _safe_relative(rel) or checked is None:
                raise DamagedObjectError(f"{meta}: its record of the file {rel!r} is not a file of the shard with its "
                                         "size and checksum (edited or damaged); rerun `aps preprocess` to redo it")
            entry = (self.path / SHARDS_DIR / shard / rel, *checked)
            entries = per_array.setdefault(_array_of(rel), [])
            if rel.endswith("/zarr.json"):
                entries.insert(0, entry)
            else:
                entries.append(entry)
        self._files[shard] = per_array
        objects = attrs.get("objects", [])
        for row, m in enumerate(objects if isinstance(objects, list) else []):
            if not isinstance(m, dict) or self._index.get(m.get("object_id")) != (shard, row):
                continue
            if not is_category(m.get("category")) or not all(isinstance(m.get(k, ""), str) for k in OBJECT_FIELDS):
                raise DamagedObjectError(f"{meta}: object {m['object_id']!r}: category {m.get('category')!r} is not "
                                         "one line of text, or a field is not text (edited or damaged); rerun "
                                         "`aps preprocess` to redo it")
            self._meta[m["object_id"]] = {"extras": "", **m}  # stores of before extras were recorded

    # ---- metadata -------------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        return dict(self.attrs.get("params", {}))

    def info(self, object_id: str) -> dict[str, str]:
        """category, split, source, content_hash, extras of one object, without reading arrays."""
        try:
            return dict(self._meta[object_id])
        except KeyError:
            raise KeyError(f"{self.path}: no object {object_id!r}") from None

    def split(self, name: str) -> list[str]:
        return [o for o in self.object_ids if self._meta[o]["split"] == name]

    @property
    def categories(self) -> list[str]:
        return sorted({m["category"] for m in self._meta.values()})

    def location(self, object_id: str) -> tuple[str, int]:
        """(shard name, row) of an object, for readers that batch by shard."""
        self.info(object_id)
        return self._index[object_id]

    def shards(self) -> dict[str, list[str]]:
        """shard name -> object ids in row order (only objects the index points at)."""
        out: dict[str, list[str]] = {}
        for oid in self.object_ids:
            shard, _ = self._index[oid]
            out.setdefault(shard, []).append(oid)
        return out

    # ---- arrays ---------------------------------------------------------------------------------------
    def _array(self, shard: str, name: str, what: str):
        """The zarr array `name` of a shard, opened from its folder (never through the group's metadata) once its
        zarr.json matches the size and crc32c recorded at write time: a shape edited from 10000 to 10001 would
        otherwise read back with a fill value appended."""
        import zarr

        key = (shard, name)
        if key not in self._arrays:
            meta, size, crc = self._files[shard][name][0]
            if meta.name != "zarr.json":
                raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: no checksum of its zarr.json is "
                                         "recorded; rerun `aps preprocess` to redo it")
            try:
                data = meta.read_bytes()
            except FileNotFoundError:
                raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: {meta} is missing; rerun "
                                         "`aps preprocess` to redo it") from None
            if _record(data) != [size, crc]:
                raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: {meta} differs from the metadata "
                                         "written (size or checksum: edited or damaged); rerun `aps preprocess` "
                                         "to redo it")
            self._arrays[key] = zarr.open_array(str(meta.parent), mode="r", zarr_format=3)
        return self._arrays[key]

    def array_names(self, object_id: str) -> list[str]:
        shard, _ = self.location(object_id)
        return sorted(self._files[shard])

    def _checked(self, shard: str, name: str, key: Any, what: str) -> np.ndarray:
        """array[key], proven: the array's zarr.json matches its record, its files exist with their recorded sizes
        (zarr would read a missing or emptied file as fill values), and zarr's crc32c checks of the shard index and
        chunks pass."""
        files = self._files[shard].get(name)
        if files is None:
            raise KeyError(f"{self.path}: {what} has no array {name!r}")
        arr = self._array(shard, name, what)
        for path, size, _ in files:
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: {path} is missing; rerun "
                                         "`aps preprocess` to redo it") from None
            if actual != size:
                raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: {path} has {actual} bytes, {size} "
                                         "were written; rerun `aps preprocess` to redo it")
        try:
            return arr[key]
        except Exception as exc:  # noqa: BLE001 - zarr's checksum and decode errors name neither object nor file
            chunk = next((p for p, _, _ in files if p.name != "zarr.json"), files[0][0])
            raise DamagedObjectError(f"{self.path}: {what}: array {name!r}: {chunk} is damaged "
                                     f"({type(exc).__name__}: {str(exc).strip() or 'unreadable'}); rerun "
                                     "`aps preprocess` to redo it") from None

    def read(self, object_id: str, name: str, index: Any = ...) -> np.ndarray:
        """One array of one object (optionally indexed further, e.g. one view), decoded to its public form.
        Raises DamagedObjectError (naming the object and file) when its bytes are missing or damaged."""
        shard, row = self.location(object_id)
        key = (row,) if index is Ellipsis else (row, *(index if isinstance(index, tuple) else (index,)))
        data = self._checked(shard, name, key, f"object {object_id!r}")
        decode = _DECODERS.get(name)
        return decode(data) if decode is not None else data

    def read_shard(self, shard: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Arrays of every object of one shard at once, decoded (the fast path for loaders that cache data).

        Rows follow the shard's own order; `shards()[shard]` lists the object ids the index points at, and
        `location(object_id)[1]` is an object's row.
        """
        if shard not in self._files:
            raise KeyError(f"{self.path}: no shard {shard!r} in the index")
        out = {}
        for name in names:
            data = self._checked(shard, name, ..., f"shard {shard!r} (objects {self.shards()[shard][:3]}...)")
            decode = _DECODERS.get(name)
            out[name] = decode(data) if decode is not None else data
        return out

    def load(self, object_id: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Everything stored for one object (or only `names`), plus its category and source."""
        wanted = list(names) if names is not None else self.array_names(object_id)
        out: dict[str, Any] = {name: self.read(object_id, name) for name in wanted}
        meta = self.info(object_id)
        out.update(object_id=object_id, category=meta["category"], source=meta["source"], split=meta["split"])
        return out

    def __len__(self) -> int:
        return len(self.object_ids)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {len(self)} objects, categories={self.categories})"


def open_store(path: str | os.PathLike, allow_incomplete: bool = False) -> Store:
    """Open a preprocessed dataset for reading (docs/RELIABILITY.md says what a read proves)."""
    return Store(path, allow_incomplete=allow_incomplete)
