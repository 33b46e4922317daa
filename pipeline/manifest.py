"""Dataset manifests: what a dataset is (sources, categories, split, parameters). Format: manifests/README.md."""

from __future__ import annotations

import hashlib
import json
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PreprocessConfig
from pipeline.schema.layout import is_id_char
from pipeline.sources import check_source, list_objects
from pipeline.sources.spec import ObjectSpec, SourceError
from pipeline.sources.splits import FileSplit, SplitFileError, check_table

SPLITS = ("train", "val", "test")
TOP_KEYS = ("name", "description", "sources", "split", "params")
# the keys of [split] by method; method = "files" is checked by pipeline.sources.splits.check_table
SPLIT_KEYS = {"hash": ("method", "val", "test", "exact", "by_category", "at_least"), "lists": ("method", "val", "test")}
# A manifest is a few kB; 4 MiB holds a 'lists' split of every ShapeNet model id (~50k ids of ~45 bytes) with room
# to spare, and bounds what a hostile file can make the parser hold.
MAX_MANIFEST_BYTES = 4 << 20


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file."""


def check_name(name: Any) -> str:
    """A dataset's name is a name, not a path (it is the default store folder, data/<name>): letters, digits and
    `_.-`, Unicode letters too, not '.' or '..'. Returns it in Unicode NFC."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    nfc = unicodedata.normalize("NFC", name)
    if not nfc or nfc in (".", "..") or not all(is_id_char(c) for c in nfc):
        raise ValueError(f"name {name!r} is not a plain name (letters, digits, '_', '.', '-'; no path separators, "
                         "not '.' or '..'): it names the store folder data/<name>")
    return nfc


def _fraction(split: dict[str, Any], name: str) -> float:
    value = split.get(name, 0.1)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"split.{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def check_split(split: Any) -> None:
    """A [split] table: the keys its method reads (a typo such as `vall` would otherwise be ignored), their types,
    and no impossible split (hash: val + test < 1, so some objects train). Raises ValueError; reads no file."""
    if not isinstance(split, dict):
        raise ValueError(f"must be a table, got {split!r}")
    method = split.get("method", "hash")
    if method == "files":
        check_table(split)
        return
    if method not in SPLIT_KEYS:
        raise ValueError(f"unknown split method {method!r} (hash, lists or files)")
    unknown = sorted(set(split) - set(SPLIT_KEYS[method]))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} with method = {method!r}; known: {sorted(SPLIT_KEYS[method])}")
    if method == "hash":
        val, test = _fraction(split, "val"), _fraction(split, "test")
        if val + test >= 1:
            raise ValueError(f"split.val + split.test must be < 1 (the rest is train), got {val:g} + {test:g}")
        for flag in ("exact", "by_category"):
            if not isinstance(split.get(flag, False), bool):
                raise ValueError(f"split.{flag} must be true or false, got {split[flag]!r}")
        if split.get("by_category", False) and not split.get("exact", False):
            raise ValueError("split.by_category ranks each category on its own and needs exact = true")
        at_least = split.get("at_least", 0)
        if isinstance(at_least, bool) or not isinstance(at_least, int) or not 0 <= at_least <= 1000:
            raise ValueError(f"split.at_least must be an integer in [0, 1000], got {at_least!r}")
        if at_least and not split.get("exact", False):
            raise ValueError("split.at_least counts objects per split and needs exact = true")
        return
    for name in ("val", "test"):
        ids = split.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"split.{name} must be a list of object ids with method = 'lists', got {ids!r}")
    both = sorted(set(_listed_ids(split, "val")) & set(_listed_ids(split, "test")))
    if both:
        raise ValueError(f"object id(s) {both[:5]} are in both split.val and split.test")


def _listed_ids(split: dict[str, Any], name: str) -> list[str]:
    """The ids of a 'lists' split's val or test list, in NFC as object ids are."""
    return [unicodedata.normalize("NFC", i) for i in split.get(name, [])]


@dataclass
class Manifest:
    name: str
    sources: list[dict[str, Any]]
    split: dict[str, Any] = field(default_factory=lambda: {"method": "hash", "val": 0.1, "test": 0.1})
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    path: Path | None = None
    _listing_cache: tuple[str, tuple[list, list]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def where(self) -> str:
        """What errors name: the manifest file, or the dataset's name for a manifest built in code."""
        return str(self.path or self.name)

    def config(self) -> PreprocessConfig:
        try:
            return PreprocessConfig.from_dict(self.params)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"{self.where}: [params]: {exc}") from exc

    def check(self) -> None:
        """Every table against the keys it may hold and their values: each [[sources]] by its type, [split] by its
        method, [params]. Reads no data, so a manifest whose paths are still to be set passes."""
        for i, source in enumerate(self.sources):
            try:
                check_source(source)
            except SourceError as exc:
                raise ManifestError(f"{self.where}: {_source_label(i, source)}: {exc}") from exc
        self._check_split()
        self.config()

    def _check_split(self) -> None:
        try:
            check_split(self.split)
        except ValueError as exc:
            raise ManifestError(f"{self.where}: [split]: {exc}") from exc

    def objects(self) -> list[tuple[ObjectSpec, str]]:
        """Every object of every source with its split, in listing order. Objects that share their id with another
        are left out: they are in refused()."""
        return list(self._listing()[0])

    def refused(self) -> list[tuple[ObjectSpec, str]]:
        """The objects left out of objects() because another object has the same id (two files whose names clean
        to one id, one model in two sources), each with a one-line reason naming both files. Only objects the
        split would take are listed (method = "files" with unlisted = "skip" leaves the others out anyway)."""
        return list(self._listing()[1])

    def _listing(self) -> tuple[list[tuple[ObjectSpec, str]], list[tuple[ObjectSpec, str]]]:
        """objects() and refused() from one listing of the sources, kept until sources, split or base_dir change."""
        key = json.dumps([self.sources, self.split, str(self.base_dir)], sort_keys=True, default=str)
        if self._listing_cache is not None and self._listing_cache[0] == key:
            return self._listing_cache[1]
        self._check_split()
        specs: list[ObjectSpec] = []
        for i, source in enumerate(self.sources):
            try:
                specs.extend(list_objects(source, self.base_dir))
            except SourceError as exc:
                raise ManifestError(f"{self.where}: {_source_label(i, source)}: {exc}") from exc
            except OSError as exc:  # a root the walk cannot even look at
                raise ManifestError(f"{self.where}: {_source_label(i, source)}: {exc.filename or ''}: cannot be "
                                    f"listed ({exc.strerror or exc})") from exc
        by_id: dict[str, list[ObjectSpec]] = {}
        for s in specs:
            by_id.setdefault(s.object_id, []).append(s)
        unique = [s for s in specs if len(by_id[s.object_id]) == 1]
        clashing = [s for s in specs if len(by_id[s.object_id]) > 1]
        if self.split.get("method") == "lists":
            for name in ("val", "test"):
                missing = sorted(set(_listed_ids(self.split, name)) - set(by_id))
                if missing:
                    raise ManifestError(f"{self.where}: [split]: split.{name} names {len(missing)} object id(s) that "
                                        f"no source lists: {missing[:5]}")
        files = self._file_split()
        refused = []
        for s in clashing:
            if files is not None and files.split_of(s) is None:
                continue  # not in the benchmark's split: left out like any unlisted object
            others = [o.source for o in by_id[s.object_id] if o is not s]
            more = f" (and {', '.join(others[1:])})" if len(others) > 1 else ""
            refused.append((s, f"object id {s.object_id!r} comes from both {s.source} and {others[0]}{more}; "
                               "rename one of the files"))
        objects = [(s, split) for s, split in self._assign(unique, files) if split is not None]
        self._listing_cache = (key, (objects, refused))
        return objects, refused

    def _file_split(self) -> FileSplit | None:
        """The split files of method = "files" (pipeline.sources.splits), read once per listing; None otherwise."""
        if self.split.get("method") != "files":
            return None
        try:
            return FileSplit.from_table(self.split, self.base_dir)
        except (SplitFileError, OSError) as exc:
            raise ManifestError(f"{self.where}: [split]: {exc}") from exc

    def _assign(self, specs: list[ObjectSpec], files: FileSplit | None) -> list[tuple[ObjectSpec, str | None]]:
        """The split of each object, None where the split files skip it."""
        if files is not None:
            return [(s, files.split_of(s)) for s in specs]
        if self.split.get("method", "hash") == "hash" and self.split.get("exact", False):
            if not self.split.get("by_category", False):
                return list(zip(specs, exact_hash_split([s.object_id for s in specs], self.split), strict=True))
            splits: dict[int, str] = {}
            for category in sorted({s.category for s in specs}):
                members = [i for i, s in enumerate(specs) if s.category == category]
                splits.update(zip(members, exact_hash_split([specs[i].object_id for i in members], self.split),
                                  strict=True))
            return [(s, splits[i]) for i, s in enumerate(specs)]
        if self.split.get("method") == "lists":
            named = {i: name for name in ("val", "test") for i in _listed_ids(self.split, name)}
            return [(s, named.get(s.object_id, "train")) for s in specs]
        return [(s, assign_split(s.object_id, self.split)) for s in specs]


def _source_label(i: int, source: Any) -> str:
    kind = source.get("type") if isinstance(source, dict) else None
    return f"source {i + 1} ({kind})" if isinstance(kind, str) else f"source {i + 1}"


def _hash_unit(object_id: str) -> float:
    return int(hashlib.sha256(object_id.encode()).hexdigest()[:8], 16) / 2**32


def exact_hash_split(object_ids: list[str], split: dict[str, Any]) -> list[str]:
    """'hash' with exact = true: objects ranked by the same hash, the first round(test * n) test, the next
    round(val * n) val, so a small dataset gets the asked proportions. The price: adding objects may move the
    few at a boundary of the ranking (plain 'hash' never moves any, but its proportions wander on small sets).
    at_least = k: test and val (where their fraction is not 0) get at least k objects each while training keeps
    at least one (a folder of 3 meshes: 1 train, 1 val, 1 test), so every stage can run on a small folder."""
    test, val = float(split.get("test", 0.1)), float(split.get("val", 0.1))
    order = sorted(range(len(object_ids)), key=lambda i: (_hash_unit(object_ids[i]), object_ids[i]))
    n = len(object_ids)
    n_test, n_val = round(test * n), round(val * n)
    at_least = int(split.get("at_least", 0))
    if at_least and test > 0 and n_test < at_least and n - n_val - at_least >= 1:
        n_test = at_least
    if at_least and val > 0 and n_val < at_least and n - n_test - at_least >= 1:
        n_val = at_least
    out = ["train"] * len(object_ids)
    for rank, i in enumerate(order):
        out[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def assign_split(object_id: str, split: dict[str, Any]) -> str:
    """'hash': a stable fraction by a hash of the id (adding objects never moves others); 'lists': named ids."""
    method = split.get("method", "hash")
    if method == "lists":
        for name in ("test", "val"):
            if unicodedata.normalize("NFC", object_id) in set(_listed_ids(split, name)):
                return name
        return "train"
    if method == "hash":
        u = _hash_unit(object_id)
        test, val = float(split.get("test", 0.1)), float(split.get("val", 0.1))
        return "test" if u < test else "val" if u < test + val else "train"
    raise ManifestError(f"unknown split method {method!r} (hash, lists or files)")


def load_manifest(path: str | Path) -> Manifest:
    """Read a TOML manifest (tomllib: a safe parser, no code runs)."""
    path = Path(path)
    data = _read_toml(path)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ManifestError(f"{path}: unknown top-level key(s) {unknown}; known: {list(TOP_KEYS)}")
    if not data.get("sources"):
        raise ManifestError(f"{path}: no [[sources]]")
    if not isinstance(data["sources"], list):
        raise ManifestError(f"{path}: sources must be [[sources]] tables, got {data['sources']!r}")
    for key in ("split", "params"):
        if not isinstance(data.get(key, {}), dict):
            raise ManifestError(f"{path}: {key} must be a table ([{key}]), got {data[key]!r}")
    if not isinstance(data.get("description", ""), str):
        raise ManifestError(f"{path}: description must be a string, got {data['description']!r}")
    try:
        name = check_name(data.get("name", path.stem))
    except ValueError as exc:
        hint = "" if "name" in data else " (no name is given, so the file's stem is taken: set name = \"...\")"
        raise ManifestError(f"{path}: {exc}{hint}") from exc
    m = Manifest(name=name, sources=list(data["sources"]), params=dict(data.get("params", {})),
                 description=data.get("description", ""), base_dir=path.parent.resolve(), path=path)
    if "split" in data:
        m.split = dict(data["split"])
    m.check()  # fail early: every table's keys and values, before any source is listed
    return m


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table of a manifest file, or a one-line ManifestError naming it: a file that is missing, not a
    regular file (a FIFO or a device would block or never end), larger than MAX_MANIFEST_BYTES, not UTF-8, not
    TOML, or nested deeper than the parser can recurse."""
    try:
        regular = path.is_file()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    if not regular:
        raise ManifestError(f"{path}: manifest not found")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a manifest is TOML") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML ({exc})") from exc
    except RecursionError as exc:  # tomllib recurses once per level of nested arrays or inline tables
        raise ManifestError(f"{path}: not valid TOML (nested too deeply to parse)") from exc


FOLDER_SPLIT = {"method": "hash", "exact": True, "at_least": 1, "val": 0.1, "test": 0.1}


def folder_manifest(meshes: str | Path, name: str | None = None) -> Manifest:
    """A plain folder of meshes (one subfolder per category) needs no manifest file: this is the implied one. Its
    split is exact with at least one test and one val object from 3 objects on (exact_hash_split), so a small
    folder can be trained, validated and evaluated."""
    root = Path(meshes).expanduser().resolve()
    return Manifest(name=name or root.name, sources=[{"type": "folder", "root": str(root)}], base_dir=root,
                    split=dict(FOLDER_SPLIT))
