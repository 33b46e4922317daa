"""Files given as checkpoints that are not ours, or whose weights do not fit: one line naming the file and why,
never torch's advice to load with weights_only=False."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from inference.predictor import load_predictor
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import override, preset
from trainer.loop import run_training
from trainer.models import build_model

APS = [sys.executable, "-c", "from aps.cli import main; main()"]


@pytest.fixture(scope="module")
def run(analytic_store, module_tmp):
    """A one-epoch cpu-test run on the analytic store (decoder 32 wide, FPN of 16 channels)."""
    out = module_tmp("ckpt") / "run"
    run_training(override(preset("cpu-test"), ["optim.epochs=1", "data.repeats=2", "data.batch_size=2"]),
                 analytic_store, out, progress=False)
    return out


@pytest.fixture(scope="module")
def foreign_files(run, module_tmp):
    """name -> (path, what the reason must say): files people hand over as checkpoints by mistake."""
    root = module_tmp("foreign")
    real = (run / "last.ckpt").read_bytes()
    model = build_model(preset("cpu-test").model)
    files = {
        "random.ckpt": (np.random.default_rng(0).bytes(4096), "4096 bytes that are not the zip archive"),
        "empty.ckpt": (b"", "the file is empty"),
        "truncated.ckpt": (real[: len(real) // 2], "a truncated or damaged zip archive"),
    }
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    torch.save(model, root / "module.pt")  # a whole pickled nn.Module, not a state dict
    torch.save(model.state_dict(), root / "state_dict.pt")  # weights without this toolkit's payload
    np.savez(root / "arrays.npz", a=np.zeros(3))  # a zip archive of another kind
    paths = {name: (root / name, why) for name, (_, why) in files.items()}
    paths["module.pt"] = (root / "module.pt", "it holds Python objects, not only tensors and plain values: "
                          "trainer.models.network.OccupancyNetwork")
    paths["state_dict.pt"] = (root / "state_dict.pt", "a torch file holding a bare state dict of "
                              f"{len(model.state_dict())} tensors, without the config and without "
                              "checkpoint_version")
    paths["arrays.npz"] = (root / "arrays.npz", "a zip archive torch cannot read as a checkpoint")
    return paths


def test_foreign_files_get_one_line_without_weights_only_advice(foreign_files):
    for name, (path, why) in foreign_files.items():
        for load in (load_checkpoint, load_predictor):
            with pytest.raises(CheckpointError) as info:
                load(path)
            message = str(info.value)
            assert message.startswith(f"{path}: not a checkpoint of this toolkit ("), (name, message)
            assert why in message, (name, message)
            assert "\n" not in message and "weights_only" not in message, (name, message)


def test_aps_reconstruct_and_eval_refuse_random_bytes_in_one_line(foreign_files, analytic_store, tmp_path):
    path = foreign_files["random.ckpt"][0]
    (tmp_path / "photo.png").write_bytes(b"")  # reconstruct needs a file before it reaches the checkpoint
    for command in (["reconstruct", str(tmp_path), "--checkpoint", str(path), "--out", str(tmp_path / "o")],
                    ["eval", "--checkpoint", str(path), "--data", str(analytic_store), "--out", str(tmp_path / "e")]):
        done = subprocess.run([*APS, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"aps: error: {path}: not a checkpoint of this "
                                                               "toolkit (4096 bytes"), done.stderr
        assert "weights_only" not in done.stderr + done.stdout


def test_an_older_config_names_the_field_the_checkpoint_lacks(run, tmp_path):
    """A checkpoint of code that had no model.decoder_hidden: this code builds the default 256-wide decoder."""
    payload = load_checkpoint(run / "last.ckpt")
    del payload["config"]["model"]["decoder_hidden"]
    save_checkpoint(tmp_path / "older.ckpt", payload)
    with pytest.raises(CheckpointError) as info:
        load_predictor(tmp_path / "older.ckpt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'older.ckpt'}: its weights do not fit the OccupancyNetwork this code "
                              "builds from its config (model.decoder_hidden not in the checkpoint's config, "
                              "built with 256; "), message
    assert "other shape keys: decoder." in message and "(32,) in the file, (256,) here" in message, message
    assert "\n" not in message


def test_weights_of_another_extractor_name_the_first_keys(run, tmp_path):
    """The config says FPN, the weights are of a global-feature network (both built by the trainer's code)."""
    payload = load_checkpoint(run / "last.ckpt")
    payload["model"] = build_model(override(preset("cpu-test"), ["model.extractor=global"]).model).state_dict()
    save_checkpoint(tmp_path / "mixed.ckpt", payload)
    with pytest.raises(CheckpointError) as info:
        load_predictor(tmp_path / "mixed.ckpt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'mixed.ckpt'}: its weights do not fit the OccupancyNetwork"), message
    assert "model." not in message.split("(", 1)[1], "no config field differs: none may be named"
    own = list(build_model(preset("cpu-test").model).state_dict())
    missing = [k for k in own if k not in payload["model"]]  # the FPN's lateral and smoothing layers
    assert f"{len(missing)} missing keys: {missing[0]}, {missing[1]}, ...;" in message, message
    # the decoder's first layer takes z (512 pooled channels + 32 of the point embedding) instead of 4 x 16 + 32
    assert "1 other shape key: decoder.hidden.0.weight (32, 544) in the file, (32, 96) here" in message, message
    assert "unexpected" not in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_real_checkpoint_on_a_missing_device_is_not_called_foreign(run):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run / "last.ckpt", map_location="cuda")
    assert str(info.value) == (f"{run / 'last.ckpt'}: cannot be loaded onto cuda (Attempting to deserialize object "
                               "on a CUDA device but torch.cuda.is_available() is False)")
