"""The preprocess stage end to end: Dask with 2 real workers, incremental reruns, kill -9 and resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline import schema
from pipeline.manifest import folder_manifest
from pipeline.runner import run_preprocess

ROOT = Path(__file__).parents[2]
SMALL = {"views": {"n_views": 3}, "n_reference": 2000}


def n_meshes(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.stl"))


def small_manifest(folder: Path):
    m = folder_manifest(folder)
    m.params = dict(SMALL)
    m.split = {"method": "hash", "val": 0.0, "test": 0.3}
    return m


def test_dask_local_cluster_with_two_workers_matches_serial(tmp_path, mesh_folder):
    m = small_manifest(mesh_folder)
    config = m.config().with_overrides(shard_size=3)
    dask_summary = run_preprocess(m, tmp_path / "dask", config, scheduler="local", workers=2)
    serial_summary = run_preprocess(m, tmp_path / "serial", config, scheduler="serial")
    assert dask_summary.done == serial_summary.done == n_meshes(mesh_folder) and not dask_summary.failed
    a, b = schema.open_store(tmp_path / "dask"), schema.open_store(tmp_path / "serial")
    assert a.object_ids == b.object_ids
    assert len(list((tmp_path / "dask" / "shards").iterdir())) >= 3  # 3 objects a shard, splits apart
    for oid in a.object_ids:  # same content hash -> same seed -> identical arrays, whichever executor
        assert np.array_equal(a.read(oid, "points"), b.read(oid, "points"))
        assert np.array_equal(a.read(oid, "images"), b.read(oid, "images"))


def test_rerun_skips_done_objects_and_redoes_changed_ones(tmp_path, mesh_folder):
    import shutil

    folder = tmp_path / "meshes"
    shutil.copytree(mesh_folder, folder)
    store = tmp_path / "store"
    first = run_preprocess(small_manifest(folder), store, scheduler="serial")
    again = run_preprocess(small_manifest(folder), store, scheduler="serial")
    n = n_meshes(folder)
    assert first.done == n and again.done == 0 and again.skipped == n
    # change one mesh: only that object is redone, and its old shard copy is no longer indexed
    target = next((folder / "gripper_part").iterdir())
    import trimesh

    mesh = trimesh.load(target, force="mesh")
    mesh.apply_translation([0.01, 0, 0])
    mesh.apply_scale(1.5)
    mesh.export(target)
    third = run_preprocess(small_manifest(folder), store, scheduler="serial")
    assert third.done == 1 and third.skipped == n - 1
    s = schema.open_store(store)
    assert len(s.object_ids) == n
    assert s.info(f"gripper_part-{target.stem}")["content_hash"] != ""
    lines = [json.loads(x) for x in (store / schema.RUNS_FILE).read_text().splitlines()]
    assert [x["status"] for x in lines].count("skipped") == 2 * n - 1


def test_kill_minus_9_then_rerun_completes_every_object_once(tmp_path, mesh_folder):
    store = tmp_path / "store"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pipeline.manifest import folder_manifest\n"
        "from pipeline.runner import run_preprocess\n"
        "m = folder_manifest(sys.argv[2]); m.params = {'views': {'n_views': 24}, 'n_reference': 50000,"
        " 'reference_splits': ['train', 'val', 'test'], 'shard_size': 1}\n"
        "run_preprocess(m, sys.argv[3], scheduler='serial')\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(mesh_folder), str(store)])
    shards = store / "shards"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [d for d in shards.iterdir() if schema.is_shard_name(d.name)] if shards.is_dir() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    index = json.loads((store / schema.INDEX_FILE).read_text())
    assert index["status"] == "in_progress", "the killed run must not look complete"
    survived = len([d for d in shards.iterdir() if schema.is_shard_name(d.name)])
    n = n_meshes(mesh_folder)
    assert 2 <= survived < n
    m = folder_manifest(mesh_folder)
    m.params = {"views": {"n_views": 24}, "n_reference": 50000, "reference_splits": ["train", "val", "test"],
                "shard_size": 1}
    summary = run_preprocess(m, store, scheduler="serial")
    assert summary.skipped >= 2 and summary.skipped + summary.done == n and not summary.failed
    s = schema.open_store(store)
    assert len(s.object_ids) == n == len(set(s.object_ids))
    assert not [d for d in shards.iterdir() if d.name.startswith(".tmp")]
    assert sorted(d.name for d in shards.iterdir() if not schema.is_shard_name(d.name)) == ["zarr.json"]
    assert len([d for d in shards.iterdir() if d.is_dir()]) == n  # one object a shard, nothing left over


def aps(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "aps", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_cli_meshes_folder_with_a_failure_exits_nonzero_and_writes_the_rest(tmp_path, mesh_folder):
    import shutil

    folder = tmp_path / "meshes"
    shutil.copytree(mesh_folder / "arm_link", folder / "arm_link")
    (folder / "arm_link" / "broken.stl").write_bytes(b"")
    proc = aps("preprocess", "--meshes", str(folder), "--out", str(tmp_path / "store"), "--scheduler", "serial",
               "--views", "2")
    assert proc.returncode == 1
    assert "arm_link-broken" in proc.stderr and "empty file" in proc.stderr
    s = schema.open_store(tmp_path / "store")
    assert len(s.object_ids) == 4
    lines = [json.loads(x) for x in (tmp_path / "store" / schema.RUNS_FILE).read_text().splitlines()]
    assert {x["status"] for x in lines} == {"ok", "failed"}


def test_cli_errors_are_one_line(tmp_path):
    proc = aps("preprocess", "--meshes", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"))
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "nowhere" in err[0] and err[0].startswith("aps: error:")
    help_text = aps("preprocess", "--help")
    assert help_text.returncode == 0 and "--manifest" in help_text.stdout and "--scheduler" in help_text.stdout


def test_existing_cluster_by_address(tmp_path, mesh_folder):
    """--scheduler ADDRESS: the same job on a cluster someone else started (here: one with 2 worker processes)."""
    from dask.distributed import LocalCluster

    m = small_manifest(mesh_folder)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run_preprocess(m, tmp_path / "store", scheduler=cluster.scheduler_address)
        assert len(cluster.workers) == 2, "the run must not close a cluster it did not start"
    assert summary.done == n_meshes(mesh_folder) and not summary.failed
    assert schema.open_store(tmp_path / "store").object_ids


def test_cli_local_cluster_run_prints_no_traceback_and_no_dask_chatter(tmp_path, mesh_folder):
    """A clean run with the default LocalCluster: the summary, no scheduler log lines, no shutdown traceback."""
    import shutil

    folder = tmp_path / "meshes"
    shutil.copytree(mesh_folder / "gripper_part", folder / "gripper_part")
    proc = aps("preprocess", "--meshes", str(folder), "--out", str(tmp_path / "store"), "--workers", "2",
               "--views", "2")
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log and "CommClosedError" not in log
    assert "distributed." not in log, [x for x in log.splitlines() if "distributed." in x][:3]
    assert "4 done, 0 skipped, 0 failed" in log


def test_colliding_ids_fail_only_the_objects_involved(tmp_path, robosuite_meshes):
    """Two sources that both give `arm_link-link`: those two objects fail with the reason, the others are written."""
    import shutil

    from pipeline.manifest import Manifest

    a, b = tmp_path / "a", tmp_path / "b"
    for root, mesh in ((a, robosuite_meshes["arm_link"][0]), (b, robosuite_meshes["arm_link"][1])):
        (root / "arm_link").mkdir(parents=True)
        shutil.copy(mesh, root / "arm_link" / "link.stl")
    (b / "gripper_part").mkdir()
    shutil.copy(robosuite_meshes["gripper_part"][0], b / "gripper_part" / "knuckle.stl")
    m = Manifest(name="collide", sources=[{"type": "folder", "root": str(a)}, {"type": "folder", "root": str(b)}],
                 params=dict(SMALL), split={"method": "hash", "val": 0.0, "test": 0.0}, base_dir=tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 1 and len(summary.failed) == 2
    assert all("arm_link-link" in o.error and "comes from both" in o.error for o in summary.failed)
    assert schema.open_store(tmp_path / "store").object_ids == ["gripper_part-knuckle"]
    lines = [json.loads(x) for x in (tmp_path / "store" / schema.RUNS_FILE).read_text().splitlines()]
    assert sorted((x["object_id"], x["status"]) for x in lines) == [
        ("arm_link-link", "failed"), ("arm_link-link", "failed"), ("gripper_part-knuckle", "ok")]
