"""The preprocess speed levers keep the results: two-pass winding number, welding, outline-bounded rendering,
single-threaded Dask workers without malloc trimming, one image chunk per object (docs/PREPROCESS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cameras import MeshRenderer
from pipeline.stages.distances import WINDING_ACCURACY, weld_equal_points, winding_number
from pipeline.stages.render_views import ViewSampling, sample_cameras
from pipeline.stages.sample_points import jitter, sample_surface
from tests.conftest import load_normalised


@pytest.fixture(scope="module")
def parts(robosuite_meshes):
    return [load_normalised(p) for ps in robosuite_meshes.values() for p in ps]


def test_two_pass_winding_number_decides_as_the_default_accuracy_does(parts):
    import igl

    rng = np.random.default_rng(3)
    for v, f in parts:
        near, _ = sample_surface(v, f, 4000, rng)
        q = np.concatenate([jitter(near, (0.005, 0.02), (0.5, 0.5), rng), rng.uniform(-0.55, 0.55, (6000, 3))])
        bvh = igl.FastWindingNumberBVH()
        bvh.init(v, np.asarray(f, np.int64), 2)
        reference = np.abs(bvh.winding_number(q, WINDING_ACCURACY)) >= 0.5
        assert ((np.abs(winding_number(v, f, q)) >= 0.5) == reference).all()
        # and the default-accuracy values are given wherever a value is near the threshold
        w = winding_number(v, f, q)
        near_threshold = np.abs(np.abs(w) - 0.5) < 0.2
        assert np.allclose(w[near_threshold], bvh.winding_number(q[near_threshold], WINDING_ACCURACY))


def test_weld_equal_points_labels_equal_coordinates_alike():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, size=(500, 3)).astype(np.float64) / 3  # many repeats
    base[::7, 0] = -0.0 * base[::7, 0]  # -0.0 is the coordinate 0.0
    labels = weld_equal_points(base)
    _, expected = np.unique(base + 0.0, axis=0, return_inverse=True)
    same = labels[:, None] == labels[None, :]
    assert (same == (expected.reshape(-1)[:, None] == expected.reshape(-1)[None, :])).all()


def test_rendering_inside_the_outline_draws_what_casting_every_pixel_draws(parts):
    """The renderer casts only the rays through the projected hull's rectangle; the silhouette of every view
    equals the one from casting all pixels (the previous renderer's way)."""
    import open3d as o3d

    rng = np.random.default_rng(5)
    size = 96
    for v, f in parts[:4]:
        used = v[f].reshape(-1, 3)
        K, Rt, _ = sample_cameras(ViewSampling(n_views=6, image_size=size, up_axis="z"),
                                  float(np.linalg.norm(np.ptp(used, axis=0))), rng,
                                  radius=float(np.linalg.norm(used, axis=1).max()))
        renderer = MeshRenderer(v, f)
        images = renderer.render_many(K, Rt, size, size)
        boxes = renderer.pixel_boxes(K, Rt, size, size)
        assert ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) < size * size).all()
        cols, rows = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5, np.arange(size, dtype=np.float32) + 0.5)
        pix = np.stack([cols, rows, np.ones_like(cols)], axis=-1).reshape(-1, 3)
        for k in range(len(K)):
            R, t = Rt[k, :, :3].astype(np.float32), Rt[k, :, 3].astype(np.float32)
            d = (pix @ np.linalg.inv(K[k]).T.astype(np.float32)) @ R
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            rays = np.concatenate([np.broadcast_to(-R.T @ t, d.shape), d], axis=1).astype(np.float32)
            hit = np.isfinite(renderer.scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()).reshape(size, size)
            mismatch = int((hit != (images[k, ..., 3] > 0)).sum())
            assert mismatch <= 1, f"view {k}: {mismatch} pixels differ"  # float32 rounding at a grazing ray
            assert hit.sum() > 20


def test_stored_views_have_equal_channels_and_one_chunk_per_object(demo_store):
    import zarr

    from pipeline import schema

    store = schema.open_store(demo_store)
    oid = store.object_ids[0]
    images = store.load(oid)["images"]
    assert images.dtype == np.uint8 and images.shape[-1] == 4
    seen = images[..., 3] > 0
    assert seen.any()
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    shard, _ = store.location(oid)
    arr = zarr.open_array(str(demo_store / schema.SHARDS_DIR / shard / "images"), mode="r")
    assert arr.chunks == (1, *arr.shape[1:])


def _worker_state():
    import os

    return {name: os.environ.get(name) for name in ("IGL_NUM_THREADS", "OMP_NUM_THREADS", "APS_LIBRARY_THREADS",
                                                    "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}


def test_local_cluster_workers_are_single_threaded_and_do_not_trim_malloc(monkeypatch):
    """Measured: libigl's and open3d's thread per core in each worker, and the nanny's MALLOC_TRIM_THRESHOLD_,
    made two workers on two cores no faster than one. A trim threshold in the parent's environment (here the
    nanny's own value) must not reach the workers either."""
    from dask.distributed import Client

    from common.cluster import WORKER_MALLOC, local_cluster

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with local_cluster(1) as cluster, Client(cluster) as client:
        state = next(iter(client.run(_worker_state).values()))
    assert state == {"IGL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "APS_LIBRARY_THREADS": "1", **WORKER_MALLOC}
    assert int(state["MALLOC_TRIM_THRESHOLD_"]) >= 64 << 20


def test_binary_stl_reader_returns_what_trimesh_returns_and_leaves_ascii_to_it(robosuite_meshes, tmp_path):
    import trimesh

    from pipeline.stages.load import load_mesh, read_binary_stl

    for path in [p for ps in robosuite_meshes.values() for p in ps]:
        ours = read_binary_stl(path)
        assert ours is not None, path
        theirs = trimesh.load(str(path), force="mesh", process=False)
        assert np.array_equal(ours[0], np.asarray(theirs.vertices, np.float64)), path
        assert np.array_equal(ours[1], np.asarray(theirs.faces, np.int64)), path
    mesh = trimesh.load(str(robosuite_meshes["arm_link"][0]), force="mesh", process=False)
    ascii_stl = tmp_path / "part.stl"
    ascii_stl.write_bytes(trimesh.exchange.stl.export_stl_ascii(mesh).encode())
    assert read_binary_stl(ascii_stl) is None
    v, f = load_mesh(ascii_stl)  # through trimesh's ascii parser
    assert len(f) == len(mesh.faces) and np.allclose(v[f], mesh.vertices[mesh.faces], atol=1e-5)
    cut = tmp_path / "cut.stl"  # a binary STL missing its last bytes is not read as a shorter mesh
    cut.write_bytes(robosuite_meshes["arm_link"][0].read_bytes()[:-20])
    assert read_binary_stl(cut) is None


def test_the_last_round_of_shards_is_small_and_every_object_is_planned_once():
    from pipeline.config import PreprocessConfig
    from pipeline.executors import shard_priority
    from pipeline.runner import TAIL_SHARD_DIVISOR, plan_shards
    from pipeline.schema import ObjectMeta

    jobs = [ObjectMeta(f"part-{k:03d}", "part", split, f"/data/part-{k:03d}.stl")
            for k, split in enumerate(["train"] * 100 + ["val"] * 10 + ["test"] * 20)]
    plan = plan_shards(jobs, "run", 16, workers=2)
    planned = [j.object_id for _, shard in plan for j in shard]
    assert sorted(planned) == sorted(j.object_id for j in jobs)  # each exactly once
    assert all(len({j.split for j in shard}) == 1 and len(shard) <= 16 for _, shard in plan)
    train = [shard for name, shard in plan if "-train-" in name]
    assert [len(s) for s in train] == [16] * 4 + [4] * 9  # 68 in full shards, the last 2 x 16 in fours
    assert sum(len(s) for s in train[-8:]) == 32 and TAIL_SHARD_DIVISOR == 4
    config = PreprocessConfig()
    lowest = min(shard_priority(s, config) for _, s in plan)
    assert all(shard_priority(s, config) == lowest for s in train[-8:])  # the small ones run last
    assert [len(s) for name, s in plan_shards(jobs, "run", 16, workers=1) if "-train-" in name] == [16] * 6 + [4]
