"""Reading a store: `open_store` / `Store` (verified reads of one object or a whole shard), `verify_shard` (the damaged
objects of a shard, for validation and for a rerun of preprocess), and the checked reads of index.json and of a shard's
attributes that the writer shares. zarr is imported where an array is opened: importing it costs ~0.2 s that opening
a store's metadata, and every command's start-up, need not pay."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.schema.checksums import cached_by_stat, checked_record, checksum_record, file_checksum, index_crc
from pipeline.schema.layout import (
    FILES_ATTR,
    ID_GRAMMAR,
    INDEX_CRC_KEY,
    INDEX_FILE,
    LAYOUT_VERSION,
    METADATA_KEY,
    OBJECT_FIELDS,
    SHARDS_DIR,
    SHARDS_META_KEY,
    DamagedObjectError,
    StoreError,
    array_of,
    dequantize_points,
    dequantize_udf,
    is_category,
    is_object_id,
    is_safe_relative,
    is_shard_name,
    shard_meta_key,
)

_DECODERS = {"points": dequantize_points, "udf": dequantize_udf}


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
    if record is not None and checksum_record(data) != list(record) and isinstance(attrs.get(FILES_ATTR), dict):
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
            if index[INDEX_CRC_KEY] != index_crc(index):
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
        return cached_by_stat(_RECORDED, path, lambda: dict(read_index(store_path).get(METADATA_KEY) or {}))
    except (OSError, StoreError):
        return {}


def verify_shard(store_path: str | os.PathLike, shard: str) -> dict[int, str]:
    """Rows of a shard whose stored bytes are missing or damaged -> the reason; {} when every file matches the
    size and crc32c recorded at write time. Where a file's checksum differs but its index is intact, each row of
    that array is decoded on its own (zarr checks each chunk's crc32c), so only the damaged objects are named.
    The shard's zarr.json is checked first against index.json's record, when index.json has one: DamagedObjectError
    (every row) when it differs."""
    import zarr

    root = Path(store_path) / SHARDS_DIR / shard
    attrs = read_shard_attrs(store_path, shard, _recorded_metadata(store_path).get(shard_meta_key(shard)))
    n = len(attrs.get("objects", []))
    files = attrs.get(FILES_ATTR)
    if not isinstance(files, dict) or not files:
        return dict.fromkeys(range(n), f"{root}: written without checksums (an older aps); it is redone")
    unsafe = next((rel for rel, rec in files.items() if not is_safe_relative(rel) or checked_record(rec) is None),
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
                arr = zarr.open_array(str(root / array_of(rel)), mode="r", zarr_format=3)
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


class Store:
    """Read access to a preprocessed dataset: `object_ids`, `load(object_id)`, splits and categories."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a preprocessed store (no zarr.json); run `aps preprocess` first")
        index_file = self.path / INDEX_FILE
        if not index_file.is_file():
            raise StoreError(f"{self.path}: no {INDEX_FILE}; preprocess never finished a shard here")
        index = read_index(self.path)
        if index.get("status") != "complete":
            raise StoreError(f"{self.path}: preprocess was interrupted (index is {index.get('status')!r}); "
                             "rerun `aps preprocess` to complete it")
        # None: an index.json of before the metadata checksums (pipeline/schema/__init__.py); its arrays' zarr.json
        # are still checked against their shard's "files"
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
        if recorded is not None and checksum_record(data) != recorded.get("zarr.json"):
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
            same = checksum_record(meta.read_bytes()) == recorded[SHARDS_META_KEY]
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
            record = recorded.get(shard_meta_key(shard))
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
            checked = checked_record(rec)
            if not is_safe_relative(rel) or checked is None:
                raise DamagedObjectError(f"{meta}: its record of the file {rel!r} is not a file of the shard with its "
                                         "size and checksum (edited or damaged); rerun `aps preprocess` to redo it")
            entry = (self.path / SHARDS_DIR / shard / rel, *checked)
            entries = per_array.setdefault(array_of(rel), [])
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
            if checksum_record(data) != [size, crc]:
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


def open_store(path: str | os.PathLike) -> Store:
    """Open a preprocessed dataset for reading (docs/RELIABILITY.md says what a read proves)."""
    return Store(path)
