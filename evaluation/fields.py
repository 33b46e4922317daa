"""The eval loop's make_field for a trained network: a checkpoint path and a device, loaded once per process.

CheckpointFields pickles as those few fields, so a Dask worker receives it once and loads the network itself on
its first object (torch.load with weights_only=True, inference.predictor); the loaded predictor stays in that
process for every later object, and is never pickled.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch

from evaluation.results import file_sha256
from inference.extract_mesh import Field
from inference.predictor import CPU_BATCH, GPU_BATCH, Predictor, load_predictor, resolve_checkpoint

__all__ = ["CPU_BATCH", "GPU_BATCH", "CheckpointFields"]
# network='client' predicts in threads (evaluation.executors.PREDICT_THREADS): lru_cache alone would let each
# thread's first call load its own copy of the network
_LOADING = threading.Lock()


@dataclass(frozen=True)
class CheckpointFields:
    """view -> the network's occupancy field for that view (the encoder runs once here, the decoder per query).

    checkpoint: a .ckpt file or a run folder; device: torch device of the network; threads: torch CPU threads
    of the process that loads it (None: leave torch's setting; 1 on a one-core Dask worker); batch_points:
    points per decoder call. On a CPU, 4096 is twice as fast as 65536 (the layers' activations stay in cache:
    benchmarks/bench_eval.py --levers); a GPU wants large batches (aps eval gives it 262144). sha256: when
    given, the bytes every process loads must have it (the eval's results are named by it: evaluation.results).
    precision: fp32 | auto | bf16 (trainer.models.precision); `aps eval` resolves auto once, in its own
    process, and gives every worker the answer, so that all objects of a run are predicted alike.
    """

    checkpoint: str
    device: str = "cpu"
    threads: int | None = None
    batch_points: int = CPU_BATCH
    sha256: str = ""
    precision: str = "fp32"

    def predictor(self) -> Predictor:
        path = resolve_checkpoint(self.checkpoint)
        stat = path.stat()  # a rewritten file (training went on) is loaded again, even by a long-lived worker
        with _LOADING:
            return _load(str(path), (stat.st_ino, stat.st_mtime_ns, stat.st_size), self.device, self.threads,
                         self.batch_points, self.sha256, self.precision)

    def __call__(self, view) -> Field:
        return self.predictor().field(view.image, view.K, view.Rt)


@functools.lru_cache(maxsize=2)
def _load(checkpoint: str, version: tuple[int, int, int], device: str, threads: int | None, batch_points: int,
          sha256: str, precision: str) -> Predictor:
    if sha256 and file_sha256(checkpoint) != sha256:
        raise RuntimeError(f"{checkpoint} changed since this eval started (its sha256 is no longer {sha256[:12]}...)")
    if threads:
        torch.set_num_threads(threads)
    return load_predictor(checkpoint, device, precision, batch_points)
