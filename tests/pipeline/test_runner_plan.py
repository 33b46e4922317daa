"""The preprocess driver's plan, decided before any object runs (pipeline.runner.hashed_jobs, plan_run): on real
files, without a store or an executor."""

from __future__ import annotations

from pipeline.config import PreprocessConfig
from pipeline.runner import hashed_jobs, plan_run
from pipeline.schema.layout import ObjectMeta
from pipeline.sources.spec import ObjectSpec


def test_hashed_jobs_name_each_object_and_fail_the_refused_and_unreadable_ones_alone(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "b.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 0 1\nf 1 2 3\n")
    objects = [(ObjectSpec("cat-a", "cat", str(tmp_path / "a.obj")), "train"),
               (ObjectSpec("cat-gone", "cat", str(tmp_path / "gone.obj")), "test"),
               (ObjectSpec("cat-b", "cat", str(tmp_path / "b.obj")), "val")]
    refused = [(ObjectSpec("cat-a", "cat", str(tmp_path / "a.stl")), "object id 'cat-a' comes from both ...")]
    jobs, failed = hashed_jobs(objects, refused, PreprocessConfig())
    assert [(j.object_id, j.split) for j in jobs] == [("cat-a", "train"), ("cat-b", "val")]
    assert all(len(j.content_hash) == 32 and len(j.draw_seed) == 32 for j in jobs)
    assert jobs[0].content_hash != jobs[1].content_hash
    assert [(o.job.object_id, o.status) for o in failed] == [("cat-a", "failed"), ("cat-gone", "failed")]
    assert failed[0].error.startswith("object id 'cat-a'") and failed[0].job.source.endswith("a.stl")
    assert "gone.obj: cannot read file" in failed[1].error


def test_plan_run_skips_what_the_store_holds_intact_and_runs_the_rest():
    new, same, changed, damaged = (ObjectMeta(f"cat-{o}", "cat", "train", f"{o}.obj", content_hash="h1")
                                   for o in ("new", "same", "changed", "damaged"))
    existing = {"cat-same:h1": ("shard-1", 3), "cat-changed:h0": ("shard-1", 4)}
    plan = plan_run([new, same, changed, damaged], existing, {"cat-damaged": "shard-1/udf/c/0/0: checksum differs"})
    assert plan.index == {"cat-same": ("shard-1", 3)}
    assert [(o.job.object_id, o.status, o.shard, o.row) for o in plan.skipped] == [("cat-same", "skipped",
                                                                                     "shard-1", 3)]
    assert [j.object_id for j in plan.pending] == ["cat-new", "cat-changed", "cat-damaged"]
    assert plan.repaired == {"cat-damaged": "shard-1/udf/c/0/0: checksum differs"}
