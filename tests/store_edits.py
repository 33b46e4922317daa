"""Edits of a real store by hand, as a careless user or an attacker would make them (for the hostile-input tests)."""

from __future__ import annotations

import json
from pathlib import Path

import google_crc32c


def crc_record(data: bytes) -> list[int]:
    """[bytes, crc32c]: the form of every checksum record of a store (pipeline/schema/__init__.py)."""
    return [len(data), google_crc32c.value(data)]


def rename_object(store: Path, old: str, new: str, reseal: bool) -> None:
    """Rename an object in index.json and in its shard's zarr.json by hand. reseal: recompute every checksum of
    the chain as pipeline/schema/__init__.py documents it, as a deliberate editor would (then only the id grammar can
    refuse the store); otherwise leave them, as a careless one would."""
    index = json.loads((store / "index.json").read_text())
    shard, row = index["objects"].pop(old)
    index["objects"][new] = [shard, row]
    meta = store / "shards" / shard / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["objects"][row]["object_id"] = new
    if "object_ids" in doc["attributes"]:
        doc["attributes"]["object_ids"][row] = new
    meta.write_text(json.dumps(doc, indent=2))
    if reseal:
        index.pop("crc32c", None)
        index.setdefault("metadata", {})[f"shards/{shard}/zarr.json"] = crc_record(meta.read_bytes())
        index["metadata"]["zarr.json"] = crc_record((store / "zarr.json").read_bytes())
        index["crc32c"] = google_crc32c.value(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
    (store / "index.json").write_text(json.dumps(index, indent=0))
