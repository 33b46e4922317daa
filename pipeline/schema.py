"""The zarr layout: the ONE contract between preprocess, train and eval.

Everything that reads or writes a preprocessed dataset goes through this module; the trainer and the
evaluation import it rather than re-declaring array names, dtypes or frames.

Layout (zarr v3, one folder per store)::

    STORE/
      zarr.json          root group; attrs: layout_version, dataset, params, code_version
      index.json         {"status": "complete" | "in_progress", "objects": {object_id: [shard, row]}}
                         written atomically (temporary name + rename) by the preprocess driver
      runs.jsonl         one JSON line per object per run (run_id, object_id, source, status, error, ...)
      shards/<name>/     a zarr group holding n objects; its attrs list them ("objects": [{object_id,
                         category, split, source, content_hash}, ...]). Written whole to
                         shards/.tmp-<name>-<uuid> and renamed, so a crash never leaves a half shard.

Arrays of a shard (leading axis = object row; every array uses zarr sharding with one shard file per
array and one inner chunk per object, so reading one object decompresses nothing of the others):

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
    images        uint8   (n, V, H, W, 4) RGBA views, transparent background; one inner chunk per view
    K             float32 (n, V, 3, 3)    intrinsics in pixels (u = column, v = row)
    Rt            float32 (n, V, 3, 4)    normalised frame -> OpenCV camera (x right, y down, z forward)

Evaluation reference data (shards of the split named in params["reference_splits"], "test" by default):

    ref_surface_points   float32 (n, R, 3)   points on the true surface, normalised frame
    ref_surface_normals  float32 (n, R, 3)   unit normals of those points
    ref_uniform_points   float32 (n, R, 3)   uniform in the reference box [-0.5, 0.5]^3
    ref_uniform_inside   bool    (n, R)      inside flags of those points (winding number)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
OBJECT_FIELDS = ("object_id", "category", "split", "source", "content_hash")

INDEX_FILE = "index.json"
RUNS_FILE = "runs.jsonl"
SHARDS_DIR = "shards"


class StoreError(RuntimeError):
    """A store that is missing, incomplete or not of this layout."""


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file under a temporary name and rename it, so readers never see half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _codecs(name: str, dtype: np.dtype) -> dict[str, Any]:
    """Measured on 40 objects of the industrial dataset: the surface points, written in Morton order, shrink by
    a fifth with bit shuffling and not at all with byte shuffling (nor unsorted); images gain 5% from zstd level
    7 over 3 (write 19 vs 14 ms an object; level 9 takes 0.4 s) and lose with any shuffling or a planar layout.
    benchmarks/bench_preprocess.py prints the bytes per object and array."""
    from zarr.codecs import BloscCodec

    typesize = np.dtype(dtype).itemsize
    shuffle = "noshuffle" if typesize == 1 else "shuffle"
    if name == "points":
        shuffle = "bitshuffle"
    level = 7 if name == "images" else 3
    return {"compressors": [BloscCodec(cname="zstd", clevel=level, shuffle=shuffle, typesize=typesize)]}


def _inner_chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if name == "images":  # one view per inner chunk: training reads one random view
        return (1, 1, *shape[2:])
    return (1, *shape[1:])


@dataclass
class ObjectRecord:
    """What the preprocess stage produces for one object (the arrays above, without the row axis)."""

    object_id: str
    category: str
    split: str
    source: str
    content_hash: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step; reported, not stored

    def meta(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in OBJECT_FIELDS}


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
    shards_dir.mkdir(parents=True, exist_ok=True)
    tmp = shards_dir / f".tmp-{shard_name}-{uuid.uuid4().hex[:8]}"
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    group.attrs.update({"layout_version": LAYOUT_VERSION, "objects": [r.meta() for r in records]})
    for name in names:
        data = np.stack([np.asarray(r.arrays[name]) for r in records])
        arr = group.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=_inner_chunks(name, data.shape),
            shards=data.shape, **_codecs(name, data.dtype),
        )
        arr[...] = data
    final = shards_dir / shard_name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return shard_name


def shard_objects(store_path: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """Completed shards and the objects they hold, read from the shard attributes (temporary ones skipped)."""
    shards_dir = Path(store_path) / SHARDS_DIR
    out: dict[str, list[dict[str, str]]] = {}
    if not shards_dir.is_dir():
        return out
    for d in sorted(shards_dir.iterdir()):
        meta = d / "zarr.json"
        if d.name.startswith(".") or not meta.is_file():
            continue
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {})
        except json.JSONDecodeError:
            continue
        out[d.name] = list(attrs.get("objects", []))
    return out


def write_index(store_path: str | os.PathLike, index: Mapping[str, tuple[str, int]], complete: bool) -> None:
    payload = {"status": "complete" if complete else "in_progress",
               "objects": {k: [s, int(r)] for k, (s, r) in sorted(index.items())}}
    atomic_write_text(Path(store_path) / INDEX_FILE, json.dumps(payload, indent=0))


def init_store(store_path: str | os.PathLike, dataset: str, params: Mapping[str, Any], code_version: str) -> None:
    """Create (or reopen) a store's root group with the dataset-level attributes."""
    import zarr

    path = Path(store_path)
    path.mkdir(parents=True, exist_ok=True)
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    root.attrs.update({"layout_version": LAYOUT_VERSION, "dataset": dataset, "params": dict(params),
                       "code_version": code_version})


class Store:
    """Read access to a preprocessed dataset: `object_ids`, `load(object_id)`, splits and categories."""

    def __init__(self, path: str | os.PathLike, allow_incomplete: bool = False):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a preprocessed store (no zarr.json); run `aps preprocess` first")
        index_file = self.path / INDEX_FILE
        if not index_file.is_file():
            raise StoreError(f"{self.path}: no {INDEX_FILE}; preprocess never finished a shard here")
        index = json.loads(index_file.read_text())
        if index.get("status") != "complete" and not allow_incomplete:
            raise StoreError(f"{self.path}: preprocess was interrupted (index is {index.get('status')!r}); "
                             "rerun `aps preprocess` to complete it")
        root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        self.attrs: dict[str, Any] = dict(root.attrs)
        if self.attrs.get("layout_version") != LAYOUT_VERSION:
            raise StoreError(f"{self.path}: layout version {self.attrs.get('layout_version')}, "
                             f"this code reads {LAYOUT_VERSION}")
        self._index: dict[str, tuple[str, int]] = {k: (v[0], int(v[1])) for k, v in index["objects"].items()}
        self._meta: dict[str, dict[str, str]] = {}
        for shard, objects in shard_objects(self.path).items():
            for row, m in enumerate(objects):
                if self._index.get(m["object_id"]) == (shard, row):
                    self._meta[m["object_id"]] = m
        missing = sorted(set(self._index) - set(self._meta))
        if missing:
            raise StoreError(f"{self.path}: index names objects whose shard is missing: {missing[:5]}")
        self.object_ids: list[str] = sorted(self._index)
        self._groups: dict[str, Any] = {}

    # ---- metadata -------------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        return dict(self.attrs.get("params", {}))

    def info(self, object_id: str) -> dict[str, str]:
        """category, split, source, content_hash of one object, without reading arrays."""
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
    def _group(self, shard: str):
        import zarr

        if shard not in self._groups:
            self._groups[shard] = zarr.open_group(str(self.path / SHARDS_DIR / shard), mode="r", zarr_format=3)
        return self._groups[shard]

    def array_names(self, object_id: str) -> list[str]:
        shard, _ = self.location(object_id)
        return sorted(self._group(shard).array_keys())

    def read(self, object_id: str, name: str, index: Any = ...) -> np.ndarray:
        """One array of one object (optionally indexed further, e.g. one view), decoded to its public form."""
        shard, row = self.location(object_id)
        group = self._group(shard)
        if name not in group:
            raise KeyError(f"{self.path}: object {object_id!r} has no array {name!r}")
        key = (row,) if index is Ellipsis else (row, *(index if isinstance(index, tuple) else (index,)))
        data = group[name][key]
        decode = _DECODERS.get(name)
        return decode(data) if decode is not None else data

    def read_shard(self, shard: str, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Arrays of every object of one shard at once, decoded (the fast path for loaders that cache data).

        Rows follow the shard's own order; `shards()[shard]` lists the object ids the index points at, and
        `location(object_id)[1]` is an object's row.
        """
        group = self._group(shard)
        out = {}
        for name in names:
            data = group[name][...]
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
    """Open a preprocessed dataset for reading (SPEC.md, "What outside tools rely on")."""
    return Store(path, allow_incomplete=allow_incomplete)
