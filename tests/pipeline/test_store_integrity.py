"""The store under damage, concurrent writers and foreign files (docs/RELIABILITY.md): real stores of real parts,
damaged the way disks, copies and users damage them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema
from pipeline.runner import run_preprocess
from pipeline.stages.validate import validate_store
from tests.pipeline.small_stores import copy_store, part_folder, preprocessed, small_manifest

ROOT = Path(__file__).parents[2]
APS = Path(sys.executable).with_name("aps")


@pytest.fixture(scope="module")
def parts(module_tmp, robosuite_meshes) -> Path:
    """4 real parts: 3 in one train shard, 1 test object with reference data."""
    return part_folder(module_tmp("parts"), robosuite_meshes,
                       {"arm_link": slice(2), "gripper_part": slice(2)})


@pytest.fixture(scope="module")
def pristine(module_tmp, parts) -> Path:
    return preprocessed(parts, module_tmp("pristine") / "store", 4)


@pytest.fixture
def store(tmp_path, pristine) -> Path:
    return copy_store(pristine, tmp_path)


def _train_shard(store: Path) -> tuple[str, list[str]]:
    s = schema.open_store(store)
    shard = s.location(s.split("train")[0])[0]
    return shard, s.shards()[shard]


def _chunk_file(store: Path, shard: str, array: str) -> Path:
    files = [p for p in (store / schema.SHARDS_DIR / shard / array / "c").rglob("*") if p.is_file()]
    assert len(files) == 1, "one shard file per array"
    return files[0]


def test_deleted_chunk_file_is_an_error_not_fill_values_and_a_rerun_redoes_its_objects(store, parts):
    shard, oids = _train_shard(store)
    chunk = _chunk_file(store, shard, "points")
    chunk.unlink()
    with pytest.raises(schema.DamagedObjectError, match=f"object '{oids[0]}'.*points.*{chunk.name}.* missing"):
        schema.open_store(store).load(oids[0])
    with pytest.raises(schema.DamagedObjectError, match="missing"):  # the trainer's bulk reader too
        schema.open_store(store).read_shard(shard, ["points"])
    problems = validate_store(store)
    assert sorted(p.split(":")[0] for p in problems) == sorted(oids)
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert again.done == len(oids) and again.skipped == 4 - len(oids) and sorted(again.repaired) == sorted(oids)
    assert validate_store(store) == []
    fresh = schema.open_store(store)
    pts = fresh.load(oids[0])["points"]
    assert pts.shape == (10000, 3) and not np.allclose(pts, -schema.POINT_HALF_RANGE)


def test_truncated_inside_file_is_found_by_load_validation_and_rerun(store, parts):
    shard, oids = _train_shard(store)
    chunk = _chunk_file(store, shard, "inside")
    chunk.write_bytes(b"")  # truncated to 0 bytes: zarr alone reads that as "never written" -> all False
    with pytest.raises(schema.DamagedObjectError, match=f"{oids[1]}.*inside.*0 bytes"):
        schema.open_store(store).read(oids[1], "inside")
    assert len(validate_store(store)) == len(oids)
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert again.done == len(oids) and validate_store(store) == []


def test_flipped_bytes_in_one_objects_chunk_damage_only_that_object(store, parts):
    shard, oids = _train_shard(store)
    chunk = _chunk_file(store, shard, "images")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside some view's compressed bytes; size unchanged
    chunk.write_bytes(bytes(data))
    bad = schema.verify_shard(store, shard)
    assert len(bad) == 1 and "checksum" in next(iter(bad.values()))
    (row,) = bad
    victim = oids[row]
    s = schema.open_store(store)
    with pytest.raises(schema.DamagedObjectError, match=f"{victim}.*images.*damaged"):
        for v in range(2):
            s.read(victim, "images", v)
    for oid in oids:
        if oid != victim:
            assert s.load(oid)["images"].shape == (2, 137, 137, 4)
    assert [p.split(":")[0] for p in validate_store(store)] == [victim]
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert again.done == 1 and list(again.repaired) == [victim] and validate_store(store) == []


def test_a_truncated_shard_names_the_object_and_file(store):
    shard, oids = _train_shard(store)
    chunk = _chunk_file(store, shard, "udf")
    size = chunk.stat().st_size
    with open(chunk, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(schema.DamagedObjectError) as err:
        schema.open_store(store).read(oids[0], "udf")
    line = str(err.value)
    assert oids[0] in line and str(chunk) in line and f"{size - 10} bytes, {size} were written" in line


def test_empty_chunks_are_stored_so_absence_always_means_damage(tmp_path):
    import zarr

    arrays = {"inside": np.zeros(100, bool), "udf": np.zeros(100, np.uint16)}  # all fill value
    records = [schema.ObjectRecord(schema.ObjectMeta(f"o{i}", "c", "train", "x.stl", "h"), arrays=dict(arrays))
               for i in range(3)]
    schema.write_shard(tmp_path, "20260101T000000-abcdef-train-00000", records)
    arr = zarr.open_array(str(tmp_path / "shards/20260101T000000-abcdef-train-00000/inside"), mode="r")
    assert arr.nchunks_initialized == 3
    assert schema.verify_shard(tmp_path, "20260101T000000-abcdef-train-00000") == {}


def test_garbage_index_json_names_the_file(store):
    (store / schema.INDEX_FILE).write_text("\x00garbage")
    with pytest.raises(schema.StoreError, match=r"index\.json: damaged"):
        schema.open_store(store)


def test_a_shard_written_without_checksums_is_refused_then_redone_identically(store, parts):
    """A shard of an older aps (no recorded checksums): refused on read, redone by the next run, same arrays."""
    shard, oids = _train_shard(store)
    before = {oid: schema.open_store(store).load(oid, ["points", "udf", "images"]) for oid in oids}
    meta = store / schema.SHARDS_DIR / shard / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"][schema.FILES_ATTR]
    meta.write_text(json.dumps(doc))
    with pytest.raises(schema.StoreError, match="without checksums"):
        schema.open_store(store)
    again = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert again.done == len(oids) and "unverifiable" in again.line()
    s = schema.open_store(store)
    for oid in oids:
        after = s.load(oid, ["points", "udf", "images"])
        assert all(np.array_equal(before[oid][k], after[k]) for k in ("points", "udf", "images"))


# ---- one writer at a time ---------------------------------------------------------------------------------

_HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1])\n"
         "from pipeline import schema\n"
         "with schema.writer_lock(sys.argv[2], 'holder-run'):\n"
         "    print('locked', flush=True); time.sleep(120)\n")


def _holder(store: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(ROOT), str(store)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_a_killed_writer_leaves_no_stuck_lock(store, parts):
    holder = _holder(store)
    try:
        with pytest.raises(schema.StoreLockedError, match=f"holder-run \\(pid {holder.pid}"):
            run_preprocess(small_manifest(parts), store, scheduler="serial")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert validate_store(store) == []  # the refused run touched nothing
    summary = run_preprocess(small_manifest(parts), store, scheduler="serial")  # kill -9 released the lock
    assert summary.skipped == 4 and not summary.failed


_SLOW_RUN = ("import sys, time; sys.path.insert(0, sys.argv[1])\n"
             "from pipeline.manifest import folder_manifest\n"
             "from pipeline.runner import run_preprocess\n"
             "m = folder_manifest(sys.argv[2]); m.params = {'views': {'n_views': 2}}\n"
             "s = run_preprocess(m, sys.argv[3], scheduler='serial', progress=lambda n: time.sleep(3))\n"
             "print(s.done, len(s.failed))\n")


def test_two_concurrent_runs_one_refused_at_once_the_other_completes(tmp_path, parts):
    """A real run (slowed by its progress callback: 3 s an object) and the CLI into the same --out."""
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(ROOT), str(parts), str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and b"run_id" not in ((out / schema.LOCK_FILE).read_bytes()
                                                     if (out / schema.LOCK_FILE).is_file() else b""):
        time.sleep(0.1)
    start = time.perf_counter()
    second = subprocess.run([str(APS), "preprocess", "--meshes", str(parts), "--out", str(out), "--scheduler",
                             "serial", "--views", "2"], capture_output=True, text=True, timeout=300)
    refused_after = time.perf_counter() - start
    assert first.poll() is None, "the first run was still writing when the second was refused"
    out_text, err = first.communicate(timeout=600)
    assert first.returncode == 0 and out_text.split() == ["4", "0"], err
    assert second.returncode == 1 and "another `aps preprocess` is writing this store" in second.stderr
    assert refused_after < 12  # at once (CLI start-up included), not after waiting for the first
    assert len(schema.open_store(out)) == 4 and validate_store(out) == []


# ---- never delete what we did not create ------------------------------------------------------------------

def test_a_non_empty_folder_that_is_not_a_store_is_refused_untouched(tmp_path, parts):
    out = tmp_path / "out"
    (out / "shards" / "2023_photos").mkdir(parents=True)
    (out / "shards" / "2023_photos" / "IMG_0001.jpg").write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(schema.StoreError, match="not empty and is not an aps store"):
        run_preprocess(small_manifest(parts), out, scheduler="serial")
    assert (out / "shards" / "2023_photos" / "IMG_0001.jpg").read_bytes() == b"\xff\xd8 a photo"
    assert sorted(p.name for p in out.iterdir()) == ["shards"]


def test_reruns_delete_only_their_own_shards(store, parts):
    foreign = store / schema.SHARDS_DIR / "2023_photos"
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    tmp_like = store / schema.SHARDS_DIR / ".tmp-mine"
    tmp_like.mkdir()
    old_shard, oids = _train_shard(store)
    # every object of the train shard redone (its points file deleted), so that shard is unused afterwards
    _chunk_file(store, old_shard, "points").unlink()
    summary = run_preprocess(small_manifest(parts), store, scheduler="serial")
    assert summary.done == len(oids)
    assert not (store / schema.SHARDS_DIR / old_shard).exists()  # ours, unused: removed
    assert foreign.is_dir() and tmp_like.is_dir()  # not ours: kept
    assert validate_store(store) == []


def test_training_on_a_damaged_store_fails_naming_the_object_and_file(tmp_path, demo_store):
    """Was: zarr read the deleted chunk as fill values and `aps train` trained on them with exit 0."""
    copy = tmp_path / "store"
    shutil.copytree(demo_store, copy)
    shard, oids = _train_shard(copy)
    chunk = _chunk_file(copy, shard, "points")
    chunk.unlink()
    proc = subprocess.run([str(APS), "train", "--data", str(copy), "--out", str(tmp_path / "run"), "--preset",
                           "cpu-test", "--epochs", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("aps: error:") and str(chunk) in err and "missing" in err
    assert any(oid in err for oid in oids)
