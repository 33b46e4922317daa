"""The records of the store's integrity chain (pipeline/schema/__init__.py, "Integrity"): [bytes, crc32c] of a
file or a document, and index.json's checksum of itself. What the writer records and the reader checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import google_crc32c

from pipeline.schema.layout import INDEX_CRC_KEY


def file_checksum(path: Path) -> tuple[int, int]:
    """(bytes, crc32c) of a whole file, read in blocks (shards of reference data are tens of MB)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = google_crc32c.extend(crc, block)
            size += len(block)
    return size, crc


def checksum_record(data: bytes) -> list[int]:
    """[bytes, crc32c] of a document held in memory (the form of every checksum record of the store)."""
    return [len(data), google_crc32c.value(data)]


def index_crc(doc: Mapping[str, Any]) -> int:
    """index.json's own checksum: crc32c of the document without its "crc32c" key, as compact ASCII JSON with
    sorted keys, so it does not depend on how the file was indented."""
    rest = {k: v for k, v in doc.items() if k != INDEX_CRC_KEY}
    return google_crc32c.value(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def checked_record(value: Any) -> tuple[int, int] | None:
    """(bytes, crc32c) of a record read from a store, None when it is not two non-negative integers."""
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                             and v >= 0 for v in value)):
        return value[0], value[1]
    return None


def cached_by_stat(cache: dict, path: Path, compute: Callable[[], Any]) -> Any:
    """compute()'s value for `path`, computed again only when the file's inode, size or mtime changed since it
    was kept in `cache` (path -> (stat key, value)); OSError when the file cannot be stat'ed."""
    st = path.stat()
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    seen = cache.get(str(path))
    if seen is None or seen[0] != key:
        seen = cache[str(path)] = (key, compute())
    return seen[1]
