"""The training loop: epochs over object-view batches, labels v(d, s) made on the device, F1 on held-out
points driving s. Each epoch ends in a record (trainer.writer.EpochRecord) and the run's state
(trainer.checkpoint.TrainingState) that rank 0's writer puts on disk: checkpoints, metrics, TensorBoard and a
plot. It knows nothing of the model's insides.

Runs single-process (CPU or one GPU) or under torchrun / an initialised process group (DDP; gloo on CPU,
nccl on CUDA); only rank 0 writes files.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from common.atomic import remove_stale_temporaries
from common.locking import single_writer
from common.progress import bar_options
from pipeline.schema.read import open_store
from trainer.checkpoint import (
    LAST,
    CheckpointError,
    TrainingState,
    check_same_config,
    check_same_data,
    load_model_state,
    load_state,
    rng_state,
    set_rng_state,
)
from trainer.config import TrainConfig, to_dict, validate
from trainer.data import (
    EpochBatches,
    ObjectCache,
    TrainingSamples,
    ValidationSet,
    make_loader,
    positive_ratio,
    store_identity,
    training_object_ids,
)
from trainer.labels import SSchedule, label_v, trivial_f1
from trainer.models import build_model, precision
from trainer.snapshots import snapshot, snapshot_objects
from trainer.views import prepare_view
from trainer.writer import WRITTEN, EpochRecord, RunWriter, repair_run_folder

log = logging.getLogger(__name__)

LOCK_FILE = ".train.lock"
"""RUN/.train.lock: flock held by the one process writing the run folder (common.locking.single_writer)"""


class RunFolderBusy(RuntimeError):
    """Another process is writing the run folder."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainingSummary:
    """What a finished run reports; `model` is the trained network of this process (not a copy on disk).

    epochs: epochs the run holds now; trained: epochs this call trained (0: a resume that found the run
    already at or past optim.epochs)."""

    epochs: int
    best_val_f1: float
    final_s: float | None
    seconds: float
    out: Path
    model: torch.nn.Module | None = None
    trained: int | None = None
    budget_s: float = 0.0

    def line(self) -> str:
        if self.trained == 0:
            more = (f"pass a --time-budget above {self.budget_s / 60:g} min" if self.budget_s > 0
                    else f"pass --epochs above {self.epochs}")
            return (f"nothing was trained: the run in {self.out} already has {self.epochs} epoch"
                    f"{'s' if self.epochs != 1 else ''} (best val F1 {self.best_val_f1:.4f}); {more} to train more")
        s = "binary" if self.final_s is None else f"{self.final_s:.4f}"
        return (f"trained {self.epochs} epochs in {self.seconds:.0f} s: best val F1 {self.best_val_f1:.4f}, "
                f"final s {s}; checkpoints in {self.out}")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda (the local rank's GPU) when present, else cpu."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def _distributed(device_name: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group torchrun describes in the environment."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _all_reduce(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
    return values


def _scores(counts: torch.Tensor) -> dict[str, float]:
    """counts = (tp, fp, fn) of the decision D(p) > 0.5 against the inside flag (eq. 11) -> precision, recall,
    F1 and IoU (= tp / (tp + fp + fn), the occupancy IoU on those points)."""
    tp, fp, fn = (float(c) for c in counts)
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def _counts(logits: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    pred = logits > 0  # sigmoid(logit) > 0.5
    return torch.stack([(pred & inside).sum(), (pred & ~inside).sum(), (~pred & inside).sum()]).to(torch.float64)


def _to_device(batch: dict, device: torch.device, image_size: int) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["images"], out["K"] = prepare_view(out["images"], out["K"], image_size)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: ValidationSet, cfg: TrainConfig, device: torch.device,
             rank: int = 0, world: int = 1, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Precision, recall, F1 and IoU of D(p) > 0.5 against the stored inside flags on the fixed validation
    points (eval mode: batch norm uses its running statistics, as at inference), the network in autocast to
    `dtype` (None: float32) as in training."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in val.batches(cfg.data.batch_size, rank, world):
        b = _to_device(batch, device, cfg.data.image_size)
        with precision.autocast(device, dtype):
            logits = model(b["images"], b["points"], b["K"], b["Rt"])
        counts += _counts(logits.float(), b["inside"])
    model.train(was_training)
    return _scores(_all_reduce(counts, world).cpu())


@dataclass(frozen=True)
class _Objects:
    """The objects a run trains and validates on. held_out > 0: no validation objects, so F1 is measured on
    this many held-out points of each training object (kept out of training); val_ids is then train_ids."""

    train_ids: list[str]
    val_ids: list[str]
    held_out: int


@dataclass
class _Run:
    """One run's state, built before the first epoch and advanced by each: the network with its optimiser,
    loss scaler and s schedule, and the bookkeeping a checkpoint saves."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    rank: int
    world: int
    identity: dict
    """trainer.data.store_identity of the data and objects, saved in every checkpoint"""
    model: torch.nn.Module
    """the network itself (never the DDP wrapper): what is evaluated, saved and returned"""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    """autocast dtype (cfg.precision, trainer.models.precision); None: float32 without autocast"""
    cache: ObjectCache
    ratio: float
    """positive ratio r: the fraction of training points inside (sets the initial s)"""
    s_schedule: SSchedule
    start_epoch: int = 0
    """first epoch (0-based) this call trains: 0, or the resumed checkpoint's epoch + 1"""
    epochs: int = 0
    """epochs the run holds now (the next epoch to train, 0-based)"""
    best_val_f1: float = -1.0
    history: list[dict] = field(default_factory=list)
    """one trainer.writer.METRIC_COLUMNS row per epoch, also across resumes"""
    writer: RunWriter | None = None
    """rank 0's writer of the run folder (None on the other ranks)"""
    started: float = 0.0
    pictures_off: bool = False
    pictures_s: float = 0.0
    """seconds this call spent on TensorBoard pictures"""
    """set when this machine cannot draw the TensorBoard pictures (no open3d): said once, then skipped"""
    """time.monotonic() when this call started"""
    elapsed_before: float = 0.0
    """wall seconds the run's earlier calls took (the last history row's elapsed_s; 0 for a new run)"""

    def elapsed(self) -> float:
        """Wall seconds of the run so far, its earlier calls (resumes) included."""
        return self.elapsed_before + time.monotonic() - self.started

    def budget_spent(self) -> bool:
        """Whether optim.time_budget_s (when set) leaves no room for another epoch: the run stops at the end of the
        last epoch that fits in the budget, the next one estimated as next_epoch_estimate of the epochs before."""
        budget = self.cfg.optim.time_budget_s
        if budget <= 0 or not self.history:
            return False
        ends = [float(row.get("elapsed_s") or 0.0) for row in self.history]  # older runs did not record it
        return ends[-1] + next_epoch_estimate(ends) > budget

    def summary(self, started: float) -> TrainingSummary:
        return TrainingSummary(epochs=self.epochs, best_val_f1=self.best_val_f1, final_s=self.s_schedule.s,
                               seconds=time.monotonic() - started, out=self.out, model=self.model,
                               trained=self.epochs - self.start_epoch,
                               budget_s=self.cfg.optim.time_budget_s)

    def state(self, epoch: int) -> TrainingState:
        """The run at the end of `epoch`, as its checkpoint holds it (the RNG states as they are now)."""
        return TrainingState(config=to_dict(self.cfg), model=self.model.state_dict(),
                             optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                             s_schedule=self.s_schedule.state_dict(), epoch=epoch, best_val_f1=self.best_val_f1,
                             history=self.history, rng=rng_state(), positive_ratio=self.ratio,
                             data=self.identity["path"], data_identity=self.identity)


@dataclass
class _Feed:
    """What an epoch iterates: the network to step (DDP-wrapped on several processes), its batches, and the
    fixed validation points."""

    net: torch.nn.Module
    sampler: EpochBatches
    loader: torch.utils.data.DataLoader
    val: ValidationSet


def _select(cfg: TrainConfig, store, data: Path) -> _Objects:
    """The training objects and the validation set: the validation split's objects, or (none there) held-out
    points of the training objects."""
    train_ids = training_object_ids(store, cfg.data)
    if not train_ids:
        raise ValueError(f"{data}: no training objects in split {cfg.data.train_split!r}"
                         f"{' among ' + str(list(cfg.data.objects)) if cfg.data.objects else ''}")
    val_ids = store.split(cfg.data.val_split) if cfg.data.val_split else []
    held_out = 0
    if not val_ids:
        held_out = min(cfg.data.val_points, 5000)
        if cfg.data.val_split:
            log.warning("%s: no objects in split %r; measuring F1 on %d held-out points of each training "
                        "object instead", data, cfg.data.val_split, held_out)
        val_ids = train_ids
    return _Objects(train_ids, val_ids, held_out)


@contextmanager
def _sole_writer(out: Path, resume: bool, rank: int) -> Iterator[None]:
    """Rank 0 holds RUN/.train.lock while the run reads and writes the folder: a second `aps train` into it is
    refused at once, naming the holder (a crashed run holds nothing: the kernel drops a flock with its
    process). Holding it, the temporary files that killed writes left in RUN are removed (only ours)."""
    if rank != 0:
        yield
        return
    if not out.is_dir():
        if resume:
            raise CheckpointError(f"{out / LAST}: nothing to resume (no run folder {out})")
        out.mkdir(parents=True)

    def refused(holder: str) -> RunFolderBusy:
        return RunFolderBusy(f"{out}: another `aps train` is writing this run folder: {holder}; wait for it to "
                             "finish or choose another --out (a run folder has one writer at a time)")

    with single_writer(out / LOCK_FILE, refused):
        removed = remove_stale_temporaries(out, WRITTEN)
        if removed:
            log.warning("%s: removed %d temporary file%s left by a write that was killed: %s", out, len(removed),
                        "s" if len(removed) > 1 else "", ", ".join(p.name for p in removed))
        yield


def _check_run_folder(cfg: TrainConfig, store, objects: _Objects, out: Path, resume: bool,
                      device: torch.device) -> tuple[dict, TrainingState | None]:
    """(data identity, the checkpoint to resume or None). Refuses a fresh run into a folder that holds one,
    a resume with nothing to resume, and (before anything is built) a resume with another config or data."""
    last = out / LAST
    if resume and not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume (no checkpoint in {out})")
    if not resume and last.is_file():
        raise CheckpointError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose "
                              "another --out")
    identity = store_identity(store, objects.train_ids, objects.val_ids)
    saved = None
    if resume:
        saved = load_state(last, map_location=device)
        saved.check_resumable(last)
        check_same_config(last, saved.config, to_dict(cfg))
        check_same_data(last, saved, identity)
    return identity, saved


def _build(cfg: TrainConfig, data: Path, out: Path, device: torch.device, rank: int, world: int,
           objects: _Objects, identity: dict, resume: bool) -> _Run:
    """The model (fresh weights; pretrained ones only for a new run), Adam with the feature extractor at
    optim.encoder_lr_scale x the decoder's rate, the precision and AMP loss scaler, and the s schedule from
    the positive ratio r of the training objects."""
    model = build_model(cfg.model, load_pretrained=not resume).to(device)
    # fused: one kernel over all parameters instead of ~10 small ones per tensor (a quarter of a cpu-demo step
    # on a CPU went to Adam's per-tensor loop); the same update, the same state_dict
    optimizer = torch.optim.Adam([
        {"params": model.feature_extractor.parameters(), "lr": cfg.optim.lr * cfg.optim.encoder_lr_scale},
        {"params": model.decoder.parameters(), "lr": cfg.optim.lr},
    ], weight_decay=cfg.optim.weight_decay, fused=device.type in ("cpu", "cuda"))
    amp_dtype = _amp_dtype(cfg, model, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    cache = ObjectCache(data)
    ratio = positive_ratio(cache, objects.train_ids)
    s_schedule = SSchedule.from_config(cfg.labels, ratio)
    return _Run(cfg=cfg, out=out, device=device, rank=rank, world=world, identity=identity, model=model,
                optimizer=optimizer, scaler=scaler, amp_dtype=amp_dtype, cache=cache, ratio=ratio,
                s_schedule=s_schedule)


def _amp_dtype(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> torch.dtype | None:
    """cfg.precision on this device: on CUDA, auto follows optim.amp (bfloat16 where supported, else float16
    with loss scaling); elsewhere trainer.models.precision.choose, which for auto times a training step of a copy
    of the model on a small batch of the run's shape (the copy: the probe's batch-norm statistics stay out of the
    run); fp32 and bf16 are taken as asked, with nothing built to measure."""
    if device.type == "cuda" and cfg.precision == "auto":
        if not cfg.optim.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    probe = _step_probe(cfg, model, device) if cfg.precision == "auto" else None
    return precision.choose(cfg.precision, device, probe, "a training step")


def _step_probe(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> Callable[[torch.dtype | None], None]:
    """One forward and backward of a copy of `model` on a random batch of min(batch_size, 4) samples of the run's
    image size and points per sample, in the given autocast dtype (no optimiser step)."""
    probe_model = copy.deepcopy(model).train()
    b, size, n = min(cfg.data.batch_size, 4), cfg.data.image_size, cfg.data.points_per_sample
    generator = torch.Generator().manual_seed(0)  # the run's random streams are not drawn from
    images = torch.rand(b, 3, size, size, generator=generator).to(device)
    points = (torch.rand(b, n, 3, generator=generator) - 0.5).to(device)
    K = torch.tensor([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]], device=device).expand(b, 3, 3)
    Rt = torch.cat([torch.eye(3), torch.tensor([[0.0], [0.0], [2.0]])], 1).to(device).expand(b, 3, 4)

    def step(dtype: torch.dtype | None) -> None:
        with precision.autocast(device, dtype):
            logits = probe_model(images, points, K, Rt)
        F.binary_cross_entropy_with_logits(logits.float(), torch.zeros_like(logits, dtype=torch.float32)).backward()
        probe_model.zero_grad(set_to_none=True)

    return step


def _restore(run: _Run, saved: TrainingState) -> None:
    """Continue from a checkpoint: weights, optimiser, scaler, s state, epoch, best F1, history and RNG."""
    load_model_state(run.model, run.out / LAST, saved, to_dict(run.cfg))
    fused = [group.get("fused") for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(saved.optimizer)
    for group, value in zip(run.optimizer.param_groups, fused, strict=True):  # an older run's state is not fused
        group["fused"] = value
    run.scaler.load_state_dict(saved.scaler)
    run.s_schedule.load_state_dict(saved.s_schedule)
    run.start_epoch, run.best_val_f1 = saved.epoch + 1, saved.best_val_f1
    run.epochs = run.start_epoch
    run.history = list(saved.history)
    run.elapsed_before = float(run.history[-1].get("elapsed_s") or 0.0) if run.history else 0.0
    set_rng_state(saved.rng)


def _open_run_folder(run: _Run, objects: _Objects) -> None:
    """Rank 0: the run's opening log lines and its writer (config.json, TensorBoard)."""
    if run.rank != 0:
        return
    log.info("%d training objects, %d validation objects, positive ratio r = %.4f, initial s = %s",
             len(objects.train_ids), len(objects.val_ids), run.ratio, run.s_schedule.s)
    run.writer = RunWriter(run.cfg, run.out)


def _feed(run: _Run, data: Path, objects: _Objects) -> _Feed:
    """The network to step (DDP on several processes), this process's batches and the validation points."""
    cfg, device = run.cfg, run.device
    net = run.model
    if run.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = TrainingSamples.from_config(cfg.data, data, objects.train_ids, cfg.seed, objects.held_out)
    sampler = EpochBatches.from_config(cfg.data, len(objects.train_ids), cfg.seed, run.rank, run.world)
    loader = make_loader(dataset, sampler, cfg.data.num_workers)
    val = ValidationSet.from_config(cfg.data, run.cache, objects.val_ids, cfg.seed, objects.held_out)
    if cfg.labels.score == "gain":  # the all-inside answer's F1 on these points: gain 0
        run.s_schedule.f1_trivial = trivial_f1(val.inside_fraction())
        if run.rank == 0:
            log.info("s follows F1's gain over the all-inside answer (F1 %.4f on the validation points)",
                     run.s_schedule.f1_trivial)
    if len(sampler) == 0:
        raise ValueError(f"{data}: {len(objects.train_ids)} training objects x {cfg.data.repeats} repeats give no "
                         f"batch of {cfg.data.batch_size} per process; lower data.batch_size or raise data.repeats")
    return _Feed(net, sampler, loader, val)


EPOCH_MARGIN = 1.1
"""an epoch is estimated this much longer than the longest of the last three: epochs vary by a few percent (a
60-minute run that trusted the last epoch alone ended 0.5 s past its budget)"""


def next_epoch_estimate(ends: list[float]) -> float:
    """Wall seconds the next epoch is expected to take, from the run's epoch ends (elapsed_s): EPOCH_MARGIN x the
    longest of the last three epochs (the first one's start-up included while it is among them)."""
    walls = [b - a for a, b in zip([0.0, *ends], ends, strict=False)][-3:]
    return EPOCH_MARGIN * max(walls)


def lr_factor(progress: float, schedule: str, warmup: float, floor: float) -> float:
    """The learning rate relative to optim.lr at `progress` in [0, 1] of the run (beyond 1: as at 1): a linear
    warm-up from 0 over the first `warmup`, then constant, or a cosine from 1 down to `floor` at progress 1."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return max(p / warmup, 1e-3)
    if schedule == "constant":
        return 1.0
    t = (p - warmup) / max(1e-12, 1.0 - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_learning_rate(run: _Run, epochs_done: float) -> None:
    """Every parameter group's rate at this point of the run: optim.lr (the feature extractor's x
    encoder_lr_scale) times lr_factor, progress measured in wall time over optim.time_budget_s when a budget is
    set (users plan in hours; the schedule ends where the budget does), else in epochs over optim.epochs."""
    optim = run.cfg.optim
    if optim.lr_schedule == "constant" and optim.warmup == 0.0:
        return
    progress = (run.elapsed() / optim.time_budget_s if optim.time_budget_s > 0 else epochs_done / optim.epochs)
    factor = lr_factor(progress, optim.lr_schedule, optim.warmup, optim.lr_floor)
    encoder, decoder = run.optimizer.param_groups
    encoder["lr"] = optim.lr * optim.encoder_lr_scale * factor
    decoder["lr"] = optim.lr * factor


def _train_epoch(run: _Run, feed: _Feed, epoch: int, progress: bool) -> dict[str, float]:
    """One pass over this epoch's batches: labels v(d, s) on the device, BCE on the logits, one Adam step per
    batch; a non-finite or exploded loss raises TrainingDiverged. Returns the epoch's loss (mean of the
    batches'), train F1, samples/s (all processes) and seconds."""
    cfg, device, world, s_schedule = run.cfg, run.device, run.world, run.s_schedule
    feed.sampler.set_epoch(epoch)
    feed.net.train()
    t0 = time.monotonic()
    loss_sum, n_steps, n_samples = 0.0, 0, 0
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    of = (f" ({run.elapsed() / 60:.1f}/{cfg.optim.time_budget_s / 60:g} min)" if cfg.optim.time_budget_s > 0
          else f"/{cfg.optim.epochs}")
    # in a log (not a terminal) the epoch's own line says what its bar would: 10 lines an epoch were most of a log
    bar = tqdm(feed.loader, desc=f"epoch {epoch + 1}{of}", disable=not progress or run.rank != 0
               or not sys.stderr.isatty(),
               **bar_options(total=len(feed.sampler), leave=False))
    n_batches = max(1, len(feed.sampler))
    for step, batch in enumerate(bar):
        set_learning_rate(run, epoch + step / n_batches)
        b = _to_device(batch, device, cfg.data.image_size)
        target = label_v(b["udf"], b["inside"], s_schedule.s, cfg.labels.d_star)  # on the device, at batch time
        with precision.autocast(device, run.amp_dtype):
            logits = feed.net(b["images"], b["points"], b["K"], b["Rt"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        value = _all_reduce(loss.detach().clone(), world) / world
        if not torch.isfinite(value) or value.item() > cfg.optim.max_loss:
            kept = f"{run.out / LAST} of epoch {epoch}" if epoch > 0 else "no checkpoint (none was written yet)"
            raise TrainingDiverged(f"loss {value.item():.4g} at epoch {epoch + 1}, step {step + 1} "
                                   f"(limit optim.max_loss = {cfg.optim.max_loss}); stopped, keeping {kept}")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        loss_sum += value.item()
        n_steps += 1
        n_samples += b["points"].shape[0] * world
        counts += _counts(logits.detach(), b["inside"])
        if step % 10 == 0:
            bar.set_postfix(loss=f"{value.item():.4f}", s="bin" if s_schedule.s is None else f"{s_schedule.s:.3f}")
    bar.close()
    seconds = time.monotonic() - t0
    train_scores = _scores(_all_reduce(counts, world).cpu())
    return {"loss": loss_sum / max(1, n_steps), "train_f1": train_scores["f1"],
            "samples_per_s": n_samples / max(seconds, 1e-9), "seconds": seconds}


def _record_epoch(run: _Run, feed: _Feed, epoch: int, trained: dict[str, float]) -> EpochRecord:
    """After training `epoch`: validation F1, the s schedule's step, and the epoch's metrics row, added to the
    run's history with its best F1 and epoch count. Writes nothing (rank 0's writer does)."""
    cfg = run.cfg
    val_scores = evaluate(run.model, feed.val, cfg, run.device, run.rank, run.world, run.amp_dtype)
    s_used = run.s_schedule.s
    change = run.s_schedule.end_of_epoch(epoch, val_scores["f1"])
    row = {"epoch": epoch + 1, "loss": trained["loss"], "train_f1": trained["train_f1"],
           "val_f1": val_scores["f1"], "val_precision": val_scores["precision"],
           "val_recall": val_scores["recall"], "val_iou": val_scores["iou"], "s": s_used,
           "lr": run.optimizer.param_groups[-1]["lr"], "samples_per_s": trained["samples_per_s"],
           "seconds": trained["seconds"], "elapsed_s": run.elapsed()}
    run.history.append(row)
    improved = val_scores["f1"] > run.best_val_f1
    run.best_val_f1 = max(run.best_val_f1, val_scores["f1"])
    run.epochs = epoch + 1
    return EpochRecord(row=row, improved=improved, change=change)


PICTURES_SHARE = 0.03
"""the most of a run's time its TensorBoard pictures may take (the demo's epochs last ~4 s)"""


def _pictures(run: _Run, objects: _Objects, epoch: int) -> None:
    """Rank 0, after epoch 1 and every cfg.pictures_every epochs: the pictured objects to TensorBoard. Their time
    counts in the run's (a time budget includes it): ~1 s per object on a CPU."""
    every, count = run.cfg.pictures_every, run.cfg.pictures_objects
    if not every or not count or (epoch != 1 and epoch % every) or run.pictures_off:
        return
    if epoch != 1 and run.pictures_s > PICTURES_SHARE * run.elapsed():
        return  # short epochs: pictures stay under PICTURES_SHARE of the run's time, skipping a turn when due
    started = time.monotonic()
    try:
        pictures = {oid: snapshot(run.model, run.cache.store, oid, run.cfg.data.image_size, run.device,
                                  run.amp_dtype) for oid in snapshot_objects(objects.val_ids, objects.train_ids, count)}
    except ImportError as exc:  # a machine without the renderer (open3d) trains on, without pictures
        run.pictures_off = True
        log.warning("TensorBoard pictures off for this run: %s", exc)
        return
    run.writer.write_pictures(epoch, pictures)
    run.pictures_s += time.monotonic() - started
    log.debug("epoch %d: %d pictures to TensorBoard in %.1f s", epoch, len(pictures), time.monotonic() - started)


def run_training(cfg: TrainConfig, data: str | Path, out: str | Path, resume: bool = False,
                 progress: bool = True) -> TrainingSummary:
    """Train on the store at `data`, writing the run folder `out` (see docs/TRAINING.md); returns the summary.

    resume=True continues from out/last.ckpt (model, optimiser, s state, epoch, RNG); the config must match
    the checkpoint's except for the fields in config.RESUMABLE_FIELDS (e.g. more epochs), and `data` must hold
    the same dataset and objects (trainer.data.store_identity; the store may have moved). A run that already
    has optim.epochs epochs trains nothing and writes nothing (summary.trained == 0).
    """
    validate(cfg)
    started = time.monotonic()
    data, out = Path(data), Path(out)
    rank, world, local_rank = _distributed(cfg.device)
    device = resolve_device(cfg.device, local_rank)
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)  # the model's initial weights are the first draw

    store = open_store(data)
    objects = _select(cfg, store, data)
    with _sole_writer(out, resume, rank):
        identity, saved = _check_run_folder(cfg, store, objects, out, resume, device)
        run = _build(cfg, data, out, device, rank, world, objects, identity, resume)
        run.started = started
        if saved is not None:
            _restore(run, saved)
            if rank == 0:
                repair_run_folder(out, saved)
            if run.start_epoch >= cfg.optim.epochs or run.budget_spent():
                return run.summary(started)
            log.info("resuming %s at epoch %d (s = %s)", out, run.start_epoch + 1, run.s_schedule.s)
        _open_run_folder(run, objects)
        feed = _feed(run, data, objects)
        for epoch in range(run.start_epoch, cfg.optim.epochs):
            record = _record_epoch(run, feed, epoch, _train_epoch(run, feed, epoch, progress))
            if run.writer is not None:
                run.writer.write_epoch(record, run.state(epoch))
                _pictures(run, objects, epoch + 1)
            if world > 1:
                dist.barrier()  # nobody starts the next epoch before rank 0's checkpoint is on disk
            if run.budget_spent():
                if rank == 0:
                    log.info("time budget: %.1f of %g min spent after epoch %d; the next epoch would not fit",
                             run.elapsed() / 60, cfg.optim.time_budget_s / 60, epoch + 1)
                break
        if run.writer is not None:
            run.writer.close()
        return run.summary(started)
