"""Object ids read from a store name files of `aps eval` (meshes/, pictures/, objects/): an id that is a path
must never write outside --out (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.results import ResultFolder
from tests.store_edits import rename_object
from trainer.config import override, preset
from trainer.loop import run_training

APS = [sys.executable, "-c", "from aps.cli import main; main()"]


@pytest.fixture(scope="module")
def checkpoint(eval_store, module_tmp) -> Path:
    """A one-epoch cpu-test run on the eval store: a checkpoint `aps eval` loads (what it learned is not the
    point here)."""
    out = module_tmp("ids_ckpt") / "run"
    run_training(override(preset("cpu-test"), ["optim.epochs=1", "data.batch_size=2"]), eval_store, out,
                 progress=False)
    return out / "last.ckpt"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_aps_eval_refuses_an_object_id_that_is_a_path_and_writes_nothing_outside_out(eval_store, checkpoint,
                                                                                    tmp_path):
    """Was: an id edited to '../../escaped' (the issue's '../../../../tmp/x', kept inside tmp_path here) made
    `aps eval` write escaped.ply, .png and .json beside --out and exit 0."""
    store = tmp_path / "store"
    shutil.copytree(eval_store, store)
    index = json.loads((store / "index.json").read_text())["objects"]
    test_ids = [o for o in index if index[o][0].split("-")[-2] == "test"]
    victim = test_ids[0]
    rename_object(store, victim, "../../escaped", reseal=True)
    out = tmp_path / "a" / "b" / "eval"
    before = _files(tmp_path)
    done = subprocess.run([*APS, "eval", "--checkpoint", str(checkpoint), "--data", str(store), "--out", str(out),
                           "--resolution", "16", "--coarse", "0", "--silhouette-views", "1", "--scheduler", "serial",
                           "--object", "../../escaped"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"aps: error: {store / 'index.json'}: object id '../../escaped' is not an object id"), \
        done.stderr
    assert not list(tmp_path.rglob("escaped*")), "a file named by the id was written"
    assert {p for p in _files(tmp_path) - before if out not in p.parents} == set(), "written outside --out"


def test_eval_paths_refuse_an_id_that_is_a_path(tmp_path):
    folder = ResultFolder(tmp_path / "eval")
    assert folder.record_path("arm_link-iiwa_link_6") == tmp_path / "eval" / "objects" / "arm_link-iiwa_link_6.json"
    with pytest.raises(ValueError, match="is not an object id"):
        folder.record_path("../../../../tmp/x")
