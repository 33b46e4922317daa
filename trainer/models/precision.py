"""The arithmetic the network runs in: float32, or bfloat16 matrix products (autocast) where the hardware has them.

bfloat16 is chosen per network shape and per machine, by measuring, never assumed (docs/TRAINING.md and
docs/EVALUATION.md, "The network on a CPU"): on this project's 2-core CPU it made decoding 2-2.5x faster, a
training step 1.2-4x, and on the same CPU under load a small step slower. A CPU without bfloat16 instructions
(AVX512-BF16 or AMX) never gets it: emulated bfloat16 is slower than float32.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import torch

from trainer.config import PRECISIONS

log = logging.getLogger(__name__)

MIN_GAIN = 1.1  # auto keeps bfloat16 only when the probe runs at least this much faster than float32


def cpu_bf16_instructions() -> str:
    """The CPU's bfloat16 instructions by name ("AMX" or "AVX512-BF16"), or "" when it has none."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return ""


def bf16_unavailable(device: torch.device) -> str:
    """Why `device` cannot run bfloat16 autocast fast, or "" when it can."""
    if device.type == "cuda":
        return "" if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name(device)} has no bfloat16"
    if device.type == "cpu":
        return "" if cpu_bf16_instructions() else "this CPU has neither AVX512-BF16 nor AMX instructions"
    return f"no bfloat16 autocast on {device.type}"


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The context the network runs in: autocast to `dtype`, or nothing for float32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def choose(requested: str, device: torch.device, probe: Callable[[torch.dtype | None], None] | None,
           what: str) -> torch.dtype | None:
    """The autocast dtype for `requested` on `device`: None (float32) or torch.bfloat16. auto: bf16 where the
    device has it and the probe finds it faster; fp32: float32 throughout (the same bits on one machine); bf16:
    refused without the hardware.

    probe(dtype) runs the network's real work once (a decoder call, a training step) in that precision (only
    auto calls it, so fp32 and bf16 may pass None); auto times it in both (one warm-up, then the best of three,
    alternating) and keeps bfloat16 only when it is at least MIN_GAIN x faster. `what` names the work in the log
    line that says what was chosen and why.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return None
    reason = bf16_unavailable(device)
    if requested == "bf16":
        if reason:
            raise ValueError(f"precision bf16: {reason}; use --precision fp32 or auto")
        return torch.bfloat16
    if reason:
        log.info("precision: fp32 (%s)", reason)
        return None
    seconds = _best_times(probe, (None, torch.bfloat16))
    gain = seconds[None] / seconds[torch.bfloat16]
    chosen = torch.bfloat16 if gain >= MIN_GAIN else None
    hardware = cpu_bf16_instructions() if device.type == "cpu" else torch.cuda.get_device_name(device)
    log.info("precision: %s (%s measured %.2fx as fast in bf16 as in fp32 on %s; bf16 is kept from %.2fx)",
             "bf16" if chosen else "fp32", what, gain, hardware, MIN_GAIN)
    return chosen


def _best_times(probe: Callable[[torch.dtype | None], None], dtypes: tuple) -> dict:
    for dtype in dtypes:
        probe(dtype)  # warm-up: kernels chosen, caches filled
    best = {dtype: float("inf") for dtype in dtypes}
    for _ in range(3):
        for dtype in dtypes:
            t0 = time.perf_counter()
            probe(dtype)
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best
