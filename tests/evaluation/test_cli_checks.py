"""`aps eval` checks its options, and every command its --out, before anything is loaded or written (issue 22,
D8 and D9): a real store, a real training run made by `aps train`, real eval and reconstruct outputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aps.cli import app
from tests.grid_cases import RESOLUTION_CASES, RESOLUTION_IDS

APS = [sys.executable, "-c", "from aps.cli import main; main()"]
SMALL = ["--resolution", "16", "--coarse", "8", "--silhouette-views", "2", "--no-pictures", "--scheduler", "serial"]


def aps(*args):
    """`aps ARGS` in this process: (exit code, the exception that ended it or None)."""
    result = CliRunner().invoke(app, [*map(str, args)])
    return result.exit_code, result.exception


def digests(folder) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def outputs(eval_store, module_tmp):
    """A training run folder left by `aps train`, an eval report of it by `aps eval`, and a folder of
    `aps reconstruct` outputs: {"train": RUN, "eval": EVAL, "reconstruct": RECON}."""
    root = module_tmp("outputs")
    run = root / "run"
    done = subprocess.run([*APS, "train", "--data", str(eval_store), "--out", str(run), "--preset", "cpu-test",
                           "--epochs", "1", "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    code, error = aps("eval", "--checkpoint", run / "last.ckpt", "--data", eval_store, "--out", root / "eval",
                      "--limit", "1", *SMALL)
    assert code == 0, error
    photo = root / "photo.png"
    image = np.full((120, 160, 3), 220, np.uint8)
    image[40:80, 50:110] = (60, 70, 90)
    Image.fromarray(image).save(photo)
    code, error = aps("reconstruct", photo, "--checkpoint", run, "--out", root / "recon", "--resolution", "16",
                      "--coarse", "0", "--no-preview")
    # one epoch of cpu-test may see no surface in it: then the photo fails (an empty mesh is no result), and the
    # folder holds the page that names the failure
    assert code == 0 or "1 of 1 images failed: photo.png" in str(error), error
    assert (root / "recon" / "reconstruct.html").is_file()
    return {"train": run, "eval": root / "eval", "reconstruct": root / "recon"}


@pytest.mark.parametrize("options, message", RESOLUTION_CASES + [
    (["--resolution", "24", "--coarse", "8"], "--coarse must be 0 or at least --resolution (the dense grid), or a "
                                              "grid that --resolution 24 is a power of two times (12, 6, 3), got 8"),
    (["--coarse", "-8"], "--coarse must be 0 or at least --resolution (the dense grid), or a grid that --resolution "
                         "256 is a power of two times (128, 64, 32, 16, 8, 4, 2), got -8"),
    (["--view", "-1"], "--view must be an integer >= 0, got -1"),
    (["--silhouette-views", "0"], "--silhouette-views must be an integer >= 1, got 0"),
    (["--points-per-query", "0"], "--points-per-query must be an integer >= 1, got 0"),
    (["--batch-size", "0"], "--points-per-query must be an integer >= 1, got 0"),  # its former name still works
    (["--limit", "0"], "--limit must be an integer >= 1, got 0"),
    (["--per-category", "0"], "--per-category must be an integer >= 1, got 0"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
], ids=RESOLUTION_IDS + ["coarse-not-a-divisor", "coarse-negative",
        "view-negative", "silhouette-views-0", "points-per-query-0", "batch-size-0", "limit-0", "per-category-0",
        "workers-0"])
def test_eval_options_no_object_can_use_are_refused_before_anything_is_written(options, message, outputs,
                                                                                eval_store, tmp_path):
    """Each of these failed every object (division by zero, negative dimensions, a 101 GiB allocation) and still
    wrote eval.json; now nothing is loaded or written."""
    out = tmp_path / "eval"
    code, error = aps("eval", "--checkpoint", outputs["train"] / "last.ckpt", "--data", eval_store, "--out", out,
                      "--scheduler", "serial", "--no-pictures", *options)
    assert code == 1 and str(error) == message
    assert not out.exists()


def test_a_view_beyond_the_stored_ones_is_refused_with_their_count(outputs, eval_store, tmp_path):
    out = tmp_path / "eval"
    done = subprocess.run([*APS, "eval", "--checkpoint", str(outputs["train"] / "last.ckpt"), "--data",
                           str(eval_store), "--out", str(out), "--view", "4", *SMALL],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"aps: error: --view 4: the objects of {eval_store} have 4 "
                                                    "views (0 to 3)")
    assert not out.exists()


@pytest.mark.parametrize("command, into", [
    ("eval", "train"), ("eval", "store"), ("eval", "reconstruct"),
    ("train", "eval"), ("train", "store"), ("train", "reconstruct"),
    ("reconstruct", "train"), ("reconstruct", "eval"), ("reconstruct", "store"),
    ("compare", "train"),
])
def test_no_command_writes_into_another_commands_folder(command, into, outputs, eval_store, tmp_path):
    """`aps eval --out RUN` rewrote the run's metrics.csv and exited 0; `aps reconstruct` of config.png would
    rewrite a run's config.json. Refused, naming the folder and what it holds; every file left as it was."""
    folder = eval_store if into == "store" else outputs[into]
    before = digests(folder)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(outputs["reconstruct"].parent / "photo.png").save(photos / "config.png")
    args = {
        "eval": ["eval", "--checkpoint", outputs["train"] / "last.ckpt", "--data", eval_store, *SMALL],
        "train": ["train", "--data", eval_store, "--preset", "cpu-test", "--epochs", "1", "--quiet"],
        "reconstruct": ["reconstruct", photos, "--checkpoint", outputs["train"], "--resolution", "16", "--coarse",
                        "0", "--no-preview"],
        "compare": ["eval", "--compare", outputs["eval"]],
    }[command]
    code, error = aps(*args, "--out", folder)
    held = {"train": "a training run of `aps train` (last.ckpt, best.ckpt, tensorboard, ...)",
            "eval": "an eval report of `aps eval` (eval.json, resume.json, .eval.lock)",
            "store": "a preprocessed store of `aps preprocess` (zarr.json, writer.lock)",
            "reconstruct": "reconstructions of `aps reconstruct` (reconstruct.html)"}[into]
    writer = "eval" if command == "compare" else command
    assert code == 1 and str(error) == (f"{folder}: holds {held}; `aps {writer}` does not write into another "
                                        "command's folder: give --out a new or empty folder")
    assert digests(folder) == before


def test_each_command_still_writes_into_its_own_folder(outputs, eval_store):
    """A rerun into its own output: the eval resumes (its object is skipped), reconstruct rewrites its files."""
    code, error = aps("eval", "--checkpoint", outputs["train"] / "last.ckpt", "--data", eval_store, "--out",
                      outputs["eval"], "--limit", "1", *SMALL)
    assert code == 0, error
    code, error = aps("reconstruct", outputs["reconstruct"].parent / "photo.png", "--checkpoint", outputs["train"],
                      "--out", outputs["reconstruct"], "--resolution", "16", "--coarse", "0", "--no-preview")
    assert code == 0 or "1 of 1 images failed: photo.png" in str(error), error  # not "holds ...": it ran
