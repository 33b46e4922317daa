"""`aps eval` over Dask and resumed runs, on the real store of tests/evaluation/conftest.py (two real parts).

The field is the true occupancy of each part (clipped winding number of its source mesh) behind a picklable
make_field, so the same field runs in this process and on Dask workers; the values must not depend on where
an object was scored.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation.config import EvalConfig
from evaluation.object_eval import STEPS
from evaluation.report import read_metrics_csv
from evaluation.results import ResultFolder, ResultsMismatchError
from evaluation.runner import evaluate_store
from pipeline.schema import open_store
from pipeline.stages.distances import winding_number
from pipeline.stages.load import load_mesh

ROOT = Path(__file__).parents[2]
SMALL = {"resolution": 32, "coarse": 8, "n_samples": 5000, "silhouette_views": 2}
TIMES = ("seconds",)  # the only columns allowed to differ between two runs of the same objects


@functools.lru_cache(maxsize=2)
def _normalised_mesh(store_path: str, object_id: str):
    store = open_store(store_path)
    ref = store.load(object_id, ["scale", "center"])
    v, f = load_mesh(store.info(object_id)["source"])
    return (v - ref["center"]) / float(ref["scale"]), f


class TrueField:
    """make_field of the true occupancy; pickles as two strings. Each process that builds a field for an object
    leaves a file `<pid>-<object_id>` in `marks`, so a test sees where and how often objects were predicted."""

    def __init__(self, store_path: Path, marks: Path):
        self.store_path, self.marks = str(store_path), str(marks)

    def __call__(self, view):
        Path(self.marks, f"{os.getpid()}-{view.object_id}").touch()
        v, f = _normalised_mesh(self.store_path, view.object_id)
        return lambda p: np.clip(winding_number(v, f, p), 0.0, 1.0).astype(np.float32)


def predicted(marks: Path) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in marks.iterdir())


def without_times(rows) -> str:
    """The rows but their times, as comparable text (NaN, e.g. an undefined ECD, equals NaN here)."""
    return json.dumps([{k: v for k, v in r.items() if k not in TIMES} for r in rows], sort_keys=True,
                      default=float)


@pytest.fixture(scope="module")
def serial_run(eval_store, module_tmp):
    out = module_tmp("serial")
    marks = out / "marks"
    marks.mkdir()
    rows = evaluate_store(open_store(eval_store), TrueField(eval_store, marks), out / "eval", EvalConfig(**SMALL),
                          progress=False, field_id="truth")
    return out / "eval", rows


def test_dask_workers_and_a_client_owned_field_give_the_serial_values(eval_store, serial_run, tmp_path):
    """network=workers: a worker predicts and scores whole objects, building its field once for both of them;
    network=client (the GPU path, here on the CPU): this process predicts, the worker scores. The first as
    scripts ask for it (scheduler, workers, network), the second as `aps eval` does (an EvalExecutor)."""
    from evaluation.executors import EvalExecutor
    from evaluation.fields import CheckpointFields
    from evaluation.object_eval import EvalJob

    _, serial = serial_run
    assert [r["status"] for r in serial] == ["ok", "ok"]
    for network in ("workers", "client"):
        marks = tmp_path / f"marks-{network}"
        marks.mkdir()
        where = (dict(scheduler="local", workers=1, network=network) if network == "workers"
                 else dict(executor=EvalExecutor("local", 1, network)))
        rows = evaluate_store(open_store(eval_store), TrueField(eval_store, marks), tmp_path / network,
                              EvalConfig(**SMALL), progress=False, field_id="truth", **where)
        assert without_times(rows) == without_times(serial), network
        assert without_times(read_metrics_csv(tmp_path / network / "metrics.csv")) == \
            without_times(read_metrics_csv(serial_run[0] / "metrics.csv"))
        assert predicted(marks) == sorted(r["object_id"] for r in serial)
        pids = {int(p.name.split("-")[0]) for p in marks.iterdir()}
        assert len(pids) == 1 and (pids == {os.getpid()}) == (network == "client"), (network, pids)
    # what a task of the CPU path carries: the job (shipped once per worker) holds a path, never a network
    job = EvalJob(str(eval_store), str(tmp_path), EvalConfig(), CheckpointFields("runs/x/last.ckpt", threads=1))
    assert len(pickle.dumps(job)) < 2000


def test_each_object_leaves_a_record_with_its_files_and_the_seconds_of_every_step(serial_run):
    out, rows = serial_run
    for row in rows:
        record = json.loads((out / "objects" / f"{row['object_id']}.json").read_text())
        strict = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}  # NaN: null
        assert json.dumps(record["row"], allow_nan=False) == json.dumps(strict, default=float)
        assert set(record["files"]) == {f"meshes/{row['object_id']}.ply", f"pictures/{row['object_id']}.png",
                                         f"page/{row['object_id']}.json"}  # report.html's part of it
        assert set(record["timings"]) == set(STEPS) - {"record"}  # the record's own write comes after it
        assert sum(record["timings"].values()) == pytest.approx(row["seconds"], rel=0.05, abs=0.05)


def test_a_rerun_skips_finished_objects_and_builds_the_tables_from_all(eval_store, serial_run, tmp_path):
    _, serial = serial_run
    store = open_store(eval_store)
    first, second = (r["object_id"] for r in serial)
    out, marks = tmp_path / "eval", tmp_path / "marks"
    marks.mkdir()
    partial = evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL, limit=1),
                             progress=False, field_id="truth")
    assert [r["object_id"] for r in partial] == [first] and predicted(marks) == [first]
    assert json.loads((out / "eval.json").read_text())["objects"] == 1

    for p in marks.iterdir():
        p.unlink()
    rows = evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL), progress=False,
                          field_id="truth")
    assert predicted(marks) == [second]  # the first object came from its record
    assert json.dumps(rows[0], default=float) == json.dumps(partial[0], default=float)  # the recorded row
    assert without_times(rows) == without_times(serial)
    assert [r["object_id"] for r in read_metrics_csv(out / "metrics.csv")] == [first, second]
    assert "| objects | 1 | 1 | 2 |" in (out / "table1.md").read_text()
    assert f"pictures/{first}.png" in (out / "report.md").read_text()

    # a deleted mesh or record: that object is redone, the other skipped
    (out / "meshes" / f"{second}.ply").unlink()
    for p in marks.iterdir():
        p.unlink()
    evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL), progress=False,
                   field_id="truth")
    assert predicted(marks) == [second] and (out / "meshes" / f"{second}.ply").is_file()
    (out / "objects" / f"{first}.json").unlink()
    for p in marks.iterdir():
        p.unlink()
    evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL), progress=False,
                   field_id="truth")
    assert predicted(marks) == [first]


def test_other_settings_into_a_folder_with_results_are_refused(eval_store, serial_run, tmp_path):
    out, _ = serial_run
    store = open_store(eval_store)
    marks = tmp_path / "marks"
    marks.mkdir()
    with pytest.raises(ResultsMismatchError, match=r"holds 2 object result\(s\) of an eval with other settings "
                       r"\(settings\.resolution: 32 there, 16 here\)"):
        evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**{**SMALL, "resolution": 16}),
                       progress=False, field_id="truth")
    with pytest.raises(ResultsMismatchError, match=r"field: 'truth' there, 'checkpoint sha256 abc' here"):
        evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL), progress=False,
                       field_id="checkpoint sha256 abc")
    assert not list(marks.iterdir())  # refused before any object was predicted
    # a narrower selection of the same settings is no other setting: nothing to do, tables of that selection
    rows = evaluate_store(store, TrueField(eval_store, marks), out, EvalConfig(**SMALL, limit=1), progress=False,
                          field_id="truth")
    assert len(rows) == 1 and not list(marks.iterdir())


def test_a_second_eval_into_the_same_folder_is_refused_while_one_runs(eval_store, tmp_path):
    with ResultFolder(tmp_path / "eval").lock():
        with pytest.raises(ResultsMismatchError, match="another `aps eval` is writing this folder"):
            evaluate_store(open_store(eval_store), TrueField(eval_store, tmp_path), tmp_path / "eval",
                           EvalConfig(**SMALL), progress=False)


def test_the_log_line_names_the_object_its_seconds_and_the_running_mean(eval_store, tmp_path, caplog):
    marks = tmp_path / "marks"
    marks.mkdir()
    with caplog.at_level("INFO", logger="evaluation.runner"):
        rows = evaluate_store(open_store(eval_store), TrueField(eval_store, marks), tmp_path / "eval",
                              EvalConfig(**SMALL, pictures=False), progress=False, field_id="truth")
    lines = [r.getMessage() for r in caplog.records if r.name == "evaluation.runner"]
    for k, row in enumerate(rows, 1):
        mean = np.mean([r["seconds"] for r in rows[:k]])
        assert f"{row['object_id']}: ok in {row['seconds']:.1f} s ({k}/2; mean {mean:.1f} s per object" in \
            "\n".join(lines)
    assert any("s per object by step: read" in line for line in lines)


KILLED_RUN = """
import sys, time
import numpy as np
from evaluation.config import EvalConfig
from evaluation.runner import evaluate_store
from pipeline.schema import open_store

store = open_store(sys.argv[1])
first = store.split("test")[0]

def make_field(view):
    if view.object_id != first:
        time.sleep(600)  # killed here, while the second object is being predicted
    return lambda p: np.clip(0.5 - (np.linalg.norm(p, axis=1) - 0.3) / 0.02, 0, 1).astype(np.float32)

evaluate_store(store, make_field, sys.argv[2], EvalConfig(resolution=32, coarse=8, n_samples=5000,
               silhouette_views=2), progress=False, field_id="sphere")
"""


def test_a_killed_eval_is_completed_by_running_it_again(eval_store, tmp_path):
    """kill -9 during the second object; the rerun predicts only that one, and the tables hold both."""
    store = open_store(eval_store)
    first, second = store.split("test")
    out = tmp_path / "eval"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(eval_store), str(out)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "objects" / f"{first}.json").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first object was not recorded in 120 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "eval.json").exists()
    seen = []

    def make_field(view):
        seen.append(view.object_id)
        return lambda p: np.clip(0.5 - (np.linalg.norm(p, axis=1) - 0.3) / 0.02, 0, 1).astype(np.float32)

    rows = evaluate_store(store, make_field, out, EvalConfig(resolution=32, coarse=8, n_samples=5000,
                          silhouette_views=2), progress=False, field_id="sphere")
    assert seen == [second]
    assert [r["object_id"] for r in rows] == [first, second] and all(r["status"] == "ok" for r in rows)
    assert json.dumps(rows[0]) == json.dumps(json.loads((out / "objects" / f"{first}.json").read_text())["row"])
    assert len(read_metrics_csv(out / "metrics.csv")) == 2 and (out / "eval.json").is_file()


def _worker_settings(dask_worker) -> dict:
    import dask

    return {"mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "omp": os.environ.get("OMP_NUM_THREADS"),
            "profile": dask.config.get("distributed.worker.profile.enabled"),
            "memory_monitor": dask.config.get("distributed.worker.memory.monitor-interval"),
            "task_threads": dask_worker.state.nthreads}


def test_the_local_cluster_of_aps_eval_runs_one_task_thread_with_the_heap_and_housekeeping_it_sets():
    """evaluation.executors.eval_local_cluster: malloc's mmap threshold set before the worker started (the network's
    buffers come from the heap), one thread for the numerical libraries, no statistical profiler."""
    from dask.distributed import Client

    from common.cluster import QUIET_CLUSTER
    from evaluation.executors import EVAL_WORKER_MALLOC, eval_local_cluster

    cluster = eval_local_cluster(1)
    try:
        with Client(cluster) as client:
            (settings,) = client.run(_worker_settings).values()
    finally:
        cluster.close()
    assert settings == {"mmap_threshold": EVAL_WORKER_MALLOC["MALLOC_MMAP_THRESHOLD_"], "omp": "1", "profile": False,
                        "memory_monitor": QUIET_CLUSTER["distributed.worker.memory.monitor-interval"],
                        "task_threads": 1}
