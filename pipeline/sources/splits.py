"""Split files as the ShapeNet benchmark ships them, selected in a manifest's [split] table (method = "files").

Accepted files (one entry a line; blank lines and '#' comments skipped):
- IM-NET / 3D-R2N2 style lists, `<synset>/<model_id>` a line (e.g. all_vox256_img_test.txt);
- OccNet's per-category `<root>/<synset>/{train,val,test}.lst` and `<synset>_<name>_train.lst`-style files,
  bare `<model_id>` a line: the synset is taken from the file's folder (8 digits) or name prefix (`02691156_...`);
- a plain list of object ids (`airplane-1a04e3...`) or bare model ids.
An object matches an entry by its object id, by its dataset key (`<synset>/<model_id>`), or by its model id
alone when the file does not say the synset.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.sources.spec import ObjectSpec, decode_extras

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
FILES_KEYS = ("method", "unlisted", "val_from_train", *SPLIT_NAMES)
_SYNSET = re.compile(r"^(\d{8})(?:_|$)")


class SplitFileError(ValueError):
    """Split files that cannot be used; the message names the file or pattern."""


def _file_synset(path: Path) -> str:
    """The synset a per-category split file belongs to, from its folder or name prefix ('' if none)."""
    for name in (path.parent.name, path.stem):
        m = _SYNSET.match(name)
        if m:
            return m.group(1)
    return ""


def check_table(table: dict[str, Any]) -> None:
    """A [split] table with method = "files", checked without reading its files (a manifest is checked when it
    is loaded; its files are read when its objects are listed): known keys, value types and ranges."""
    unknown = sorted(set(table) - set(FILES_KEYS))
    if unknown:
        raise SplitFileError(f"unknown key(s) {unknown} in [split] with method = 'files'; known: {sorted(FILES_KEYS)}")
    unlisted = table.get("unlisted", "skip")
    if unlisted not in ("skip", "train"):
        raise SplitFileError(f"split.unlisted must be 'skip' or 'train', not {unlisted!r}")
    val_from_train = table.get("val_from_train", 0.0)
    if isinstance(val_from_train, bool) or not isinstance(val_from_train, int | float) or not 0 <= val_from_train < 1:
        raise SplitFileError(f"split.val_from_train must be a fraction in [0, 1), not {val_from_train!r}")
    for name in SPLIT_NAMES:
        patterns = table.get(name, [])
        if not (isinstance(patterns, str) or isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
            raise SplitFileError(f"split.{name} must be a path or glob or a list of them, not {patterns!r}")
    if not any(table.get(name) for name in SPLIT_NAMES):
        raise SplitFileError("[split] method = 'files' needs at least one of train, val, test")


def read_split_file(path: Path) -> list[str]:
    """Entries of one split file, qualified as `<synset>/<model_id>` where the file names its synset."""
    synset = _file_synset(path)
    out = []
    for line in path.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entry = entry.strip("/")
        out.append(f"{synset}/{entry}" if synset and "/" not in entry else entry)
    return out


@dataclass
class FileSplit:
    """Which split each listed object belongs to; `unlisted` says what happens to the others ('skip' or 'train')."""

    entries: dict[str, str] = field(default_factory=dict)  # entry -> split
    unlisted: str = "skip"
    val_from_train: float = 0.0  # fraction of train objects moved to val by a stable hash (lists without val)
    files: list[Path] = field(default_factory=list)

    @classmethod
    def from_table(cls, table: dict[str, Any], base_dir: Path) -> FileSplit:
        """[split] method = "files", train/val/test = a path or glob or a list of them (relative to the manifest),
        unlisted = "skip" (default: the benchmark's objects only) or "train", val_from_train = a fraction of
        the train objects held out as val (IM-NET's lists have no val; the test list stays untouched)."""
        check_table(table)
        out = cls(unlisted=str(table.get("unlisted", "skip")), val_from_train=float(table.get("val_from_train", 0.0)))
        for name in SPLIT_NAMES:
            patterns = table.get(name, [])
            for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
                full = Path(str(pattern)).expanduser()
                full = full if full.is_absolute() else base_dir / full
                paths = sorted(Path(p) for p in glob.glob(str(full)))
                if not paths:
                    raise SplitFileError(f"{full}: no split file matches (split.{name})")
                for path in paths:
                    out.files.append(path)
                    for entry in read_split_file(path):
                        previous = out.entries.setdefault(entry, name)
                        if previous != name:
                            raise SplitFileError(f"{path}: {entry!r} is in both the {previous} and the {name} "
                                                 "lists")
        log.info("split files: %d entries from %d files", len(out.entries), len(out.files))
        return out

    def split_of(self, spec: ObjectSpec) -> str | None:
        """The split of one object, or None when it is not listed and unlisted objects are skipped."""
        key = str(decode_extras(spec.extras).get("key", ""))
        candidates = [spec.object_id, key, key.rsplit("/", 1)[-1]] if key else [spec.object_id]
        split = next((self.entries[c] for c in candidates if c and c in self.entries), None)
        if split is None and self.unlisted == "train":
            split = "train"
        if split == "train" and self.val_from_train > 0:
            # the same stable hash as the manifest's "hash" split: adding objects moves none
            u = int(hashlib.sha256(spec.object_id.encode()).hexdigest()[:8], 16) / 2**32
            split = "val" if u < self.val_from_train else "train"
        return split
