"""Throughput of the train stage: the data loader alone (zarr -> batch tensors, 1 and 2 workers), the training
step alone, and their ratio (> 1: the loader keeps up with the step); with --objects, the loader on a store of
that many objects, with the point cache as it was and as it is.

    python benchmarks/bench_train.py --data data/industrial-demo [--preset paper] [--batches 60]
    python benchmarks/bench_train.py --data data/industrial-demo --objects 4096 [--store PATH]
        [--point-cache-mb 1024 128] [--workers 2]
    python benchmarks/bench_train.py --data data/industrial-demo --baseline /tmp/base [--presets cpu-demo paper]

--baseline TREE times the training step of another checkout (e.g. `git archive efc8e35 | tar -x -C /tmp/base`)
and of this one side by side, alternating processes, by part: forward (encode, decode, loss), backward, optimiser
step; each tree's network, precision and optimiser as its own `aps train` sets them (trees before the CPU
precision change: float32 and Adam's per-tensor loop). It names the CPU's bfloat16 instructions.

A sample is one object-view with its points (2048 in the paper preset). The loader figures exclude the first
pass over the objects (the per-worker caches fill then: one read per shard, one per object's views).

--objects N builds a store of N objects in --store (or reuses the one there): copies of the training objects of
--data under new ids, written through pipeline.schema, so it reads as preprocess's stores read (checksums and
all); preprocessing thousands of meshes would take hours here. It then times one epoch (every object once:
the caches fill) and --batches batches of the next, and prints each loader worker's peak RSS and what its
caches hold, for the reader at each --point-cache-mb and for the earlier one (every shard a worker touched
kept decoded, and the rows of every object, without bound), emulated here by UnboundedSamples. With glibc's
defaults the RSS figures vary by a GB from run to run (heap fragmentation); MALLOC_MMAP_THRESHOLD_=131072 in
the environment takes that out.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from trainer.data import ObjectCache, TrainingSamples, split_rows


def loader_rate(data: str, cfg, workers: int, batches: int) -> float:
    from pipeline.schema import open_store
    from trainer.data import EpochBatches, TrainingSamples, make_loader, training_object_ids

    ids = training_object_ids(open_store(data), cfg.data)
    dataset = TrainingSamples(data, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed)
    repeats = max(1, -(-(batches + 8) * cfg.data.batch_size // len(ids)))
    sampler = EpochBatches(len(ids), cfg.data.batch_size, repeats, cfg.seed)
    loader = make_loader(dataset, sampler, workers)
    it = iter(loader)
    warm = max(2 * workers, -(-len(ids) // cfg.data.batch_size) * max(1, workers))  # fill every worker's cache
    for _ in range(warm):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)["points"].shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


def step_rate(data: str, cfg, steps: int, device: torch.device) -> float:
    import torch.nn.functional as F

    from pipeline.schema import open_store
    from trainer.data import EpochBatches, TrainingSamples, training_object_ids
    from trainer.labels import label_v
    from trainer.models import build_model
    from trainer.views import prepare_view

    ids = training_object_ids(open_store(data), cfg.data)
    dataset = TrainingSamples(data, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed)
    sampler = EpochBatches(len(ids), cfg.data.batch_size, max(1, -(-cfg.data.batch_size // len(ids))), cfg.seed)
    batch = {k: v.to(device) for k, v in dataset[next(iter(sampler))].items()}
    model = build_model(cfg.model, load_pretrained=False).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    use_amp = device.type == "cuda" and cfg.optim.amp

    def step():
        images, K = prepare_view(batch["images"], batch["K"], cfg.data.image_size)
        target = label_v(batch["udf"], batch["inside"], 0.5, cfg.labels.d_star)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(images, batch["points"], K, batch["Rt"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch["points"].shape[0] / (time.perf_counter() - t0)


def step_parts(data: str, cfg, steps: int, rounds: int) -> dict[str, float]:
    """Seconds per training step by part (forward, backward, optimizer, total) and samples/s, best of `rounds`
    rounds of `steps` steps, on one real batch of the store, with this process's trainer package: its network,
    and the precision and Adam its loop would use."""
    import torch.nn.functional as F

    import trainer.loop as loop
    from pipeline.schema import open_store
    from trainer.data import EpochBatches, TrainingSamples, training_object_ids
    from trainer.labels import label_v
    from trainer.models import build_model
    from trainer.views import prepare_view

    device = torch.device("cpu")
    ids = training_object_ids(open_store(data), cfg.data)
    dataset = TrainingSamples(data, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed)
    sampler = EpochBatches(len(ids), cfg.data.batch_size, max(1, -(-cfg.data.batch_size // len(ids))), cfg.seed)
    batch = dataset[next(iter(sampler))]
    torch.manual_seed(0)
    model = build_model(cfg.model, load_pretrained=False).train()
    new = hasattr(loop, "_amp_dtype")  # the tree has the CPU precision change (and fused Adam with it)
    dtype = loop._amp_dtype(cfg, model, device) if new else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, **({"fused": True} if new else {}))
    autocast = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
    parts = {"forward": [], "backward": [], "optimizer": []}

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        images, K = prepare_view(batch["images"], batch["K"], cfg.data.image_size)
        target = label_v(batch["udf"], batch["inside"], 0.5, cfg.labels.d_star)
        with autocast:
            logits = model(images, batch["points"], K, batch["Rt"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if record:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[name].append(seconds)

    step(False)
    step(False)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for lst in parts.values():
            lst.clear()
        for _ in range(steps):
            step(True)
        means = {name: sum(v) / len(v) for name, v in parts.items()}
        means["total"] = sum(means.values())
        if not best or means["total"] < best["total"]:
            best = means
    best["samples_per_s"] = cfg.data.batch_size / best["total"]
    best["precision"] = "bf16" if dtype is torch.bfloat16 else "fp32"
    return best


def compare_trees(baseline: Path, data: str, presets: list[str], steps: int, threads: int) -> None:
    """step_parts of the baseline tree and of this one, for each preset, each in its own process."""
    import json
    import os
    import subprocess
    import sys

    from trainer.models.precision import cpu_bf16_instructions

    here = Path(__file__).resolve().parents[1]
    print(f"CPU bfloat16 instructions: {cpu_bf16_instructions() or 'none'}; torch {torch.__version__}, "
          f"{threads} threads; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'preset':<9} {'tree':<9} {'precision':<9} {'forward':>9} {'backward':>9} {'optimizer':>9} "
          f"{'step':>9} {'samples/s':>10} {'ratio':>6}")
    for name in presets:
        rates = {}
        for tree, path in (("baseline", baseline), ("new", here)):
            code = (f"import json, torch; torch.set_num_threads({threads}); import bench_train as b; "
                    f"from trainer.config import preset; "
                    f"print(json.dumps(b.step_parts({data!r}, preset({name!r}), {steps}, 3)))")
            env = dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}{os.pathsep}{path}")
            out = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, check=True, capture_output=True,
                                 text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rates[tree] = r["samples_per_s"]
            ratio = rates[tree] / rates["baseline"]
            print(f"{name:<9} {tree:<9} {r['precision']:<9} {r['forward']:9.3f} {r['backward']:9.3f} "
                  f"{r['optimizer']:9.3f} {r['total']:9.3f} {r['samples_per_s']:10.1f} {ratio:5.2f}x", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (seconds per step, best of 3 rounds of {steps} steps)")


def copies_store(source: str, path: Path, n_objects: int, split: str, shard_size: int = 16) -> Path:
    """A complete store of n_objects: the objects of `source`'s split, copied round-robin under new ids (all in
    the train split), shard_size a shard (preprocess's default). Reused when `path` already holds one like it;
    any other folder there is refused, never deleted."""
    from pipeline import schema

    src = schema.open_store(source)
    dataset = f"{src.attrs.get('dataset', 'store')}-x{n_objects}"
    if path.exists():
        try:
            have = schema.open_store(path)
        except schema.StoreError as exc:
            raise SystemExit(f"{path}: exists and is not a complete store ({exc}); give --store a new folder") from None
        if have.attrs.get("dataset") != dataset or len(have) != n_objects:
            raise SystemExit(f"{path}: holds {have.attrs.get('dataset')!r} ({len(have)} objects), not {dataset!r}; "
                             "give --store a new folder")
        print(f"reusing {path}: {n_objects} objects")
        return path
    originals = []
    for oid in src.split(split):
        a = src.load(oid, schema.TRAINING_ARRAYS)
        arrays = {name: a[name] for name in schema.TRAINING_ARRAYS}
        arrays.update(points=schema.quantize_points(a["points"]), udf=schema.quantize_udf(a["udf"]))  # as stored
        originals.append((src.info(oid), arrays))
    if not originals:
        raise SystemExit(f"{source}: no objects in split {split!r} to copy")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    schema.init_store(path, dataset, src.params, src.attrs.get("code_version", ""))
    index, t0 = {}, time.perf_counter()
    for k, start in enumerate(range(0, n_objects, shard_size)):
        records = []
        for i in range(start, min(start + shard_size, n_objects)):
            info, arrays = originals[i % len(originals)]
            meta = schema.ObjectMeta(f"{info['object_id']}-{i:06d}", info["category"], "train", info["source"],
                                     f"{info['content_hash']}-{i}", info["extras"])
            records.append(schema.ObjectRecord(meta, arrays))
        shard = schema.write_shard(path, f"{run_id}-train-{k:05d}", records)
        index.update({r.object_id: (shard, row) for row, r in enumerate(records)})
        schema.write_index(path, index, complete=False)
    schema.write_index(path, index, complete=True)
    print(f"built {path}: {n_objects} copies of {len(originals)} objects of {source} in "
          f"{time.perf_counter() - t0:.0f} s")
    return path


class _DecodedShards(ObjectCache):
    """The earlier point reading: every shard a worker touches kept decoded (float32 points and udf, 170 kB an
    object), without bound."""

    def __init__(self, store_path, image_cache_mb: float = 2048.0):
        super().__init__(store_path, image_cache_mb)
        self._decoded: dict[str, dict[str, np.ndarray]] = {}

    def __getstate__(self):
        return {**super().__getstate__(), "_decoded": {}}

    def point_arrays(self, object_id, rows=None):
        if object_id not in self._decoded:
            shard = self.store.location(object_id)[0]
            data = self.store.read_shard(shard, self.POINT_ARRAYS)
            for oid in self.store.shards()[shard]:
                row = self.store.location(oid)[1]
                self._decoded[oid] = {name: data[name][row] for name in self.POINT_ARRAYS}
        arrays = self._decoded[object_id]
        return arrays if rows is None else {name: a[rows] for name, a in arrays.items()}

    def n_points(self, object_id):
        return int(self.point_arrays(object_id)["udf"].shape[0])

    def usage(self):
        point_bytes = sum(a.nbytes for arrays in self._decoded.values() for a in arrays.values())
        return {**super().usage(), "point_bytes": point_bytes, "point_objects": len(self._decoded)}


class MeasuredSamples(TrainingSamples):
    """TrainingSamples whose batches also carry the worker's id and memory: peak RSS (VmHWM), and the bytes its
    point cache (with the per-object rows) and view cache hold."""

    def point_bytes(self) -> int:
        return self.cache.usage()["point_bytes"] + sum(m.nbytes for m in self._held_out_masks.values())

    def __getitem__(self, keys):
        batch = super().__getitem__(keys)
        info = torch.utils.data.get_worker_info()
        batch["worker"] = torch.tensor(info.id if info is not None else -1)
        batch["memory"] = torch.tensor([_status_bytes("VmHWM"), self.point_bytes(),
                                        self.cache.usage()["view_bytes"]], dtype=torch.float64)
        return batch


class UnboundedSamples(MeasuredSamples):
    """The loader as it was: _DecodedShards, and every object's training rows kept as int64 (80 kB an object)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache = _DecodedShards(self.cache.store_path, self.cache.image_cache_bytes / 2**20)
        self._rows: dict[int, np.ndarray] = {}

    def training_rows(self, object_index):
        if object_index not in self._rows:
            n_points = self.cache.n_points(self.object_ids[object_index])
            self._rows[object_index] = split_rows(n_points, self.held_out, self.seed, object_index)[0]
        return self._rows[object_index]

    def point_bytes(self) -> int:
        return self.cache.usage()["point_bytes"] + sum(r.nbytes for r in self._rows.values())


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def cache_comparison(store: str, cfg, workers: int, batches: int, point_cache_mb: list[float]) -> None:
    """samples/s of a first epoch and of `batches` batches of the second, and per worker its peak RSS and the
    bytes its caches hold, for the earlier reader and for the budgeted one at each point budget."""
    from pipeline.schema import open_store
    from trainer.data import EpochBatches, make_loader

    ids = open_store(store).object_ids
    print(f"{len(ids)} objects, batches of {cfg.data.batch_size} x {cfg.data.points_per_sample} points, {workers} "
          f"loader worker{'s' if workers > 1 else ''}, image_cache_mb 2048 (each worker starts as a copy-on-write "
          f"copy of this process: {_status_bytes('VmRSS') / 2**20:.0f} MB RSS)")
    print(f"{'reader':<28} {'epoch 1':>9} {'epoch 2':>9} {'peak RSS/worker':>16} {'points':>8} {'views':>8}")
    settings = [("earlier (unbounded)", UnboundedSamples, {})]
    settings += [(f"point_cache_mb={mb:g}", MeasuredSamples, {"point_cache_mb": mb}) for mb in point_cache_mb]
    for name, kind, budget in settings:
        dataset = kind(store, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed, **budget)
        sampler = EpochBatches(len(ids), cfg.data.batch_size, 1, cfg.seed)
        loader = make_loader(dataset, sampler, workers)
        memory: dict[int, torch.Tensor] = {}
        rates = []
        for epoch, limit in ((0, len(sampler)), (1, min(batches, len(sampler)))):
            sampler.set_epoch(epoch)
            n, t0 = 0, time.perf_counter()
            for step, batch in enumerate(loader):
                n += batch["points"].shape[0]
                memory[int(batch["worker"])] = torch.maximum(memory.get(int(batch["worker"]), batch["memory"]),
                                                             batch["memory"])
                if step + 1 == limit:
                    break
            rates.append(n / (time.perf_counter() - t0))
        del loader
        peak, points, views = (max(float(m[i]) for m in memory.values()) / 2**20 for i in range(3))
        print(f"{name:<28} {rates[0]:9.0f} {rates[1]:9.0f} {peak:13.0f} MB {points:5.0f} MB {views:5.0f} MB")


def main() -> None:
    from trainer.config import override, preset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/industrial-demo")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batches", type=int, default=60, help="timed loader batches per worker setting")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. data.batch_size=16")
    parser.add_argument("--objects", type=int, default=0,
                        help="compare the point caches on a store of this many copies of --data's training objects")
    parser.add_argument("--store", type=Path, default=None,
                        help="where that store is built or reused (default: data/<dataset>-x<objects>)")
    parser.add_argument("--point-cache-mb", type=float, nargs="+", default=[1024.0],
                        help="point budgets to compare with the earlier, unbounded reader")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of that comparison")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another commit: its training step and this tree's, side by side")
    parser.add_argument("--presets", nargs="+", default=["cpu-demo", "paper"], help="presets of --baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.baseline:
        compare_trees(args.baseline.resolve(), str(Path(args.data).resolve()), args.presets, args.steps,
                      args.threads)
        return
    cfg = override(preset(args.preset), args.set)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.objects:
        from pipeline.schema import open_store

        dataset = open_store(args.data).attrs.get("dataset", "store")
        store = copies_store(args.data, args.store or Path("data") / f"{dataset}-x{args.objects}", args.objects,
                             cfg.data.train_split)
        cache_comparison(str(store), cfg, args.workers, args.batches, args.point_cache_mb)
        return
    print(f"preset {args.preset}: batch {cfg.data.batch_size} object-views x {cfg.data.points_per_sample} points, "
          f"{cfg.data.image_size} px, {cfg.model.extractor}; step on {device}")
    rates = {}
    for workers in (1, 2):
        rates[workers] = loader_rate(args.data, cfg, workers, args.batches)
        print(f"loader, {workers} worker{'s' if workers > 1 else ''}: {rates[workers]:8.0f} samples/s")
    train = step_rate(args.data, cfg, args.steps, device)
    print(f"training step:      {train:8.1f} samples/s")
    print(f"loader (2 workers) / step: {rates[2] / train:.1f}x")


if __name__ == "__main__":
    main()
