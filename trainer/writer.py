"""The run folder's one writer (rank 0): config.json, and after each epoch its log lines, last.ckpt (best.ckpt when
validation F1 improved), metrics.csv, curves.png and the TensorBoard scalars; the loop hands it a record of the
epoch (EpochRecord) and the run's state (trainer.checkpoint.TrainingState) and writes nothing itself.
`repair_run_folder` makes best.ckpt and metrics.csv agree with last.ckpt again after a run was killed between them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import DiskFullError, atomic_write, atomic_write_text
from common.errors import first_line
from trainer.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    TrainingState,
    load_state,
    save_state,
    weights_state,
)
from trainer.config import BOUNDS_EPOCHS_MAX, TrainConfig, describe, to_dict
from trainer.labels import SChange

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "loss", "train_f1", "val_f1", "val_precision", "val_recall", "val_iou", "s", "lr",
                  "samples_per_s", "seconds", "elapsed_s")
WRITTEN = (LAST, BEST, "metrics.csv", "curves.png", "config.json")
"""the files of the run folder written by common.atomic (their stale temporaries are ours to remove)"""
SCALARS = ("loss", "train_f1", "val_f1", "val_precision", "val_recall", "val_iou", "samples_per_s")
"""the metrics each epoch adds to TensorBoard (and s, unless binary)"""


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured: its metrics row (METRIC_COLUMNS; epoch 1-based, s the value trained with), whether
    its validation F1 beat the run's best so far, and the change of s it caused (None: s stayed)."""

    row: dict
    improved: bool
    change: SChange | None


def metrics_text(history: list[dict]) -> str:
    """RUN/metrics.csv's text: METRIC_COLUMNS, one row per epoch (None as an empty cell)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    return buf.getvalue()


def _write_metrics(out: Path, history: list[dict]) -> None:
    atomic_write_text(out / "metrics.csv", metrics_text(history))


def epoch_progress(epoch: int, epochs: int, budget_s: float | None, elapsed_s: float | None) -> str:
    """How far a run is, for its log line: `12/50`, with `(3.1 of 6 min)` when it stops at a time budget; a
    budgeted preset's epoch bound (BOUNDS_EPOCHS_MAX) is only a cap and is not shown."""
    text = f"{epoch}" if epochs >= BOUNDS_EPOCHS_MAX else f"{epoch}/{epochs}"
    if budget_s:
        text += f" ({float(elapsed_s or 0.0) / 60:.1f} of {budget_s / 60:g} min)"
    return text


def curve_panels(history: list[dict]) -> dict[str, dict[str, list[float]]]:
    """What curves.png draws, panel title -> line label -> values by epoch: the loss, the validation scores
    (F1 and IoU of D(p) > 0.5; the IoU is the test metric's kind) beside the training F1, and s."""
    def series(key: str) -> list[float]:
        return [math.nan if r.get(key) is None else float(r[key]) for r in history]

    return {"training loss (BCE)": {"loss": series("loss")},
            "F1 and IoU of D(p) > 0.5": {"train F1": series("train_f1"), "val F1": series("val_f1"),
                                          "val IoU": series("val_iou")},
            "s (label softness)": {"s": series("s")}}


def _plot(out: Path, history: list[dict]) -> None:
    """RUN/curves.png: curve_panels against the epoch."""
    import matplotlib  # here, not at the top: a second of start-up that only rank 0's writes need

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    panels = curve_panels(history)
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        for name, values in lines.items():
            if name == "s" and all(math.isnan(v) for v in values):
                ax.text(0.5, 0.5, "binary labels: no s", ha="center", va="center", transform=ax.transAxes)
            elif name == "s":
                ax.step(epochs, values, where="post", marker="o")
            else:
                ax.plot(epochs, values, marker="o", label=name)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_title(title)
        if title != "training loss (BCE)":
            ax.set_ylim(0, 1)
        if len(lines) > 1:
            ax.legend()
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


class RunWriter:
    """Rank 0's writer of the run folder `out`: opening it writes config.json and starts the TensorBoard log."""

    def __init__(self, cfg: TrainConfig, out: Path):
        self.out = out
        self.epochs = cfg.optim.epochs
        self.budget_s = cfg.optim.time_budget_s
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
        log.debug("config:\n%s", describe(cfg))
        # here, not at the top: TensorBoard's import takes seconds, and only rank 0 of a training run needs it
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(out / "tensorboard"))

    def write_epoch(self, record: EpochRecord, state: TrainingState) -> None:
        """The epoch's log lines, then last.ckpt (best.ckpt when F1 improved), metrics.csv, curves.png and the
        TensorBoard scalars. A full disk raises DiskFullError saying how to go on."""
        row, s_used = record.row, record.row["s"]
        log.info("epoch %s: loss %.4f, train F1 %.4f, val F1 %.4f (P %.3f R %.3f IoU %.3f), s %s, "
                 "%.0f samples/s", epoch_progress(row["epoch"], self.epochs, self.budget_s, row.get("elapsed_s")),
                 row["loss"], row["train_f1"], row["val_f1"],
                 row["val_precision"], row["val_recall"], row["val_iou"],
                 "binary" if s_used is None else f"{s_used:.4f}", row["samples_per_s"])
        if record.change is not None:
            log.info("s changed after epoch %d: validation F1 %.4f, s %.4f -> %.4f",
                     row["epoch"], record.change.f1, record.change.old_s, record.change.new_s)
        try:
            # last.ckpt first: a kill before best.ckpt is written leaves a state the next --resume repairs from
            # last.ckpt (repair_run_folder); the other order would leave best.ckpt of an epoch the record never
            # saw
            save_state(self.out / LAST, state)
            if record.improved:  # the weights and the record: the resume state rides in last.ckpt only
                save_state(self.out / BEST, weights_state(state))
            _write_metrics(self.out, state.history)
            _plot(self.out, state.history)
        except DiskFullError as exc:
            rerun = "rerun with --resume" if (self.out / LAST).is_file() else "rerun"
            error = DiskFullError(f"{exc}; free space and {rerun}")
            error.errno = exc.errno
            raise error from exc
        for key in SCALARS:
            self.tensorboard.add_scalar(key, row[key], row["epoch"])
        if s_used is not None:
            self.tensorboard.add_scalar("s", s_used, row["epoch"])
        self.tensorboard.flush()

    def write_pictures(self, epoch: int, pictures: dict[str, np.ndarray]) -> None:
        """TensorBoard images `views/<object_id>` at this epoch: uint8 (H, W, 3) each (trainer.snapshots)."""
        for object_id, picture in pictures.items():
            self.tensorboard.add_image(f"views/{object_id}", picture, epoch, dataformats="HWC")
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def repair_run_folder(out: Path, state: TrainingState) -> None:
    """Make best.ckpt and metrics.csv agree with the run's record (last.ckpt's `state`: its history and best F1)
    again after a run was killed between its writes of one epoch (last.ckpt is written first), logging each
    repair. best.ckpt not of the record's best epoch is rewritten from last.ckpt (its weights and record) when that
    is the best epoch (the only case a kill can leave); otherwise its weights are gone, and that is said."""
    best_path, want = out / BEST, state.best_epoch()
    if want is not None:
        record = (want, state.best_val_f1)
        try:
            held = load_state(best_path, mmap=True)  # its record only: the weights are not read
            has: tuple[int, float] | str = (held.epoch, held.best_val_f1)
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            has = first_line(exc)
        if has != record:
            was = (f"held epoch {has[0] + 1} (val F1 {has[1]:.4f})" if isinstance(has, tuple) else
                   f"was unusable ({has})" if best_path.exists() else "was missing")
            if want == state.epoch:
                save_state(best_path, weights_state(state))
                log.warning("repaired %s: it %s, the run's record names epoch %d (val F1 %.4f) best; it is now "
                            "that epoch's weights, from last.ckpt (the run was stopped between the two writes)",
                            best_path, was, want + 1, record[1])
            else:
                log.warning("%s %s, but the run's record names epoch %d (val F1 %.4f) best, whose weights are no "
                            "longer on disk; it is replaced when validation F1 next beats %.4f",
                            best_path, was, want + 1, record[1], record[1])
    metrics = out / "metrics.csv"
    text = metrics_text(state.history)
    if not metrics.is_file() or metrics.read_bytes() != text.encode():  # bytes: the csv rows end in \r\n
        _write_metrics(out, state.history)
        log.warning("repaired %s: rewritten from the run's record (%d epochs)", metrics, len(state.history))
