"""Throughput of the train stage: the data loader alone (zarr -> batch tensors, 1 and 2 workers), the training
step alone, and their ratio (> 1: the loader keeps up with the step).

    python benchmarks/bench_train.py --data data/industrial-demo [--preset paper] [--batches 60]

A sample is one object-view with its points (2048 in the paper preset). The loader figures exclude the first
pass over the objects (the per-worker caches fill then: one read per shard, one per object's views).
"""

from __future__ import annotations

import argparse
import time

import torch


def loader_rate(data: str, cfg, workers: int, batches: int) -> float:
    from pipeline.schema import open_store
    from trainer.data import EpochBatches, TrainingSamples, make_loader, select_objects

    ids = select_objects(open_store(data), cfg.data.train_split, cfg.data.objects)
    dataset = TrainingSamples(data, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed)
    repeats = max(1, -(-(batches + 8) * cfg.data.batch_size // len(ids)))
    sampler = EpochBatches(len(ids), cfg.data.batch_size, repeats, cfg.seed)
    loader = make_loader(dataset, sampler, workers)
    it = iter(loader)
    warm = max(2 * workers, -(-len(ids) // cfg.data.batch_size) * max(1, workers))  # fill every worker's cache
    for _ in range(warm):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)["points"].shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


def step_rate(data: str, cfg, steps: int, device: torch.device) -> float:
    import torch.nn.functional as F

    from pipeline.schema import open_store
    from trainer.data import EpochBatches, TrainingSamples, prepare_view, select_objects
    from trainer.labels import label_v
    from trainer.models import build_model

    ids = select_objects(open_store(data), cfg.data.train_split, cfg.data.objects)
    dataset = TrainingSamples(data, ids, cfg.data.points_per_sample, cfg.data.views, cfg.seed)
    sampler = EpochBatches(len(ids), cfg.data.batch_size, max(1, -(-cfg.data.batch_size // len(ids))), cfg.seed)
    batch = {k: v.to(device) for k, v in dataset[next(iter(sampler))].items()}
    model = build_model(cfg.model, load_pretrained=False).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    use_amp = device.type == "cuda" and cfg.optim.amp

    def step():
        images, K = prepare_view(batch["images"], batch["K"], cfg.data.image_size)
        target = label_v(batch["udf"], batch["inside"], 0.5, cfg.labels.d_star)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(images, batch["points"], K, batch["Rt"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch["points"].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    from trainer.config import override, preset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/industrial-demo")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batches", type=int, default=60, help="timed loader batches per worker setting")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. data.batch_size=16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = override(preset(args.preset), args.set)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    print(f"preset {args.preset}: batch {cfg.data.batch_size} object-views x {cfg.data.points_per_sample} points, "
          f"{cfg.data.image_size} px, {cfg.model.extractor}; step on {device}")
    rates = {}
    for workers in (1, 2):
        rates[workers] = loader_rate(args.data, cfg, workers, args.batches)
        print(f"loader, {workers} worker{'s' if workers > 1 else ''}: {rates[workers]:8.0f} samples/s")
    train = step_rate(args.data, cfg, args.steps, device)
    print(f"training step:      {train:8.1f} samples/s")
    print(f"loader (2 workers) / step: {rates[2] / train:.1f}x")


if __name__ == "__main__":
    main()
