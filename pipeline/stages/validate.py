"""Read back what a run wrote, through the public reader, before calling the store complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import schema


def validate_store(path: str | Path, object_ids: list[str] | None = None) -> list[str]:
    """Problems found in a store (empty list: every object reads back with consistent shapes and values)."""
    store = schema.open_store(path)
    problems = []
    for oid in object_ids if object_ids is not None else store.object_ids:
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
