"""A newcomer's small folder (issue 28): 4 real parts through `aps preprocess --meshes` get a split every stage
can run on (printed), the up axis and any [params] key are options, and eval on a split without reference data
says what to run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.manifest import FOLDER_SPLIT, ManifestError, exact_hash_split, folder_manifest
from pipeline.schema import open_store
from tests.pipeline.small_stores import part_folder

APS = Path(sys.executable).with_name("aps")


@pytest.mark.parametrize("n, train, val, test", [(1, 1, 0, 0), (2, 1, 0, 1), (3, 1, 1, 1), (4, 2, 1, 1),
                                                 (10, 8, 1, 1), (40, 32, 4, 4)])
def test_a_small_folder_gets_a_test_and_a_val_object(n, train, val, test):
    splits = exact_hash_split([f"part-{i}" for i in range(n)], FOLDER_SPLIT)
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (train, val, test)
    # without at_least, as before: 4 objects gave 4 train, nothing to evaluate
    plain = exact_hash_split([f"part-{i}" for i in range(4)], {"method": "hash", "exact": True})
    assert plain == ["train"] * 4


def test_at_least_is_checked():
    m = folder_manifest(".")
    m.split = {"method": "hash", "at_least": 1}
    with pytest.raises(ManifestError, match="at_least counts objects per split and needs exact = true"):
        m.check()
    m.split = {"method": "hash", "exact": True, "at_least": -1}
    with pytest.raises(ManifestError, match=r"split.at_least must be an integer in \[0, 1000\], got -1"):
        m.check()


def test_four_meshes_from_a_folder_with_the_up_axis_and_settings(robosuite_meshes, tmp_path):
    (tmp_path / "parts").mkdir()
    parts = part_folder(tmp_path / "parts", robosuite_meshes, {"arm_link": slice(0, 2), "gripper_part": slice(0, 2)})
    store = tmp_path / "store"
    done = subprocess.run([str(APS), "preprocess", "--meshes", str(parts), "--out", str(store), "--scheduler",
                           "serial", "--up-axis", "z", "--set", "views.n_views=2", "--set", "n_reference=2000",
                           "--set", "reference_splits=test"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "split: 2 train, 1 val, 1 test" in done.stdout
    opened = open_store(store)
    assert opened.params["views"]["up_axis"] == "z" and opened.params["views"]["n_views"] == 2
    assert opened.params["n_reference"] == 2000 and list(opened.params["reference_splits"]) == ["test"]
    assert [len(opened.split(s)) for s in ("train", "val", "test")] == [2, 1, 1]

    # eval on a split without reference data says which option gives it
    from evaluation.config import EvalConfig
    from evaluation.runner import evaluate_store

    with pytest.raises(ValueError, match=r"\(split train\) has no ref_surface_points.*--set "
                                         r"reference_splits=test,train"):
        evaluate_store(opened, lambda view: None, tmp_path / "eval", EvalConfig(split="train"), progress=False)


def test_set_refuses_what_is_not_key_value(tmp_path):
    done = subprocess.run([str(APS), "preprocess", "--meshes", str(tmp_path), "--set", "n_views"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "expected key=value" in done.stderr
