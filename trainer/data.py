"""Batches for training and validation, and `prepare_view`, the one image preparation used by training and
inference alike.

A training sample is one object-view: a random stored view of an object (image, K, Rt) and a random subset
of its 10,000 points with their stored `udf` and `inside`. The label v(d, s) is NOT made here: the loop
computes it on the training device at batch time (trainer.labels.label_v).

Reading: every worker keeps the points/udf/inside of whole shards in memory (one read per array per shard)
and the raw RGBA views of the objects it has touched (bounded by a byte budget); images are composited and
resized by the training process, on its device, through prepare_view.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.schema import N_UNIFORM, Store, open_store

log = logging.getLogger(__name__)


def prepare_view(image, K, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's view of a stored image: RGBA composited on white, resized to size x size, K scaled to match.

    image: uint8 (H, W, 3|4) or (B, H, W, 3|4), numpy or torch (any device; the work happens there).
    K: (3, 3) or (B, 3, 3) intrinsics in pixels of the stored image (u = column, v = row, pixel centres at
    integers). Returns (float32 (3, size, size) or (B, 3, size, size) RGB in [0, 1], float32 K of the
    resized image with the same leading shape as K). Pixel centres map as u' = (u + 0.5) * size / W - 0.5.
    """
    img = torch.as_tensor(image)
    K = torch.as_tensor(K, dtype=torch.float32, device=img.device)
    single = img.ndim == 3
    if single:
        img = img[None]
    if img.ndim != 4 or img.shape[-1] not in (3, 4) or img.dtype != torch.uint8:
        raise ValueError(f"prepare_view: expected uint8 (H, W, 3|4) or (B, H, W, 3|4), got "
                         f"{tuple(img.shape)} {img.dtype}")
    x = img.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B, C, H, W)
    if x.shape[1] == 4:  # transparent background -> white, as the renderings are shown to people
        alpha = x[:, 3:4]
        x = x[:, :3] * alpha + (1.0 - alpha)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    sx, sy = size / w, size / h
    scale = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]],
                         dtype=torch.float32, device=K.device)
    K_scaled = scale @ K
    return (x[0] if single else x), K_scaled


class ObjectCache:
    """In-memory arrays of a store's objects, read a whole shard at a time (points/udf/inside) and one object
    at a time (views), so that drawing a sample costs no decompression after the first touch."""

    POINT_ARRAYS = ("points", "udf", "inside")

    def __init__(self, store_path: str | Path, image_cache_mb: float = 2048.0):
        self.store_path = Path(store_path)
        self.image_cache_bytes = int(image_cache_mb * 2**20)
        self._store: Store | None = None
        self._points: dict[str, dict[str, np.ndarray]] = {}
        self._views: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._view_bytes = 0

    def __getstate__(self):  # workers reopen the store themselves (zarr handles do not travel well)
        state = dict(self.__dict__)
        state.update(_store=None, _points={}, _views=OrderedDict(), _view_bytes=0)
        return state

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_path)
        return self._store

    def point_arrays(self, object_id: str) -> dict[str, np.ndarray]:
        """points float32 (10000, 3) normalised frame, udf float32 (10000,), inside bool (10000,)."""
        if object_id not in self._points:
            self._load_shard(self.store.location(object_id)[0])
        return self._points[object_id]

    def _load_shard(self, shard: str) -> None:
        try:
            data = self.store.read_shard(shard, self.POINT_ARRAYS)
        except KeyError as exc:
            raise KeyError(f"{self.store.path}: shard {shard} lacks a training array ({exc})") from None
        for oid in self.store.shards()[shard]:
            row = self.store.location(oid)[1]
            self._points[oid] = {"points": np.asarray(data["points"][row], np.float32),
                                 "udf": np.asarray(data["udf"][row], np.float32),
                                 "inside": np.asarray(data["inside"][row], bool)}

    def views(self, object_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored views of an object: images uint8 (V, H, W, 4), K float32 (V, 3, 3), Rt float32 (V, 3, 4)."""
        if object_id in self._views:
            self._views.move_to_end(object_id)
            return self._views[object_id]
        arrays = self.store.load(object_id, ["images", "K", "Rt"])
        entry = (arrays["images"], np.asarray(arrays["K"], np.float32), np.asarray(arrays["Rt"], np.float32))
        self._views[object_id] = entry
        self._view_bytes += entry[0].nbytes
        while self._view_bytes > self.image_cache_bytes and len(self._views) > 1:
            _, old = self._views.popitem(last=False)
            self._view_bytes -= old[0].nbytes
        return entry

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
        arrays = cache.point_arrays(oid)
        images.append(imgs[view])
        Ks.append(K[view])
        Rts.append(Rt[view])
        points.append(arrays["points"][rows])
        udf.append(arrays["udf"][rows])
        inside.append(arrays["inside"][rows])
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
    """

    def __init__(self, store_path: str | Path, object_ids: Sequence[str], points_per_sample: int,
                 views: Sequence[int] = (), seed: int = 0, held_out: int = 0, image_cache_mb: float = 2048.0):
        self.cache = ObjectCache(store_path, image_cache_mb)
        self.object_ids = list(object_ids)
        self.points_per_sample = points_per_sample
        self.views = tuple(views)
        self.seed = seed
        self.held_out = held_out
        self._rows: dict[int, np.ndarray] = {}

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
        if key.object_index not in self._rows:
            n_points = self.cache.point_arrays(oid)["udf"].shape[0]
            self._rows[key.object_index] = split_rows(n_points, self.held_out, self.seed, key.object_index)[0]
        usable = self._rows[key.object_index]
        rows = usable[rng.choice(len(usable), size=min(self.points_per_sample, len(usable)), replace=False)]
        return key.object_index, view, np.sort(rows)

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
        split, the held-out ones among them when the objects are also trained on (held_out)."""
        if on not in ("stored", "uniform"):
            raise ValueError(f"data.val_on = {on!r}: choose stored or uniform")
        self.cache = cache
        self.object_ids = list(object_ids)
        self.picks: list[tuple[int, int, np.ndarray]] = []
        n_uniform = int(cache.store.params.get("n_uniform", N_UNIFORM))
        for obj, oid in enumerate(self.object_ids):
            allowed = tuple(views) or tuple(range(cache.n_views(oid)))
            chosen = sorted({allowed[int(i)] for i in np.linspace(0, len(allowed) - 1, max(1, n_views))})
            n_all = cache.point_arrays(oid)["udf"].shape[0]
            rows = split_rows(n_all, min(n_points, n_all), seed, obj)[1]
            if on == "uniform":
                first_uniform = n_all - n_uniform
                rows = rows[rows >= first_uniform] if held_out else np.arange(first_uniform, n_all)
                if len(rows) == 0:
                    raise ValueError(f"{oid}: no uniform points to validate on (data.val_on = uniform)")
            self.picks += [(obj, v, rows) for v in chosen]

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        """Collated batches of this process's share of the validation samples."""
        mine = self.picks[rank::world_size]
        for i in range(0, len(mine), batch_size):
            yield _collate(self.cache, self.object_ids, mine[i:i + batch_size])


def positive_ratio(cache: ObjectCache, object_ids: Sequence[str]) -> float:
    """r of eq. 12: the fraction of inside points over all stored points of the training objects."""
    inside = sum(int(cache.point_arrays(o)["inside"].sum()) for o in object_ids)
    total = sum(int(cache.point_arrays(o)["inside"].size) for o in object_ids)
    if total == 0:
        raise ValueError(f"{cache.store_path}: no training points")
    return inside / total


def select_objects(store: Store, split: str, objects: Sequence[str] = ()) -> list[str]:
    """Object ids of a split, optionally restricted to `objects` (unknown ids are an error)."""
    ids = store.split(split)
    if objects:
        unknown = sorted(set(objects) - set(store.object_ids))
        if unknown:
            raise ValueError(f"{store.path}: no objects {unknown[:5]} in this store")
        wanted = set(objects)
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
    import hashlib
    import json

    def pairs(ids: Sequence[str]) -> list[list[str]]:
        return [[oid, store.info(oid).get("content_hash", "")] for oid in ids]

    dataset = str(store.attrs.get("dataset", ""))
    blob = json.dumps({"dataset": dataset, "params": store.params, "train": pairs(train_ids),
                       "val": pairs(val_ids)}, sort_keys=True, default=str)
    return {"path": str(Path(store.path).resolve()), "dataset": dataset, "n_train": len(train_ids),
            "n_val": len(val_ids), "digest": hashlib.sha256(blob.encode()).hexdigest()[:16]}
