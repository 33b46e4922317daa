"""Batches for training and validation, each component built from the run's `data` section (DataConfig).

A training sample is one object-view: a random stored view of an object (image, K, Rt) and a random subset
of its 10,000 points with their stored `udf` and `inside`. The label v(d, s) is NOT made here: the loop
computes it on the training device at batch time (trainer.labels.label_v).

Reading: every worker keeps, each under its own byte budget and least recently used first out, the points,
udf and inside flags of the objects it has touched (in their stored uint16 form, decoded per sample) and their
raw RGBA views; images are composited and resized by the training process, on its device, through
trainer.views.prepare_view (its own module: inference prepares images the same way without this loader).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.schema.layout import N_UNIFORM, UDF_MAX, dequantize_points, dequantize_udf, quantize_points, quantize_udf
from pipeline.schema.read import Store, open_store
from trainer.config import DataConfig

log = logging.getLogger(__name__)


class _ByteLRU:
    """Entries in least-recently-used order under a byte budget: adding one evicts the oldest until it fits, and
    an entry larger than the whole budget is handed back without being kept, so `nbytes <= budget` always."""

    def __init__(self, budget: int):
        self.budget = budget
        self.nbytes = 0
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def room(self) -> int:
        """Bytes that fit before anything is evicted."""
        return self.budget - self.nbytes

    def get(self, key: str) -> Any:
        """The entry (now the most recently used), or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key][0]

    def put(self, key: str, value: Any, nbytes: int) -> Any:
        """Keep value under key (evicting the oldest entries as needed) and return it."""
        if key in self._entries:
            self.nbytes -= self._entries.pop(key)[1]
        if nbytes <= self.budget:
            while self.nbytes + nbytes > self.budget:
                self.nbytes -= self._entries.popitem(last=False)[1][1]
            self._entries[key] = (value, nbytes)
            self.nbytes += nbytes
        return value


def _codes(points: np.ndarray, udf: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored uint16 codes of decoded points (..., 3) and udf (...), with inside (...) as bool. Exact: the
    float32 a code decodes to lies within 1e-7 of its code's value, far inside the rounding interval of +-9e-6,
    so every code comes back (tests check all 65536). The udf is clipped to UDF_MAX in float64 first: the top
    code decodes to float32(1.2) > 1.2."""
    return (quantize_points(points), quantize_udf(np.minimum(np.asarray(udf, np.float64), UDF_MAX)),
            np.asarray(inside, dtype=bool))


class ObjectCache:
    """A store's arrays held in memory under two byte budgets, least recently used first out: the points, udf and
    inside flags of objects (in their stored uint16 form, 90 kB an object of 10,000 points against 170 kB
    decoded; decoded per sample, exactly as Store.read decodes them), and all views of objects.

    A point miss reads the object's whole shard (one read per array) while the shard's missing objects fit in
    the budget's free room, as they do on a first pass over a store that fits; once the budget binds, only the
    object (the chunk layout makes that decompress nothing else). point_cache_mb = 0 keeps nothing."""

    POINT_ARRAYS = ("points", "udf", "inside")

    def __init__(self, store_path: str | Path, image_cache_mb: float = 2048.0, point_cache_mb: float = 1024.0):
        self.store_path = Path(store_path)
        self.image_cache_bytes = int(image_cache_mb * 2**20)
        self.point_cache_bytes = int(point_cache_mb * 2**20)
        self._store: Store | None = None
        self._shards: dict[str, list[str]] | None = None
        self._points = _ByteLRU(self.point_cache_bytes)
        self._views = _ByteLRU(self.image_cache_bytes)
        self._object_bytes = 0  # bytes of one object's codes, known after the first read

    def __getstate__(self):  # workers reopen the store themselves (zarr handles do not travel well)
        state = dict(self.__dict__)
        state.update(_store=None, _shards=None, _points=_ByteLRU(self.point_cache_bytes),
                     _views=_ByteLRU(self.image_cache_bytes))
        return state

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_path)
        return self._store

    def usage(self) -> dict[str, int]:
        """What the cache holds now: point_bytes, point_objects, view_bytes, view_objects."""
        return {"point_bytes": self._points.nbytes, "point_objects": len(self._points),
                "view_bytes": self._views.nbytes, "view_objects": len(self._views)}

    def point_arrays(self, object_id: str, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """points float32 (R, 3) normalised frame, udf float32 (R,), inside bool (R,) of the stored rows `rows`
        (int indices; None: all, R = 10000), new arrays equal bit for bit to what Store.read returns."""
        points, udf, inside = self._point_codes(object_id)
        if rows is not None:
            points, udf, inside = points[rows], udf[rows], inside[rows]
        return {"points": dequantize_points(points), "udf": dequantize_udf(udf), "inside": np.array(inside)}

    def n_points(self, object_id: str) -> int:
        """Stored points of an object (10000 by default)."""
        return int(self._point_codes(object_id)[2].shape[0])

    def _point_codes(self, object_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        entry = self._points.get(object_id)
        if entry is not None:
            return entry
        shard = self.store.location(object_id)[0]
        if self._shards is None:
            self._shards = self.store.shards()
        # the asked object goes in last: the most recently used
        wanted = [o for o in self._shards[shard] if o not in self._points and o != object_id] + [object_id]
        try:
            if self._object_bytes and len(wanted) * self._object_bytes <= self._points.room:
                rows = [self.store.location(o)[1] for o in wanted]
                data = {name: a[rows] for name, a in self.store.read_shard(shard, self.POINT_ARRAYS).items()}
            else:
                wanted = [object_id]
                data = {name: self.store.read(object_id, name)[None] for name in self.POINT_ARRAYS}
        except KeyError as exc:
            raise KeyError(f"{self.store.path}: shard {shard} lacks a training array ({exc})") from None
        codes = _codes(data["points"], data["udf"], data["inside"])
        for i, oid in enumerate(wanted):  # each object its own arrays: evicting it frees them
            entry = tuple(np.array(c[i]) for c in codes)
            self._object_bytes = sum(c.nbytes for c in entry)
            self._points.put(oid, entry, self._object_bytes)
        return entry

    def views(self, object_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored views of an object: images uint8 (V, H, W, 4), K float32 (V, 3, 3), Rt float32 (V, 3, 4)."""
        entry = self._views.get(object_id)
        if entry is not None:
            return entry
        arrays = self.store.load(object_id, ["images", "K", "Rt"])
        entry = (arrays["images"], np.asarray(arrays["K"], np.float32), np.asarray(arrays["Rt"], np.float32))
        return self._views.put(object_id, entry, sum(a.nbytes for a in entry))

    def n_views(self, object_id: str) -> int:
        return int(self.views(object_id)[0].shape[0])


@dataclass(frozen=True)
class SampleKey:
    """Which sample to draw: everything random about it follows from (seed, epoch, position)."""

    epoch: int
    position: int
    object_index: int


def _collate(cache: ObjectCache, object_ids: Sequence[str], picks: list[tuple[int, int, np.ndarray]]) -> dict:
    images, Ks, Rts, points, udf, inside, index = [], [], [], [], [], [], []
    for obj, view, rows in picks:
        oid = object_ids[obj]
        imgs, K, Rt = cache.views(oid)
        arrays = cache.point_arrays(oid, rows)
        images.append(imgs[view])
        Ks.append(K[view])
        Rts.append(Rt[view])
        points.append(arrays["points"])
        udf.append(arrays["udf"])
        inside.append(arrays["inside"])
        index.append(obj)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{cache.store_path}: views of different sizes {sorted(shapes)} in one batch "
                         f"(objects {[object_ids[o] for o, _, _ in picks]}); a store must use one view size")
    return {
        "images": torch.from_numpy(np.stack(images)),  # uint8 (B, H, W, 4): prepare_view runs on the device
        "K": torch.from_numpy(np.stack(Ks)),
        "Rt": torch.from_numpy(np.stack(Rts)),
        "points": torch.from_numpy(np.stack(points)),
        "udf": torch.from_numpy(np.stack(udf)),
        "inside": torch.from_numpy(np.stack(inside)),
        "object_index": torch.tensor(index, dtype=torch.long),
    }


def split_rows(n_points: int, held_out: int, seed: int, object_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of one object's stored points: a fixed random split, the same in every
    process and epoch, so held-out points are never trained on."""
    perm = np.random.default_rng([seed, 7919, object_index]).permutation(n_points)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])


class TrainingSamples(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: the sampler hands it a list of SampleKeys.

    held_out > 0 keeps that many stored points of every object out of training (see split_rows).
    uniform_share > 0: that share of each sample's points comes from the object's uniform points (as many as
    are stored and usable), the rest from its near-surface points; 0: all rows alike.
    image_cache_mb, point_cache_mb: the byte budgets of each worker's ObjectCache.
    """

    def __init__(self, store_path: str | Path, object_ids: Sequence[str], points_per_sample: int,
                 views: Sequence[int] = (), seed: int = 0, held_out: int = 0, image_cache_mb: float = 2048.0,
                 point_cache_mb: float = 1024.0, uniform_share: float = 0.0):
        self.uniform_share = uniform_share
        self.cache = ObjectCache(store_path, image_cache_mb, point_cache_mb)
        self.object_ids = list(object_ids)
        self.points_per_sample = points_per_sample
        self.views = tuple(views)
        self.seed = seed
        self.held_out = held_out
        self._held_out_masks: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, data: DataConfig, store_path: str | Path, object_ids: Sequence[str], seed: int,
                    held_out: int = 0) -> TrainingSamples:
        """The training samples of a run's `data` section (checked first: DataConfig.check)."""
        data.check()
        return cls(store_path, object_ids, data.points_per_sample, data.views, seed, held_out,
                   uniform_share=data.uniform_share)

    def __len__(self) -> int:
        return len(self.object_ids)

    def draw(self, key: SampleKey) -> tuple[int, int, np.ndarray]:
        """(object, view, point rows) of one sample, a pure function of the key and the seed."""
        rng = np.random.default_rng([self.seed, key.epoch, key.position])
        oid = self.object_ids[key.object_index]
        n_views = self.cache.n_views(oid)
        allowed = self.views or tuple(range(n_views))
        if max(allowed) >= n_views:
            raise ValueError(f"{self.cache.store_path}: object {oid} has {n_views} views, config asks for view "
                             f"{max(allowed)}")
        view = int(allowed[rng.integers(len(allowed))])
        usable = self.training_rows(key.object_index)
        if usable is None:
            usable = np.arange(self.cache.n_points(oid))
        if self.uniform_share <= 0.0:
            rows = usable[rng.choice(len(usable), size=min(self.points_per_sample, len(usable)), replace=False)]
            return key.object_index, view, np.sort(rows)
        # the stored uniform points are the last n_uniform rows (pipeline.schema.layout)
        first_uniform = self.cache.n_points(oid) - self.n_uniform
        uniform, near = usable[usable >= first_uniform], usable[usable < first_uniform]
        n = min(self.points_per_sample, len(usable))
        n_uniform = min(len(uniform), round(self.uniform_share * n))
        rows = np.concatenate([uniform[rng.choice(len(uniform), size=n_uniform, replace=False)],
                               near[rng.choice(len(near), size=min(len(near), n - n_uniform), replace=False)]])
        return key.object_index, view, np.sort(rows)

    @property
    def n_uniform(self) -> int:
        """Uniform points stored per object (the store's preprocess parameter n_uniform)."""
        return int(self.cache.store.params.get("n_uniform", N_UNIFORM))

    def training_rows(self, object_index: int) -> np.ndarray | None:
        """split_rows' training rows of an object; None when nothing is held out (all rows). Each object's held-out
        rows are remembered as a bit mask (n_points / 8 bytes: 44 MB for 35k objects, where the rows themselves
        took 80 kB an object)."""
        if self.held_out == 0:
            return None
        n_points = self.cache.n_points(self.object_ids[object_index])
        mask = self._held_out_masks.get(object_index)
        if mask is None:
            held = np.zeros(n_points, bool)
            held[split_rows(n_points, self.held_out, self.seed, object_index)[1]] = True
            mask = self._held_out_masks[object_index] = np.packbits(held)
        return np.flatnonzero(np.unpackbits(mask, count=n_points) == 0)

    def __getitem__(self, keys: list[SampleKey]) -> dict:
        return _collate(self.cache, self.object_ids, [self.draw(k) for k in keys])


class EpochBatches(torch.utils.data.Sampler):
    """Yields the batches (lists of SampleKeys) of one epoch: every object `repeats` times in an order shuffled
    by (seed, epoch), split between the processes of a distributed run (rank r takes every world-th batch).

    A final batch of a single sample is dropped: batch norm cannot normalise over one sample.
    """

    def __init__(self, n_objects: int, batch_size: int, repeats: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.n_objects, self.batch_size, self.repeats = n_objects, batch_size, repeats
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    @classmethod
    def from_config(cls, data: DataConfig, n_objects: int, seed: int, rank: int = 0,
                    world_size: int = 1) -> EpochBatches:
        """The batches of a run's `data` section (checked first: DataConfig.check) for process `rank`."""
        data.check()
        return cls(n_objects, data.batch_size, data.repeats, seed, rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[SampleKey]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n_objects * self.repeats, generator=g).tolist()
        keys = [SampleKey(self.epoch, pos, obj % self.n_objects) for pos, obj in enumerate(order)]
        batches = [keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        if batches and len(batches[-1]) < 2:
            batches.pop()
        # every process must run the same number of steps (DDP all-reduces each one)
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        yield from self._all_batches()[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.world_size


def make_loader(dataset: TrainingSamples, sampler: EpochBatches, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches (batch_size=None: the dataset collates), workers kept across epochs."""
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
        persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if num_workers > 0 else None,
    )


class ValidationSet:
    """Fixed validation samples: for each object, `n_views` evenly spaced views and one fixed subset of `n_points`
    of its stored points (the same at every epoch, so F1 values compare). For objects that are also trained on,
    that subset is exactly the held-out rows of split_rows with held_out = n_points."""

    def __init__(self, cache: ObjectCache, object_ids: Sequence[str], n_points: int, n_views: int,
                 views: Sequence[int] = (), seed: int = 0, on: str = "stored", held_out: bool = False):
        """on = "uniform" keeps only the uniform points (the last n_uniform rows): all of them for a validation
        split, the held-out ones among them when the objects are also trained on (held_out); any other value
        keeps the stored subset (from_config admits only stored and uniform)."""
        self.cache = cache
        self.object_ids = list(object_ids)
        self.picks: list[tuple[int, int, np.ndarray]] = []
        n_uniform = int(cache.store.params.get("n_uniform", N_UNIFORM))
        for obj, oid in enumerate(self.object_ids):
            allowed = tuple(views) or tuple(range(cache.n_views(oid)))
            chosen = sorted({allowed[int(i)] for i in np.linspace(0, len(allowed) - 1, max(1, n_views))})
            n_all = cache.n_points(oid)
            rows = split_rows(n_all, min(n_points, n_all), seed, obj)[1]
            if on == "uniform":
                first_uniform = n_all - n_uniform
                rows = rows[rows >= first_uniform] if held_out else np.arange(first_uniform, n_all)
                if len(rows) == 0:
                    raise ValueError(f"{oid}: no uniform points to validate on (data.val_on = uniform)")
            self.picks += [(obj, v, rows) for v in chosen]

    @classmethod
    def from_config(cls, data: DataConfig, cache: ObjectCache, object_ids: Sequence[str], seed: int,
                    held_out: int = 0) -> ValidationSet:
        """The validation samples of a run's `data` section (checked first: DataConfig.check): data.val_views views
        and data.val_points points of each object; held_out > 0 (the objects are also trained on): that many
        held-out points of each instead (split_rows)."""
        data.check()
        return cls(cache, object_ids, held_out or data.val_points, data.val_views, data.views, seed, on=data.val_on,
                   held_out=held_out > 0)

    def inside_fraction(self) -> float:
        """r of these validation points: the fraction inside (over all picks, as F1 counts them). The all-inside
        answer scores F1 = 2r / (1 + r) on them."""
        inside = total = 0
        for obj, _, rows in self.picks:
            flags = self.cache.point_arrays(self.object_ids[obj], rows)["inside"]
            inside += int(flags.sum())
            total += int(flags.size)
        return inside / max(1, total)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        """Collated batches of this process's share of the validation samples."""
        mine = self.picks[rank::world_size]
        for i in range(0, len(mine), batch_size):
            yield _collate(self.cache, self.object_ids, mine[i:i + batch_size])


def positive_ratio(cache: ObjectCache, object_ids: Sequence[str]) -> float:
    """r of eq. 12: the fraction of inside points over all stored points of the training objects.

    Reads the inside flags shard by shard from the store, past the cache: one pass over every training object
    would otherwise fill the cache with whatever came last."""
    store = cache.store
    rows_of: dict[str, list[int]] = {}
    for oid in object_ids:
        shard, row = store.location(oid)
        rows_of.setdefault(shard, []).append(row)
    inside = total = 0
    for shard, rows in rows_of.items():
        flags = store.read_shard(shard, ["inside"])["inside"][rows]
        inside += int(flags.sum())
        total += int(flags.size)
    if total == 0:
        raise ValueError(f"{cache.store_path}: no training points")
    return inside / total


def training_object_ids(store: Store, data: DataConfig) -> list[str]:
    """Ids of the objects a run trains on: those of data.objects (of any split, in the store's order; an id the
    store lacks is an error) when given, else every object of the split data.train_split."""
    ids = store.split(data.train_split)
    if data.objects:
        unknown = sorted(set(data.objects) - set(store.object_ids))
        if unknown:
            raise ValueError(f"{store.path}: no objects {unknown[:5]} in this store")
        wanted = set(data.objects)
        ids = [o for o in store.object_ids if o in wanted]
    return ids


def store_identity(store: Store, train_ids: Sequence[str], val_ids: Sequence[str]) -> dict:
    """What a run trains on, so that a resume can tell the same data from other data wherever the store lies.

    path: the store's resolved path (informative only); dataset: its dataset name; n_train, n_val: objects
    used; digest: 16 hex digits of SHA-256 over the dataset name, the preprocess params and the (object id,
    content hash) of every training and validation object (the content hash names the source file's bytes,
    the params and the preprocess code version). A copied or moved store keeps its digest; a store preprocessed
    from other meshes, with other params or other objects does not.
    """

    def pairs(ids: Sequence[str]) -> list[list[str]]:
        return [[oid, store.info(oid).get("content_hash", "")] for oid in ids]

    dataset = str(store.attrs.get("dataset", ""))
    blob = json.dumps({"dataset": dataset, "params": store.params, "train": pairs(train_ids),
                       "val": pairs(val_ids)}, sort_keys=True, default=str)
    return {"path": str(Path(store.path).resolve()), "dataset": dataset, "n_train": len(train_ids),
            "n_val": len(val_ids), "digest": hashlib.sha256(blob.encode()).hexdigest()[:16]}
