"""A small checkpoint trained on the demo store's test part (and one training part), all six views, for the
end-to-end tests of `aps reconstruct`. The tests compare reconstruction paths with each other, not with the
literature, so the network may know the part: what matters is the margin between the clean stored view with
its true camera and the same object seen as a photo."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.schema import open_store
from trainer.checkpoint import save_checkpoint
from trainer.config import override, preset, to_dict
from trainer.loop import run_training
from trainer.models import build_model

# cpu-demo's network (64 px, 64-channel FPN, 128-wide decoder) on 2 parts x 6 views, 2000 samples
CHECKPOINT_SETTINGS = ["data.image_size=64", "data.batch_size=8", "data.repeats=100", "data.num_workers=0",
                       "data.val_split=", "data.val_points=1000", "data.points_per_sample=1024",
                       "optim.epochs=10", "optim.lr=1e-3", "optim.encoder_lr_scale=0.1", "labels.update_every=2"]


@pytest.fixture(scope="session")
def recon_run(demo_store, tmp_path_factory):
    """(run folder, training seconds) of the checkpoint."""
    store = open_store(demo_store)
    objects = [store.split("test")[0], store.split("train")[0]]
    cfg = override(preset("cpu-demo"), [f"data.objects={','.join(objects)}", *CHECKPOINT_SETTINGS])
    out = tmp_path_factory.mktemp("recon") / "run"
    started = time.monotonic()
    run_training(cfg, demo_store, out, progress=False)
    return out, time.monotonic() - started


@pytest.fixture(scope="module")
def checkpoint(module_tmp):
    """A real checkpoint file of an untrained cpu-test network: what it predicts does not matter here."""
    torch.manual_seed(0)
    cfg = preset("cpu-test")
    path = module_tmp("untrained") / "untrained.ckpt"
    save_checkpoint(path, {"config": to_dict(cfg), "model": build_model(cfg.model, load_pretrained=False)
                           .state_dict(), "epoch": 0, "best_val_f1": 0.0})
    return path
