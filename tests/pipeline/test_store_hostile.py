"""Hostile and careless edits of a store's metadata, another dataset's run into a store, a full disk
(docs/RELIABILITY.md): real stores of real parts, edited the way people and scripts edit them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.atomic import DiskFullError
from pipeline import schema
from pipeline.runner import run_preprocess
from pipeline.stages.validate import validate_store
from tests.pipeline.small_stores import TEST_ID, copy_store, part_folder, preprocessed, small_manifest
from tests.store_edits import rename_object

APS = Path(sys.executable).with_name("aps")


@pytest.fixture(scope="module")
def parts(module_tmp, robosuite_meshes) -> Path:
    """3 real parts: 2 in one train shard, 1 test object with reference data."""
    return part_folder(module_tmp("hostile_parts"), robosuite_meshes,
                       {"arm_link": slice(2), "gripper_part": slice(1, 2)})


@pytest.fixture(scope="module")
def pristine(module_tmp, parts) -> Path:
    return preprocessed(parts, module_tmp("hostile_pristine") / "store", 3)


@pytest.fixture
def store(tmp_path, pristine) -> Path:
    return copy_store(pristine, tmp_path)


def _train_shard(store: Path) -> tuple[str, list[str]]:
    s = schema.open_store(store)
    shard = s.location(s.split("train")[0])[0]
    return shard, s.shards()[shard]


# ---- S2: ids read from a store name objects, never paths ---------------------------------------------------

def test_an_object_id_that_is_a_path_is_refused_on_open_naming_the_store_and_id(store):
    """Was: open_store accepted '../../../../tmp/x' and `aps eval` wrote /tmp/x.ply (tests/evaluation has the
    attack end to end)."""
    rename_object(store, TEST_ID, "../../../../tmp/x", reseal=True)
    with pytest.raises(schema.StoreError) as err:
        schema.open_store(store)
    line = str(err.value)
    assert str(store / "index.json") in line and "'../../../../tmp/x' is not an object id" in line
    assert "\n" not in line
    assert validate_store(store) == [line]


def test_an_index_pointing_outside_shards_and_a_category_with_a_newline_are_refused(store, tmp_path):
    index = json.loads((store / "index.json").read_text())
    shard, row = index["objects"][TEST_ID]
    outside = tmp_path / "elsewhere"
    shutil.copytree(store / "shards" / shard, outside)
    index["objects"][TEST_ID] = [f"../../{outside.name}", row]
    index.pop("crc32c", None)
    (store / "index.json").write_text(json.dumps(index))  # without checksums: read as a store of older code
    with pytest.raises(schema.StoreError, match=r"is not \[shard name, row\]"):
        schema.open_store(store)

    index["objects"][TEST_ID] = [shard, row]
    (store / "index.json").write_text(json.dumps(index))
    meta = store / "shards" / shard / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["objects"][row]["category"] = "arm_link\n| injected | row |"
    meta.write_text(json.dumps(doc))
    with pytest.raises(schema.DamagedObjectError, match=f"{TEST_ID}.*category .* is not one line of text"):
        schema.open_store(store)


def test_paths_built_from_ids_stay_in_their_folder(tmp_path):
    assert schema.object_file(tmp_path / "meshes", "arm_link-iiwa_link_6", ".ply") == (
        tmp_path / "meshes" / "arm_link-iiwa_link_6.ply")
    assert schema.object_file(tmp_path, "零件-轴承", ".json").name == "零件-轴承.json"
    for bad in ("../../../../tmp/x", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "a\0b"):
        with pytest.raises(ValueError, match="is not an object id"):
            schema.object_file(tmp_path / "meshes", bad, ".ply")


# ---- D4: the metadata that decides what a read returns is verified ------------------------------------------

def test_an_edited_array_shape_is_damage_not_fill_values_and_a_rerun_redoes_it(store, parts):
    """Was: 10000 -> 10001 in points/zarr.json and Store.read returned 10001 points, the last a fill value."""
    shard, oids = _train_shard(store)
    meta = store / "shards" / shard / "points" / "zarr.json"
    text = meta.read_text()
    assert text.index("10000") < text.index("chunk_grid")  # the first 10000 is the shape's
    meta.write_text(text.replace("10000", "10001", 1))  # one byte, size unchanged
    with pytest.raises(schema.DamagedObjectError, match=f"object '{oids[0]}': array 'points': {meta} differs"):
        schema.open_store(store).read(oids[0], "points")
    with pytest.raises(schema.DamagedObjectError, match="points/zarr.json differs"):
        schema.open_store(store).read_shard(shard, ["points"])
    assert sorted(p.split(":")[0] for p in validate_store(store)) == sorted(oids)
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert again.done == len(oids) and sorted(again.repaired) == sorted(oids) and validate_store(store) == []
    assert schema.open_store(store).read(oids[0], "points").shape == (10000, 3)


def test_an_edited_reference_array_shape_fails_the_read_not_the_metric(store):
    """Was: the same edit in ref_surface_points gave a numpy broadcasting error in eval."""
    s = schema.open_store(store)
    shard, _ = s.location(TEST_ID)
    meta = store / "shards" / shard / "ref_surface_points" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"][1] += 1
    meta.write_text(json.dumps(doc, indent=2))
    with pytest.raises(schema.DamagedObjectError, match=f"{TEST_ID}.*ref_surface_points.*differs"):
        schema.open_store(store).load(TEST_ID, ["ref_surface_points"])


def test_an_edited_shard_or_index_is_damage_and_a_rerun_repairs_it(store, parts):
    """Was: a category or row edited by hand was read as the truth (a swapped row returns another object's
    arrays)."""
    shard, oids = _train_shard(store)
    before = schema.open_store(store).load(oids[0], ["points"])["points"]
    meta = store / "shards" / shard / "zarr.json"
    good = meta.read_bytes()
    meta.write_bytes(good.replace(b'"category": "arm_link"', b'"category": "arm_lonk"', 1))
    with pytest.raises(schema.DamagedObjectError, match=f"{meta}: checksum differs from the one recorded in "
                                                        f"index.json .*shard of '{oids[0]}'"):
        schema.open_store(store)
    assert len(validate_store(store)) == 1
    meta.write_bytes(good)

    index_file = store / "index.json"
    good_index = index_file.read_text()
    index = json.loads(good_index)
    index["objects"][oids[0]][1], index["objects"][oids[1]][1] = (index["objects"][oids[1]][1],
                                                                  index["objects"][oids[0]][1])
    index_file.write_text(json.dumps(index, indent=0))
    with pytest.raises(schema.StoreError, match=r"index\.json: damaged \(checksum differs"):
        schema.open_store(store)

    index_file.write_text(good_index)
    meta.write_bytes(good.replace(b'"category": "arm_link"', b'"category": "arm_lonk"', 1))
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert sorted(again.repaired) == sorted(oids) and validate_store(store) == []
    after = schema.open_store(store)
    assert after.info(oids[0])["category"] == "arm_link"
    assert np.array_equal(after.load(oids[0], ["points"])["points"], before)


def test_a_store_without_metadata_checksums_still_reads_and_a_rerun_adds_them(store, parts):
    """Stores of before this change: index.json has no "metadata" or "crc32c". They open (the arrays' zarr.json
    are checked against the shards' records all the same) and the next preprocess adds the records."""
    index = json.loads((store / "index.json").read_text())
    (store / "index.json").write_text(json.dumps({"status": index["status"], "objects": index["objects"]}))
    s = schema.open_store(store)
    assert len(s) == 3 and s.load(TEST_ID)["points"].shape == (10000, 3)
    shard, oids = _train_shard(store)
    meta = store / "shards" / shard / "udf" / "zarr.json"
    meta.write_text(meta.read_text().replace("10000", "10001", 1))
    with pytest.raises(schema.DamagedObjectError, match="udf/zarr.json differs"):
        schema.open_store(store).read(oids[0], "udf")
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert sorted(again.repaired) == sorted(oids) and again.skipped == 1
    upgraded = json.loads((store / "index.json").read_text())
    assert set(upgraded["metadata"]) == {"zarr.json", "shards/zarr.json", *(f"shards/{s}/zarr.json" for s in
                                                        {v[0] for v in upgraded["objects"].values()})}
    assert validate_store(store) == []


def test_a_metadata_only_rewrite_keeps_the_store_verified(store):
    """What a later change needs (CF attributes, dimension names on arrays): the checksums follow the rewrite."""
    s = schema.open_store(store)
    shard, _ = s.location(TEST_ID)
    before = s.read(TEST_ID, "udf")
    schema.rewrite_array_metadata(store, shard, "udf", attributes={"scale_factor": schema.UDF_STEP},
                                  dimension_names=["object", "point"])
    doc = json.loads((store / "shards" / shard / "udf" / "zarr.json").read_text())
    assert doc["attributes"]["scale_factor"] == schema.UDF_STEP and doc["dimension_names"] == ["object", "point"]
    after = schema.open_store(store)
    assert np.array_equal(after.read(TEST_ID, "udf"), before) and validate_store(store) == []
    # damage is not blessed: an edited document is refused, not re-recorded
    meta = store / "shards" / shard / "K" / "zarr.json"
    meta.write_text(meta.read_text().replace('"shape": [\n    1,', '"shape": [\n    2,', 1))
    with pytest.raises(schema.DamagedObjectError, match="K/zarr.json: checksum differs"):
        schema.rewrite_array_metadata(store, shard, "K", attributes={"units": "pixels"})


# ---- S7: another dataset into an existing store -----------------------------------------------------------

def test_another_dataset_into_a_store_is_refused_unless_replace_dataset(store, parts, tmp_path):
    """Was: `aps preprocess --manifest other.toml --out STORE` exited 0 having deleted every old shard."""
    other = tmp_path / "other_parts"
    shutil.copytree(parts / "gripper_part", other / "gripper_part")
    before = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file()
                    and p.name != schema.LOCK_FILE)
    with pytest.raises(schema.StoreError) as err:
        run_preprocess(small_manifest(other, test=()), store, scheduler="serial")
    assert str(err.value) == (f"{store}: holds dataset 'hostile_parts0' (3 objects), not 'other_parts'; "
                              "preprocessing 'other_parts' into it would delete them: give --out another folder, "
                              "or pass --replace-dataset to replace that dataset")
    args = [str(APS), "preprocess", "--meshes", str(other), "--out", str(store), "--scheduler", "serial",
            "--views", "2"]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1] == f"aps: error: {err.value}"
    assert sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file()
                  and p.name != schema.LOCK_FILE) == before, "a refused run touched the store"
    replaced = subprocess.run([*args, "--replace-dataset"], capture_output=True, text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    s = schema.open_store(store)
    assert s.attrs["dataset"] == "other_parts" and s.object_ids == ["gripper_part-panda_gripper_hand"]


# ---- D2: a full disk -----------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs), so a write fails with ENOSPC as on a full disk; needs root (CI runs as
    root in its container). RLIMIT_FSIZE is no substitute: it raises EFBIG, another error."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root or CAP_SYS_ADMIN needed): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    """Fill the filesystem until `leave` bytes are free; returns the filler file."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_names_the_file_keeps_what_was_written_and_a_rerun_finishes(small_disk, parts):
    """Was: `[Errno 28] No space left on device`, with no file named, and the partial shard left taking space."""
    store = small_disk / "store"
    # 3 parts split 1/1/1 since small folders get a test object: its evaluation reference (100,000 points with
    # normals, 2.7 MB by default) would not fit the 2 MB disk even when it is empty
    args = [str(APS), "preprocess", "--meshes", str(parts), "--out", str(store), "--scheduler", "serial",
            "--views", "2", "--shard-size", "1", "--set", "n_reference=2000"]
    filler = _fill(small_disk, 200_000)  # room for the first shard (~140 kB) and the run's small files
    full = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "No space left on device" not in full.stderr and "Traceback" not in full.stderr, full.stderr
    failed = [line for line in full.stderr.splitlines() if line.startswith("  failed: ")]
    file_in_shard = re.compile(rf"DiskFullError: {re.escape(str(store))}/shards/[^/]+/(zarr\.json|\w+/zarr\.json"
                               r"|\w+/c(/0)+): disk full while writing it \([\d.]+ MB free there\); the 1 object\(s\) "
                               r"of shard \S+ are not written, every shard written before is kept: make space and "
                               r"rerun `aps preprocess` to finish$")
    assert failed and all(file_in_shard.search(line) for line in failed), full.stderr
    kept = schema.shard_objects(store)
    assert kept and not [p for p in (store / "shards").iterdir() if p.name.startswith(".tmp-")]
    written = {o["object_id"] for metas in kept.values() for o in metas}

    filler.unlink()  # space made
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(written)} skipped" in again.stdout, again.stdout
    assert len(schema.open_store(store)) == 3 and validate_store(store) == []
    assert os.listdir(store / "shards")


def test_run_records_on_a_full_disk_are_taken_back_and_the_file_named(small_disk):
    """Was: runs.jsonl appended with a buffered write: `[Errno 28] No space left on device`, no file named, and
    a half line left for the next run's first record to be glued to."""
    store = small_disk / "store"
    store.mkdir()
    schema.append_run_records(store, [{"object_id": "a", "status": "ok"}])
    before = (store / schema.RUNS_FILE).read_bytes()
    filler = _fill(small_disk, 0)
    with pytest.raises(DiskFullError) as err:
        schema.append_run_records(store, [{"object_id": f"b{i}", "error": "x" * 1000} for i in range(50)])
    assert str(err.value).startswith(f"{store / schema.RUNS_FILE}: disk full while appending this run's records")
    assert (store / schema.RUNS_FILE).read_bytes() == before
    filler.unlink()
    schema.append_run_records(store, [{"object_id": "c", "status": "ok"}])
    assert [json.loads(line)["object_id"] for line in (store / schema.RUNS_FILE).read_text().splitlines()] == ["a", "c"]
