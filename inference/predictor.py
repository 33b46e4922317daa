"""Inference from a checkpoint: one image and its camera -> an occupancy field over the normalised frame.

This is the interface the evaluation stage and `aps reconstruct` call; it shares prepare_view (trainer.views)
with training, so an image is composited and resized exactly as the network saw its training views, and reads
a checkpoint through trainer.checkpoint's TrainingState, as a resume does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import BEST, LAST, CheckpointError, TrainingState, load_model_state, load_state
from trainer.config import TrainConfig, from_dict, to_dict
from trainer.labels import iso_level
from trainer.models import OccupancyNetwork, build_model, precision
from trainer.views import prepare_view

log = logging.getLogger(__name__)

CPU_BATCH = 4096
"""decoder points per call on a CPU: 2.8x as fast as 65,536 in fp32 (the layers' activations stay in cache;
docs/EVALUATION.md), and still the fastest with the folded first layer"""
GPU_BATCH = 1 << 18
"""... and on a GPU, which wants large batches"""


def resolve_checkpoint(path: str | Path) -> Path:
    """A .ckpt file as is; a run folder -> RUN/best.ckpt, else RUN/last.ckpt. A best.ckpt that is not the
    epoch the run's record (last.ckpt) names best, because the run was killed between writing last.ckpt and
    best.ckpt, is passed over for last.ckpt, which is then that epoch (`aps train --resume` repairs the folder)."""
    path = Path(path)
    if path.is_dir():
        if (path / BEST).is_file() and (path / LAST).is_file():
            return _record_best(path)
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run folder holds neither {BEST} nor {LAST}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    return path


def _record_best(folder: Path) -> Path:
    """Which of the two to use, decided once for each version of the two files (eval asks for every object)."""
    def version(name: str) -> tuple[int, int, int]:
        st = (folder / name).stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    return _record_best_of(folder, version(BEST), version(LAST))


@functools.lru_cache(maxsize=64)
def _record_best_of(folder: Path, _best: tuple[int, int, int], _last: tuple[int, int, int]) -> Path:
    best, last = folder / BEST, folder / LAST
    try:  # the records only (mmap: the weights are not read)
        record, held = load_state(last, mmap=True), load_state(best, mmap=True)
        want, has, newest = record.best_epoch(), held.epoch, record.epoch
    except (CheckpointError, KeyError, TypeError, ValueError):
        return best  # loading it says what is wrong
    if want is None or want == has or want != newest:
        return best
    log.warning("%s holds epoch %d, but the run's record names epoch %d best, which is %s (the run was stopped "
                "between writing the two; `aps train --resume` repairs it): using %s", best, has + 1, want + 1,
                LAST, last)
    return last


class Predictor:
    """A trained network in eval mode on one device, with its resolved config; `dtype` is the autocast dtype it
    runs in (None: float32; trainer.models.precision)."""

    def __init__(self, model: OccupancyNetwork, config: TrainConfig, device: torch.device, path: Path,
                 batch_points: int = CPU_BATCH, data: str = "", dtype: torch.dtype | None = None):
        self.model = model.eval()
        self.data = data  # the store it was trained on, as that machine named it ("" in older checkpoints)
        self.config = config
        self.device = device
        self.path = path
        self.batch_points = batch_points
        self.dtype = dtype
        self.level = 0.5
        """the occupancy level its meshes are extracted at (label_level: 0.5 unless it learnt a soft label)"""

    @property
    def precision(self) -> str:
        """fp32 or bf16: what the network runs in."""
        return "bf16" if self.dtype is torch.bfloat16 else "fp32"

    @property
    def image_size(self) -> int:
        """Side of the square image the network sees."""
        return self.config.data.image_size

    @torch.no_grad()
    def field(self, image: np.ndarray, K: np.ndarray, Rt: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Encode one view once; return p -> occupancy probability.

        image: uint8 (H, W, 3|4) (RGBA composited on white as in training); K: (3, 3) float32 intrinsics in
        pixels of that image; Rt: (3, 4) float32 normalised frame -> OpenCV camera. The returned callable
        takes (N, 3) float32 points in the normalised frame and returns (N,) float32 in [0, 1].
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"field: expected a uint8 image (H, W, 3|4), got {image.shape} {image.dtype}")
        img, K_scaled = prepare_view(torch.from_numpy(np.ascontiguousarray(image)).to(self.device),
                                     np.asarray(K, np.float32), self.image_size)
        with precision.autocast(self.device, self.dtype):
            code = self.model.encode(img[None])
        K_t = K_scaled.to(self.device)[None]
        Rt_t = torch.as_tensor(np.asarray(Rt, np.float32), device=self.device)[None]
        size = self.image_size

        @torch.no_grad()
        def occupancy(points: np.ndarray) -> np.ndarray:
            pts = np.asarray(points, np.float32)
            if pts.ndim != 2 or pts.shape[1] != 3:
                raise ValueError(f"field: expected points (N, 3), got {pts.shape}")
            out = np.empty(len(pts), np.float32)
            for i in range(0, len(pts), self.batch_points):
                chunk = torch.from_numpy(pts[i:i + self.batch_points]).to(self.device)[None]
                with precision.autocast(self.device, self.dtype):
                    logits = self.model.decode(code, chunk, K_t, Rt_t, size)
                out[i:i + len(chunk[0])] = torch.sigmoid(logits.float())[0].cpu().numpy()
            return out

        return occupancy


def load_predictor(path: str | Path, device: str = "cpu", precision: str = "fp32",
                   batch_points: int | None = None) -> Predictor:
    """A Predictor from a .ckpt file or a run folder (then RUN/best.ckpt, else RUN/last.ckpt), in `precision`
    (trainer.models.precision.choose; auto times a decoder call of batch_points points in both). fp32 by
    default: bf16 moves the 0.5-level of a trained network's field (docs/EVALUATION.md), so it is asked for.
    batch_points: decoder points per call (None: CPU_BATCH on a CPU, GPU_BATCH on a GPU)."""
    ckpt = resolve_checkpoint(path)
    dev = torch.device(device)
    saved = load_state(ckpt, map_location=dev)
    try:
        config = from_dict(saved.config)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: its config does not fit this code ({exc})") from exc
    model = build_model(config.model, load_pretrained=False)
    load_model_state(model, ckpt, saved, to_dict(config))
    rule = (f"{path} is a run folder: {ckpt.name}, the epoch of its best validation F1 (give RUN/last.ckpt for "
            "the last epoch); " if Path(path).is_dir() and ckpt.name == BEST else "")
    log.info("loaded %s (%sepoch %d, best val F1 %.4f)", ckpt, rule, saved.epoch + 1, saved.best_val_f1)
    if batch_points is None:
        batch_points = CPU_BATCH if dev.type == "cpu" else GPU_BATCH
    predictor = Predictor(model.to(dev), config, dev, ckpt, batch_points, saved.data)
    predictor.level = label_level(saved, config)
    predictor.dtype = _choose_precision(predictor, precision)
    return predictor


def trained_s(saved: TrainingState, config: TrainConfig) -> float | None:
    """The s of the label the checkpoint's weights last trained against (its epoch's history row); None for the
    binary label. A fixed label without a history row: its s_fixed; an adaptive one: its schedule's state."""
    if config.labels.mode == "binary":
        return None
    for row in reversed(saved.history or []):
        if row.get("epoch") == saved.epoch + 1 and isinstance(row.get("s"), int | float):
            return float(row["s"])
    if config.labels.mode == "fixed":
        return config.labels.s_fixed
    s = (saved.s_schedule or {}).get("s")
    return float(s) if isinstance(s, int | float) else None


def label_level(saved: TrainingState, config: TrainConfig) -> float:
    """The level to mesh this checkpoint at: trainer.labels.iso_level of the s it trained against (0.5 binary)."""
    return iso_level(trained_s(saved, config), config.labels.d_star)


def _choose_precision(predictor: Predictor, requested: str) -> torch.dtype | None:
    """The precision of a Predictor: as asked, or for auto measured by _decoder_probe."""
    probe = _decoder_probe(predictor) if requested == "auto" else None
    return precision.choose(requested, predictor.device, probe,
                            f"a decoder call of {_probe_points(predictor)} points")


def _probe_points(predictor: Predictor) -> int:
    return min(predictor.batch_points, 16384)


def _decoder_probe(predictor: Predictor) -> Callable[[torch.dtype | None], None]:
    """One decoder call of the predictor's batch (at most 16,384 points) on a grey image's code, in the given
    autocast dtype (the predictor's dtype is left at the last one asked: the caller sets the chosen one)."""
    size = predictor.image_size
    image = np.full((size, size, 3), 128, np.uint8)
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)
    Rt = np.concatenate([np.eye(3), [[0.0], [0.0], [2.0]]], axis=1).astype(np.float32)
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (_probe_points(predictor), 3)).astype(np.float32)
    fields = {}

    def decode(dtype: torch.dtype | None) -> None:
        predictor.dtype = dtype
        if dtype not in fields:
            fields[dtype] = predictor.field(image, K, Rt)
        fields[dtype](points)

    return decode
