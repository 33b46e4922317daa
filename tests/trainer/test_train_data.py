"""Batches, prepare_view and the sampling rules, on the analytic store (tests/trainer/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.schema import N_POINTS, open_store
from trainer.config import DataConfig
from trainer.data import (
    EpochBatches,
    ObjectCache,
    SampleKey,
    TrainingSamples,
    ValidationSet,
    positive_ratio,
    split_rows,
    training_object_ids,
)
from trainer.models.network import project
from trainer.views import prepare_view


def test_prepare_view_composites_rgba_on_white():
    image = np.zeros((8, 8, 4), np.uint8)
    image[2:4, 2:4] = (255, 0, 0, 255)  # opaque red
    image[5, 5] = (0, 0, 0, 128)  # half-transparent black
    x, K = prepare_view(image, np.eye(3, dtype=np.float32), 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.ones(3))  # transparent -> white
    assert torch.allclose(x[:, 2, 2], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(x[:, 5, 5], torch.full((3,), 1 - 128 / 255), atol=1e-6)
    assert torch.equal(K, torch.eye(3))  # no resize, K unchanged


def test_prepare_view_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        prepare_view(np.zeros((8, 8, 4), np.float32), np.eye(3), 8)
    with pytest.raises(ValueError, match="uint8"):
        prepare_view(np.zeros((8, 8), np.uint8), np.eye(3), 8)


@pytest.mark.parametrize("size", [32, 64, 100, 128, 256])
def test_scaled_K_centres_the_sphere_on_its_silhouette(analytic_store, size):
    """The centre of an analytic sphere, projected with the scaled K, must sit on the centroid of its silhouette in
    the resized image: within 0.5 px at any size (the perspective silhouette's own offset is < 0.1 px at 64 px
    and grows with the size). The unscaled K, or a half-pixel slip in the scaling, misses by more."""
    from tests.trainer.conftest import SHAPES

    store = open_store(analytic_store)
    for oid in ("sphere_a", "sphere_b"):
        o = store.load(oid, ["images", "K", "Rt"])
        img, K = prepare_view(o["images"], o["K"], size)
        mask = (img < 0.999).any(1).float()  # (V, S, S) covered pixels
        v, u = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centroid = torch.stack([(mask * u).sum((1, 2)), (mask * v).sum((1, 2))], -1) / mask.sum((1, 2))[:, None]
        centre = torch.tensor(SHAPES[oid][2].c, dtype=torch.float32).expand(len(K), 1, 3)
        uv = project(centre, K, torch.from_numpy(o["Rt"]), "perspective")[:, 0]
        assert (uv - centroid).abs().max() < 0.5, f"{oid} at {size} px: centre off by {(uv - centroid).tolist()}"
        if size >= 128:
            wrong = project(centre, torch.from_numpy(o["K"]), torch.from_numpy(o["Rt"]), "perspective")[:, 0]
            assert (wrong - centroid).abs().max() > 2.0


def test_prepare_view_batch_equals_single(analytic_store):
    o = open_store(analytic_store).load("sphere_a", ["images", "K"])
    batch, Kb = prepare_view(o["images"], o["K"], 48)
    for v in range(len(o["K"])):
        single, Ks = prepare_view(o["images"][v], o["K"][v], 48)
        assert torch.allclose(batch[v], single) and torch.allclose(Kb[v], Ks)


def test_cache_matches_the_store(analytic_store):
    store = open_store(analytic_store)
    cache = ObjectCache(analytic_store)
    for oid in store.object_ids:
        ref = store.load(oid, ["points", "udf", "inside", "images", "K", "Rt"])
        got = cache.point_arrays(oid)
        for name in ("points", "udf", "inside"):
            np.testing.assert_array_equal(got[name], ref[name])
        imgs, K, Rt = cache.views(oid)
        np.testing.assert_array_equal(imgs, ref["images"])
        np.testing.assert_array_equal(Rt, ref["Rt"])


def test_epoch_batches_cover_objects_and_split_between_ranks():
    sampler = EpochBatches(n_objects=5, batch_size=3, repeats=4, seed=1)
    sampler.set_epoch(0)
    batches = list(sampler)
    drawn = [k.object_index for b in batches for k in b]
    assert sorted(drawn) == sorted(list(range(5)) * 4)  # 20 = 6 full batches + one of 2
    assert all(2 <= len(b) <= 3 for b in batches)
    assert list(sampler) == batches  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ranks = [EpochBatches(5, 3, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(0)
    parts = [list(r) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 3  # 7 batches -> 3 each, every process the same number of steps
    keys = [k.position for p in parts for b in p for k in b]
    assert len(keys) == len(set(keys))


def test_samples_are_a_pure_function_of_the_key_and_skip_held_out_points(analytic_store):
    ids = ["sphere_a", "box_a"]
    data = TrainingSamples(analytic_store, ids, points_per_sample=512, seed=3, held_out=2000)
    key = SampleKey(epoch=2, position=5, object_index=1)
    a, b = data.draw(key), data.draw(key)
    assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
    other = data.draw(SampleKey(epoch=3, position=5, object_index=1))
    assert not np.array_equal(a[2], other[2])
    train_rows, held = split_rows(N_POINTS, 2000, 3, 1)
    assert len(np.intersect1d(train_rows, held)) == 0 and len(train_rows) + len(held) == N_POINTS
    drawn = np.concatenate([data.draw(SampleKey(0, p, 1))[2] for p in range(40)])
    assert len(np.intersect1d(drawn, held)) == 0, "a held-out point was trained on"
    val = ValidationSet(data.cache, ids, n_points=2000, n_views=1, seed=3)
    np.testing.assert_array_equal(val.picks[1][2], held)
    # on the uniform points: the held-out ones among them when trained on, else all of them
    val = ValidationSet(data.cache, ids, n_points=2000, n_views=1, seed=3, on="uniform", held_out=True)
    np.testing.assert_array_equal(val.picks[1][2], held[held >= N_POINTS - 128])
    val = ValidationSet(data.cache, ids, n_points=2000, n_views=1, seed=3, on="uniform")
    np.testing.assert_array_equal(val.picks[1][2], np.arange(N_POINTS - 128, N_POINTS))
    inside = data.cache.point_arrays("box_a")["inside"]
    assert inside[: N_POINTS - 128].mean() > 2 * inside[N_POINTS - 128:].mean()  # why the choice matters
    # built from the data section as a run builds it, with its check: the same picks, and val_on refused by name
    val = ValidationSet.from_config(DataConfig(val_points=9999, val_views=1, val_on="uniform"), data.cache, ids, 3,
                                    held_out=2000)
    np.testing.assert_array_equal(val.picks[1][2], held[held >= N_POINTS - 128])
    with pytest.raises(ValueError, match="data.val_on must be one of"):
        ValidationSet.from_config(DataConfig(val_on="balanced"), data.cache, ids, 3)


def test_batch_contents(analytic_store):
    data = TrainingSamples(analytic_store, ["sphere_a", "box_a"], points_per_sample=300, views=(1, 2), seed=0)
    batch = data[[SampleKey(0, i, i % 2) for i in range(4)]]
    assert batch["images"].shape == (4, 64, 64, 4) and batch["images"].dtype == torch.uint8
    assert batch["points"].shape == (4, 300, 3) and batch["udf"].shape == (4, 300)
    assert batch["inside"].dtype == torch.bool and batch["K"].shape == (4, 3, 3) and batch["Rt"].shape == (4, 3, 4)
    cache = data.cache
    for i in range(4):
        oid = ["sphere_a", "box_a"][i % 2]
        views = cache.views(oid)
        matches = [v for v in (1, 2) if np.array_equal(views[2][v], batch["Rt"][i].numpy())]
        assert matches, "a view outside data.views was drawn"
        assert np.array_equal(views[0][matches[0]], batch["images"][i].numpy())
    # the udf and inside flags travel with their points: for the sphere, |p| - r gives both
    sphere = batch["points"][0].numpy()
    sdf = np.linalg.norm(sphere, axis=1) - 0.35
    np.testing.assert_allclose(batch["udf"][0].numpy(), np.abs(sdf), atol=1e-5)
    assert np.array_equal(batch["inside"][0].numpy(), sdf < 0)


def test_positive_ratio(analytic_store):
    cache = ObjectCache(analytic_store)
    expected = np.mean([cache.point_arrays(o)["inside"].mean() for o in ("sphere_a", "box_a")])
    assert positive_ratio(cache, ["sphere_a", "box_a"]) == pytest.approx(expected)


def test_training_object_ids_of_the_split_or_the_named_objects_of_any_split(analytic_store):
    store = open_store(analytic_store)
    assert training_object_ids(store, DataConfig(train_split="train")) == store.split("train")
    named = DataConfig(train_split="train", objects=("box_b", "sphere_b", "box_a"))  # test, val and train objects
    assert sorted(store.split("train")) == ["box_a", "sphere_a"]
    assert training_object_ids(store, named) == [o for o in store.object_ids if o in named.objects]
    with pytest.raises(ValueError, match="no objects"):
        training_object_ids(store, DataConfig(objects=("nope",)))
