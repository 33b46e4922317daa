"""Preprocess throughput and storage: objects/s with 1 and 2 Dask workers, ms per object per step, bytes per object.

    python benchmarks/bench_preprocess.py [--manifest manifests/industrial-parts.toml] [--workers 1 2]
    python benchmarks/bench_preprocess.py --store data/industrial-parts     # bytes per object of a store only

Figures come from one run each on this machine (noisy when shared): compare the ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import schema  # noqa: E402
from pipeline.manifest import load_manifest  # noqa: E402
from pipeline.runner import run_preprocess  # noqa: E402


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="manifests/industrial-parts.toml")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--store", help="only report the bytes per object of this existing store")
    args = ap.parse_args()
    if args.store:
        report_storage(Path(args.store))
        return
    manifest = load_manifest(args.manifest)
    n_objects = len(manifest.objects())
    print(f"dataset {manifest.name}: {n_objects} objects, {os.cpu_count()} cores")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            store = Path(tmp) / f"store-{workers}"
            start = time.perf_counter()
            summary = run_preprocess(manifest, store, scheduler="local", workers=workers)
            wall = time.perf_counter() - start
            rates[workers] = summary.done / wall
            print(f"\n{workers} worker(s): {summary.done} objects in {wall:.1f} s = {rates[workers]:.2f} objects/s "
                  f"({len(summary.failed)} failed), cluster start-up included")
            print("  ms per object by step (summed over workers):")
            for step, sec in sorted(summary.step_seconds.items(), key=lambda kv: -kv[1]):
                print(f"    {step:10s} {1000 * sec / max(summary.done, 1):8.1f}")
            if workers == args.workers[-1]:
                report_storage(store)
            shutil.rmtree(store)
    if 1 in rates and 2 in rates:
        print(f"\nspeed-up 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")


def report_storage(store_path: Path) -> None:
    store = schema.open_store(store_path)
    per_split: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for shard, oids in store.shards().items():
        split = store.info(oids[0])["split"]
        counts[split] = counts.get(split, 0) + len(oids)
        for arr in (store_path / schema.SHARDS_DIR / shard).iterdir():
            if arr.is_dir():
                per_split.setdefault(split, {})
                per_split[split][arr.name] = per_split[split].get(arr.name, 0) + dir_bytes(arr)
    print("\n  bytes stored per object (compressed, on disk):")
    for split, arrays in sorted(per_split.items()):
        n = counts[split]
        train_part = sum(v for k, v in arrays.items() if k in schema.TRAINING_ARRAYS and k != "images")
        ref_part = sum(v for k, v in arrays.items() if k.startswith("ref_"))
        images = arrays.get("images", 0)
        print(f"    {split:5s} ({n:3d} objects): points+udf+inside+camera {train_part / n / 1e3:6.1f} kB, "
              f"images {images / n / 1e3:6.1f} kB, total {(train_part + images) / n / 1e3:6.1f} kB"
              + (f", + evaluation reference {ref_part / n / 1e3:7.1f} kB" if ref_part else ""))
        detail = ", ".join(f"{k} {v / n / 1e3:.1f}" for k, v in sorted(arrays.items()) if not k.startswith("ref_"))
        print(f"      by array (kB): {detail}")


if __name__ == "__main__":
    main()
