"""The store read with the tools people already have (zarr, xarray, dask), nothing of ours, and compared with
open_store, the verified reader; and an older store upgraded in place by a rerun (metadata only)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline import schema
from pipeline.runner import run_preprocess
from tests.pipeline.small_stores import TEST_ID, part_folder, preprocessed, small_manifest

STEPS = {"points": schema.POINT_STEP, "udf": schema.UDF_STEP}


@pytest.fixture(scope="module")
def parts(module_tmp, robosuite_meshes) -> Path:
    """3 real parts: 2 in one train shard, 1 test object with reference arrays."""
    return part_folder(module_tmp("parts"), robosuite_meshes,
                       {"arm_link": slice(2), "gripper_part": slice(1)})


@pytest.fixture(scope="module")
def store(module_tmp, parts) -> Path:
    return preprocessed(parts, module_tmp("clients") / "store", 3)


def _members(store: Path) -> dict[str, zarr.Group | zarr.Array]:
    with warnings.catch_warnings():  # index.json, runs.jsonl, runs/, writer.lock: our files, not zarr nodes
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        return dict(zarr.open_group(str(store), mode="r").members(max_depth=None))


def _same_decoded(name: str, got: np.ndarray, want: np.ndarray) -> None:
    """xarray's CF decoding of a quantised array is ours up to float rounding (a sixteenth of the quantisation
    step is far above float32 rounding, far below one step); every other array is the same bytes."""
    assert got.shape == want.shape, name
    if name in STEPS:
        assert got.dtype.kind == "f", name
        assert np.abs(got - want).max() <= STEPS[name] / 16, name
    else:
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_zarr_open_group_walks_from_the_root_to_every_shards_arrays(store):
    ours = schema.open_store(store)
    members = _members(store)
    assert isinstance(members["shards"], zarr.Group)
    for shard, ids in ours.shards().items():
        group = members[f"shards/{shard}"]
        assert isinstance(group, zarr.Group)
        for oid in ids:
            assert group.attrs["object_ids"][ours.location(oid)[1]] == oid
        for name in ours.array_names(ids[0]):
            arr = members[f"shards/{shard}/{name}"]
            dims = arr.metadata.dimension_names
            assert len(dims) == arr.ndim and dims[0] == "object", name
            assert arr.shape[0] == len(group.attrs["object_ids"])
    assert members[f"shards/{ours.location(TEST_ID)[0]}/ref_surface_points"].metadata.dimension_names == (
        "object", "ref_surface_point", "xyz")


def test_xarray_decodes_every_shard_to_what_open_store_loads(store):
    ours = schema.open_store(store)
    for shard, ids in ours.shards().items():
        ds = xr.open_zarr(store / schema.SHARDS_DIR / shard, consolidated=False)
        assert ds["points"].dims == ("object", "point", "xyz")
        assert ds["images"].dims == ("object", "view", "row", "col", "channel")
        assert ds["inside"].dtype == bool
        for oid in ids:
            want = ours.load(oid)
            row = ds.attrs["object_ids"].index(oid)
            for name in ours.array_names(oid):
                _same_decoded(name, ds[name].isel(object=row).values, want[name])


def test_xarray_opens_the_whole_store_as_a_tree(store):
    ours = schema.open_store(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    shard, row = ours.location(TEST_ID)
    node = tree[f"shards/{shard}"]
    for name in ("points", "udf", "ref_uniform_points"):
        _same_decoded(name, node[name].isel(object=row).values, ours.read(TEST_ID, name))


def test_dask_reads_a_whole_shards_points_lazily(store):
    ours = schema.open_store(store)
    shard, ids = next((s, i) for s, i in ours.shards().items() if len(i) > 1)
    arr = zarr.open_array(str(store / schema.SHARDS_DIR / shard / "points"), mode="r")
    points = da.from_zarr(arr)
    assert points.chunks[0] == (1,) * len(ids)  # one task per object: nothing is read until compute
    decoded = points.astype(np.float64) * arr.attrs["scale_factor"] + arr.attrs["add_offset"]
    _same_decoded("points", decoded.compute(), ours.read_shard(shard, ["points"])["points"])


def _as_an_older_aps_wrote_it(store: Path) -> None:
    """What a store of before this layout had: no shards/zarr.json, arrays without dimension names or attributes,
    shards without object_ids; checksums recorded for those bytes, as that aps recorded them."""
    (store / schema.SHARDS_META_KEY).unlink()
    for folder in (store / schema.SHARDS_DIR).iterdir():
        meta = folder / "zarr.json"
        doc = json.loads(meta.read_text())
        files = doc["attributes"][schema.FILES_ATTR]
        for rel in [r for r in files if r.endswith("/zarr.json")]:
            array_doc = json.loads((folder / rel).read_text())
            del array_doc["dimension_names"]
            array_doc["attributes"] = {}
            (folder / rel).write_text(json.dumps(array_doc, indent=2))
            files[rel] = list(schema.file_checksum(folder / rel))
        del doc["attributes"]["object_ids"]
        meta.write_text(json.dumps(doc, indent=2))
    index = schema.read_index(store)
    schema.write_index(store, {k: tuple(v) for k, v in index["objects"].items()}, complete=True)


def _older_store(tmp_path: Path, store: Path) -> tuple[Path, dict[str, dict], dict[Path, tuple[int, bytes]]]:
    """A copy of `store` as an older aps wrote it, what open_store loads from it, and its chunk files."""
    old = tmp_path / "store"
    shutil.copytree(store, old)
    _as_an_older_aps_wrote_it(old)
    ours = schema.open_store(old)
    loaded = {oid: ours.load(oid) for oid in ours.object_ids}
    chunks = {p: (p.stat().st_ino, p.read_bytes()) for p in (old / schema.SHARDS_DIR).rglob("*")
              if p.is_file() and "c" in p.relative_to(old / schema.SHARDS_DIR).parts[2:3]}
    assert chunks
    return old, loaded, chunks


def _upgraded_in_place(old: Path, loaded: dict[str, dict], chunks: dict[Path, tuple[int, bytes]]) -> None:
    """Every chunk file is the same file with the same bytes; open_store and xarray read what was read before."""
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in chunks} == chunks
    assert not list(old.rglob(f"*{schema.PENDING_SUFFIX}"))
    ours = schema.open_store(old)
    for oid, before in loaded.items():
        after = ours.load(oid)
        for name in ours.array_names(oid):
            np.testing.assert_array_equal(after[name], before[name])
        shard, row = ours.location(oid)
        ds = xr.open_zarr(old / schema.SHARDS_DIR / shard, consolidated=False)
        assert ds.attrs["object_ids"][row] == oid
        _same_decoded("points", ds["points"].isel(object=row).values, before["points"])


def test_a_rerun_upgrades_an_older_store_in_place_metadata_only(tmp_path, store, parts):
    old, loaded, chunks = _older_store(tmp_path, store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        with pytest.raises(KeyError):
            zarr.open_group(str(old), mode="r")["shards"]  # before: the hierarchy stops at the root
    again = run_preprocess(small_manifest(parts), old, scheduler="serial")
    assert (again.done, again.skipped, again.failed) == (0, 3, [])
    _upgraded_in_place(old, loaded, chunks)
    assert isinstance(_members(old)["shards"], zarr.Group)


@pytest.mark.parametrize("killed", ["before its commit", "after its commit"])
def test_an_upgrade_killed_midway_is_finished_by_the_next_run_without_recomputing(tmp_path, store, parts,
                                                                                  monkeypatch, killed):
    """The upgrade stops where a kill would stop it: at the rename of index.json (its commit) or at the first rename
    of a pending document into place after it. Before the commit the store reads as before; after it, as damaged
    until the next run, which finishes the renames and recomputes nothing."""
    old, loaded, chunks = _older_store(tmp_path, store)
    rename = os.replace

    def killed_at(src, dst):
        if (str(dst).endswith(schema.INDEX_FILE) if killed == "before its commit"
                else Path(src).name == f"zarr.json{schema.PENDING_SUFFIX}"):
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(os, "replace", killed_at)
    with schema.writer_lock(old, "killed-run"), pytest.raises(KeyboardInterrupt):
        schema.upgrade_metadata(old)
    monkeypatch.setattr(os, "replace", rename)
    assert list(old.rglob(f"*{schema.PENDING_SUFFIX}"))
    if killed == "before its commit":
        ours = schema.open_store(old)
        assert all(np.array_equal(ours.read(oid, "udf"), loaded[oid]["udf"]) for oid in loaded)
    else:
        with pytest.raises(schema.DamagedObjectError, match="rerun `aps preprocess`"):
            schema.open_store(old)
    again = run_preprocess(small_manifest(parts), old, scheduler="serial")
    assert (again.done, again.skipped, again.failed) == (0, 3, [])
    _upgraded_in_place(old, loaded, chunks)


def test_the_shards_group_is_in_the_checksum_chain(tmp_path, store, parts):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    meta = copy / schema.SHARDS_META_KEY
    assert schema.SHARDS_META_KEY in schema.read_index(copy)[schema.METADATA_KEY]
    meta.write_text(meta.read_text().replace('"group"', '"array"'))
    with pytest.raises(schema.DamagedObjectError, match="shards/zarr.json"):
        schema.open_store(copy)
    again = run_preprocess(small_manifest(parts), copy, scheduler="serial")
    assert (again.done, again.skipped) == (0, 3)
    assert isinstance(_members(copy)["shards"], zarr.Group)
