"""Read back what a run wrote, through the public reader, before calling the store complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.schema.layout import DamagedObjectError, StoreError
from pipeline.schema.read import open_store, verify_shard


def validate_store(path: str | Path, object_ids: list[str] | None = None) -> list[str]:
    """Problems found in a store (empty list: every object's files match the sizes and crc32c recorded when they
    were written, and its arrays read back with consistent shapes and values). One line per damaged object,
    naming it and the file; `aps preprocess` run again redoes exactly those."""
    try:
        store = open_store(path)
    except StoreError as exc:
        return [str(exc)]
    wanted = store.object_ids if object_ids is None else object_ids
    problems = []
    damaged: set[str] = set()
    wanted_set = set(wanted)
    for shard, oids in store.shards().items():
        if wanted_set.isdisjoint(oids):  # only the shards of the objects asked about are read
            continue
        try:
            bad = verify_shard(path, shard)
        except DamagedObjectError as exc:
            bad = {store.location(o)[1]: str(exc) for o in oids}
        for oid in oids:
            row = store.location(oid)[1]
            if row in bad and oid in wanted_set:
                problems.append(f"{oid}: damaged: {bad[row]}")
                damaged.add(oid)
    for oid in wanted:
        if oid in damaged:
            continue
        try:
            d = store.load(oid, ["points", "udf", "inside", "K", "Rt"])
            n = len(d["points"])
            if d["points"].shape != (n, 3) or d["udf"].shape != (n,) or d["inside"].shape != (n,):
                problems.append(f"{oid}: inconsistent point array shapes")
            elif not (np.isfinite(d["udf"]).all() and (d["udf"] >= 0).all()):
                problems.append(f"{oid}: udf has negative or non-finite values")
            elif d["K"].shape[0] != d["Rt"].shape[0]:
                problems.append(f"{oid}: {d['K'].shape[0]} intrinsics for {d['Rt'].shape[0]} extrinsics")
        except Exception as exc:  # noqa: BLE001 - report every unreadable object, not the first
            problems.append(f"{oid}: unreadable ({type(exc).__name__}: {exc})")
    return problems
