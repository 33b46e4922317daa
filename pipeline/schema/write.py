"""Writing a store: shards (whole and atomic), runs.jsonl, index.json with the checksums of the metadata, the writer
lock, the check of an `--out` folder, and the metadata upgrade of an older store's shards. zarr is imported where a
shard is written: importing it costs ~0.2 s that every command's start-up need not pay."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import (
    DiskFullError,
    atomic_write_bytes,
    atomic_write_text,
    disk_full_error,
    out_of_space,
    remove_stale_temporaries,
)
from common.locking import single_writer
from pipeline.schema.checksums import cached_by_stat, checked_record, checksum_record, file_checksum, index_crc
from pipeline.schema.layout import (
    FILES_ATTR,
    INDEX_CRC_KEY,
    INDEX_FILE,
    LAYOUT_VERSION,
    LOCK_FILE,
    METADATA_KEY,
    PENDING_SUFFIX,
    RUNS_FILE,
    SHARDS_DIR,
    SHARDS_GROUP_ATTRS,
    SHARDS_META_KEY,
    DamagedObjectError,
    ObjectRecord,
    StoreError,
    StoreLockedError,
    array_of,
    describe_array,
    is_safe_relative,
    shard_meta_key,
)
from pipeline.schema.read import read_index, read_shard_attrs, shard_objects

_SEEN: dict[str, tuple[tuple[int, int, int], list[int]]] = {}  # path -> (inode, size, mtime_ns), its record


def _metadata_record(path: Path) -> list[int]:
    """[bytes, crc32c] of a metadata file, read again only when its inode, size or mtime changed: the driver
    rewrites index.json after every shard, and re-reading every shard's zarr.json each time would make a
    ShapeNet run read ~10^10 bytes."""
    return list(cached_by_stat(_SEEN, path, lambda: checksum_record(path.read_bytes())))


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
    return disk_full_error(path, "writing it", f"the {n_objects} object(s) of shard {final.name} are not written, "
                           "every shard written before is kept: make space and rerun `aps preprocess` to finish",
                           where=final.parent)


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
        if not out_of_space(exc):
            raise
        os.ftruncate(fd, start)
        raise disk_full_error(path, "appending this run's records", "the shards written so far are kept: make space "
                              "and rerun `aps preprocess` to finish", code=exc.errno) from None
    finally:
        os.close(fd)


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
    zarr.json and its own (pipeline/schema/__init__.py). Written atomically; DiskFullError names it on a full disk."""
    root = Path(store_path)
    payload: dict[str, Any] = {"status": "complete" if complete else "in_progress",
                               "objects": {k: [s, int(r)] for k, (s, r) in sorted(index.items())}}
    metadata = {rel: _metadata_record(root / rel) for rel in ("zarr.json", SHARDS_META_KEY) if (root / rel).is_file()}
    for shard in sorted({s for s, _ in index.values()}):
        metadata[shard_meta_key(shard)] = _metadata_record(root / shard_meta_key(shard))
    payload[METADATA_KEY] = metadata
    _write_index_doc(root, payload)


def _write_index_doc(root: Path, doc: dict[str, Any]) -> None:
    doc[INDEX_CRC_KEY] = index_crc(doc)
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
    key = shard_meta_key(shard)
    attrs = read_shard_attrs(root, shard, (index.get(METADATA_KEY) or {}).get(key))
    files = attrs.get(FILES_ATTR)
    rel = f"{name}/zarr.json"
    recorded = checked_record(files.get(rel)) if isinstance(files, dict) else None
    array_meta = root / SHARDS_DIR / shard / rel
    if recorded is None:
        raise StoreError(f"{array_meta}: no checksum recorded for it in {root / key}; rerun `aps preprocess`")
    data = array_meta.read_bytes()
    if tuple(checksum_record(data)) != recorded:
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
    files[rel] = checksum_record(new)
    shard_meta = root / key
    shard_doc = json.loads(shard_meta.read_bytes())
    shard_doc["attributes"] = {**attrs, FILES_ATTR: files}
    shard_bytes = json.dumps(shard_doc, indent=2).encode()
    atomic_write_bytes(shard_meta, shard_bytes)
    if INDEX_CRC_KEY in index:  # a store of before the metadata checksums gets them from the next preprocess
        index[METADATA_KEY][key] = checksum_record(shard_bytes)
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
        if not rel.endswith("/zarr.json") or rel.count("/") != 1 or not is_safe_relative(rel):
            continue
        path = folder / rel
        try:
            data = path.read_bytes()
            doc = json.loads(data)
            ndim = len(doc["shape"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        if checked_record(rec) is None or checksum_record(data) != list(rec):
            return {}
        dims, wanted = describe_array(array_of(rel), ndim)
        attributes = doc.get("attributes") or {}
        if doc.get("dimension_names") == dims and all(attributes.get(k) == v for k, v in wanted.items()):
            continue
        doc["attributes"] = {**attributes, **wanted}
        doc["dimension_names"] = dims
        try:
            out[path] = json.dumps(doc, indent=2, allow_nan=False).encode()
        except ValueError:  # a bare NaN in a document read back: not ours to rewrite
            return {}
        files[rel] = checksum_record(out[path])
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
        pending = _pending(root / shard_meta_key(shard))
        if pending.is_file() or any((root / SHARDS_DIR / shard).glob(f"*/zarr.json{PENDING_SUFFIX}")):
            done = pending.is_file() and recorded.get(shard_meta_key(shard)) == checksum_record(pending.read_bytes())
            _finish_pending(root / SHARDS_DIR / shard, commit=done)
    changed: list[str] = []
    for shard in shards:
        key = shard_meta_key(shard)
        documents = _shard_upgrade(root, shard, recorded.get(key))
        if not documents:
            continue
        for path, data in documents.items():
            atomic_write_bytes(_pending(path) if key in recorded else path, data)
        if key in recorded:
            recorded[key] = checksum_record(documents[root / key])
        changed.append(shard)
    committed = [s for s in changed if shard_meta_key(s) in recorded]
    if committed:
        for rel in ("zarr.json", SHARDS_META_KEY):  # written by init_store under the same lock
            if (root / rel).is_file():
                recorded[rel] = checksum_record((root / rel).read_bytes())
        _write_index_doc(root, index)
        for shard in committed:
            _finish_pending(root / SHARDS_DIR / shard, commit=True)
    return len(changed)
