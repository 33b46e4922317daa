"""One vocabulary across the `aps` commands: an option name shared by two commands means the same thing with the
same default (the exceptions listed with their reason), every help reads as people read it (no `<bool>` beside
an on/off flag), and train shows the values its options start from instead of "the preset's"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
APS = [sys.executable, "-c", "from aps.cli import main; main()"]
COMMANDS = ("preprocess", "train", "eval", "reconstruct")

# Shared names whose help or default may differ, and why: each is the same idea applied to its command's own input
# or output, not two ideas under one name.
SAME_IDEA = {
    "--out": "each command's output folder (a store, a run folder, an eval folder, reconstructions); "
             "common.out_folder refuses the wrong kind",
    "--data": "the store the command reads; reconstruct reads it only for the training views' framing",
    "--set": "key=value into the command's own configuration: a manifest's [params], or a TrainConfig field",
    "--precision": "fp32 by default where a mesh is the product (eval, reconstruct: the same mesh on every CPU), "
                   "auto in train, where bf16 only changes speed (docs/TRAINING.md, docs/EVALUATION.md)",
    "--image-size": "a square image's side in pixels: preprocess renders the views at it, train resizes them to it",
}
SAME_HELP_ONLY = {
    "--checkpoint": "required by reconstruct; optional in eval, whose --compare needs none",
}


def _options() -> dict[str, dict[str, object]]:
    """{option name: {command: click parameter}} over the four commands, as `aps` builds them."""
    from aps.cli import app, plain_help

    group = typer.main.get_command(app)
    plain_help(group)
    found: dict[str, dict[str, object]] = {}
    for name in COMMANDS:
        for param in group.commands[name].params:
            if getattr(param, "hidden", False) or not param.opts or not param.opts[0].startswith("--"):
                continue
            found.setdefault(param.opts[0], {})[name] = param
    return found


def test_a_shared_option_means_the_same_with_the_same_default():
    shared = {opt: by for opt, by in _options().items() if len(by) > 1}
    # the names the issue found meaning two things are one thing now, or gone
    assert set(shared["--workers"]) == {"preprocess", "eval"}  # Dask processes; train's is --loader-workers
    assert set(shared["--device"]) == {"train", "eval", "reconstruct"}
    assert "--batch-size" not in shared  # train's object-views; eval's points a query is --points-per-query
    for opt, by in shared.items():
        if opt in SAME_IDEA:
            continue
        helps = {name: p.help for name, p in by.items()}
        assert len(set(helps.values())) == 1, f"{opt}: the help differs between commands: {helps}"
        if opt in SAME_HELP_ONLY:
            continue
        defaults = {name: (p.default, p.show_default) for name, p in by.items()}
        assert len(set(map(str, defaults.values()))) == 1, f"{opt}: the default differs: {defaults}"
    by = shared["--resolution"]
    assert by["eval"].default == by["reconstruct"].default == 256
    assert shared["--device"]["eval"].default == "auto" and shared["--threads"]["reconstruct"].default is None


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_type_beside_a_flag(command):
    done = subprocess.run([*APS, command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout
    assert "--help" in done.stdout and "[default:" in done.stdout


def test_train_help_shows_each_presets_starting_values():
    done = subprocess.run([*APS, "train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"})
    text = " ".join(done.stdout.split())
    assert "paper 50, cpu 60 min, cpu-demo 16, cpu-test 2" in text  # --epochs
    assert "paper 224, cpu 96, cpu-demo 64, cpu-test 32" in text  # --image-size
    assert "the preset's)" not in text and "[default: auto]" in text


def test_train_workers_says_what_it_is_called_now(tmp_path):
    done = subprocess.run([*APS, "train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--loader-workers" in done.stderr and "Dask" in done.stderr
    assert not (tmp_path / "run").exists()


def test_preset_auto_trains_the_cpu_preset_where_there_is_no_gpu(demo_store, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto would choose paper")
    run = tmp_path / "run"
    done = subprocess.run([*APS, "train", "--data", str(demo_store), "--out", str(run), "--epochs", "1", "--quiet",
                           "--set", "data.repeats=1", "--set", "data.val_points=256", "--precision", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "preset cpu (--preset auto: no GPU" in done.stderr
    assert json.loads((run / "config.json").read_text())["preset"] == "cpu"
