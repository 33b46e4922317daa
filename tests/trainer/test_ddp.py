"""DDP for real: two CPU processes on gloo train one run; their weights must stay identical, and rank 0 alone
writes the run folder."""

from __future__ import annotations

import csv
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.checkpoint import load_checkpoint
from trainer.config import override, preset
from trainer.loop import run_training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, store: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = override(preset("cpu-test"), ["device=cpu", "threads=1", "optim.epochs=2", "data.batch_size=2",
                                            "data.repeats=4"])
        summary = run_training(cfg, store, out, progress=False)
        torch.save(summary.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_training(analytic_store, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(analytic_store), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    saved = load_checkpoint(out / "last.ckpt")["model"]
    for key, value in r0.items():
        if value.is_floating_point() and "running" not in key:  # batch-norm statistics stay per process
            assert torch.equal(value, r1[key]), f"{key} differs between the DDP processes"
            assert torch.equal(value, saved[key])
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # 2 objects x 4 repeats = 8 samples = 4 batches of 2, split over 2 processes: 2 steps each
    assert load_checkpoint(out / "last.ckpt")["optimizer"]["state"][0]["step"].item() == 4
