"""The zarr layout round trip through the public reader (README, "Each stage on its own"; pipeline/schema/)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import schema


def test_quantisation_keeps_points_and_distances_within_tolerance():
    rng = np.random.default_rng(0)
    p = rng.uniform(-0.6, 0.6, (100000, 3))
    assert np.abs(schema.dequantize_points(schema.quantize_points(p)) - p).max() <= schema.POINT_STEP / 2 + 1e-7
    d = rng.uniform(0, 1.0, 100000)
    assert np.abs(schema.dequantize_udf(schema.quantize_udf(d)) - d).max() < 1e-5
    with pytest.raises(ValueError, match="unsigned distances"):
        schema.quantize_udf(np.array([-0.1]))


def test_store_contract(demo_store):
    """open_store -> object_ids, load(object_id) with the documented keys, dtypes, shapes and frame."""
    store = schema.open_store(demo_store)
    assert len(store.object_ids) == 6 and all(isinstance(o, str) for o in store.object_ids)
    assert set(store.categories) == {"arm_link", "gripper_part"}
    assert len(store.split("train")) == 4 and len(store.split("val")) == 1 and len(store.split("test")) == 1
    oid = store.split("test")[0]
    d = store.load(oid)
    assert d["points"].dtype == np.float32 and d["points"].shape == (10000, 3)
    assert d["udf"].dtype == np.float32 and d["udf"].shape == (10000,) and (d["udf"] >= 0).all()
    assert d["inside"].dtype == bool and d["inside"].shape == (10000,)
    assert d["images"].dtype == np.uint8 and d["images"].shape == (6, 137, 137, 4)
    assert d["K"].shape == (6, 3, 3) and d["Rt"].shape == (6, 3, 4) and d["K"].dtype == np.float32
    assert isinstance(d["category"], str) and d["source"].endswith(".stl")
    assert d["scale"].shape == () and d["center"].shape == (3,)
    # original = points * scale + center lands on the source mesh
    from pipeline.stages.distances import udf
    from pipeline.stages.load import load_mesh

    v, f = load_mesh(d["source"])
    original = d["points"][:200].astype(np.float64) * d["scale"] + d["center"]
    assert np.allclose(udf(v, f, original) / d["scale"], d["udf"][:200], atol=1e-4)
    assert d["ref_uniform_points"].shape == (20000, 3) and d["ref_uniform_inside"].dtype == bool
    assert "ref_uniform_points" not in store.load(store.split("train")[0])


def test_one_object_reads_without_the_others(demo_store):
    store = schema.open_store(demo_store)
    a, b = store.split("train")[:2]
    assert store.location(a)[0] == store.location(b)[0], "the fixture's train objects share one shard"
    view = store.read(a, "images", 2)
    assert view.shape == (137, 137, 4) and (view[..., 3] > 0).any()
    assert not np.array_equal(store.read(a, "points"), store.read(b, "points"))
    shard = store.location(a)[0]
    bulk = store.read_shard(shard, ["udf"])["udf"]
    assert np.array_equal(bulk[store.location(b)[1]], store.read(b, "udf"))


def test_interrupted_store_is_refused(demo_store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_store, copy)
    store = schema.open_store(copy)
    # the index a killed run leaves (an edited one is refused as damaged: tests/pipeline/test_store_hostile.py)
    where = {o: store.location(o) for o in store.object_ids}
    schema.write_index(copy, where, complete=False)
    with pytest.raises(schema.StoreError, match="interrupted"):
        schema.open_store(copy)
    schema.write_index(copy, where, complete=True)  # only the status was refused: the objects are all there
    assert len(schema.open_store(copy)) == 6
    with pytest.raises(schema.StoreError, match="not a preprocessed store"):
        schema.open_store(tmp_path / "nowhere")


def test_runs_jsonl_records_every_object(demo_store):
    lines = [json.loads(x) for x in (demo_store / schema.RUNS_FILE).read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        for key in ("run_id", "object_id", "source", "status", "error", "content_hash", "params_digest",
                    "code_version"):
            assert key in line
        assert line["status"] == "ok" and line["error"] is None
