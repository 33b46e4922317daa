"""The network's precision: fp32 is float32 throughout, bf16 only where the hardware has it, auto measured."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from inference.predictor import load_predictor
from trainer.checkpoint import save_checkpoint
from trainer.config import preset, to_dict
from trainer.models import build_model
from trainer.models.precision import bf16_unavailable, choose

CPU = torch.device("cpu")
HAS_BF16 = not bf16_unavailable(CPU)


def test_fp32_never_probes_and_an_unknown_precision_is_refused():
    def probe(_dtype):
        raise AssertionError("fp32 needs no measurement")

    assert choose("fp32", CPU, probe, "a test") is None
    with pytest.raises(ValueError, match="unknown precision 'fp16'; choose one of auto, fp32, bf16"):
        choose("fp16", CPU, probe, "a test")


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bfloat16 instructions")
def test_auto_keeps_bf16_only_when_the_probe_is_faster(caplog):
    import time

    def bf16_slow(dtype):
        time.sleep(0.02 if dtype is torch.bfloat16 else 0.001)

    def bf16_fast(dtype):
        time.sleep(0.001 if dtype is torch.bfloat16 else 0.02)

    with caplog.at_level(logging.INFO, logger="trainer.models.precision"):
        assert choose("auto", CPU, bf16_slow, "the probe") is None
        assert choose("auto", CPU, bf16_fast, "the probe") is torch.bfloat16
    assert "precision: fp32 (the probe measured 0." in caplog.text
    assert "precision: bf16 (the probe measured" in caplog.text
    assert choose("bf16", CPU, bf16_slow, "the probe") is torch.bfloat16  # asked for: not measured


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bfloat16 instructions")
def test_bf16_is_refused_and_auto_is_fp32_on_a_cpu_without_the_instructions():
    with pytest.raises(ValueError, match="precision bf16: this CPU has neither AVX512-BF16 nor AMX"):
        choose("bf16", CPU, lambda _dtype: None, "a test")
    assert choose("auto", CPU, lambda _dtype: None, "a test") is None


def _checkpoint(tmp_path):
    """A checkpoint of a real (untrained, batch norm not the identity) cpu-test network, and that network."""
    torch.manual_seed(0)
    cfg = preset("cpu-test")
    model = build_model(cfg.model, load_pretrained=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "net.ckpt"
    save_checkpoint(path, {"config": to_dict(cfg), "model": model.state_dict(), "epoch": 0, "best_val_f1": 0.0})
    return path, model.eval(), cfg


@pytest.mark.parametrize("precision", ["fp32", "auto"] + (["bf16"] if HAS_BF16 else []))
def test_a_checkpoint_predicts_the_field_of_the_networks_definition(tmp_path, precision):
    """A checkpoint's weights (the parameters did not change with the folded first layer) give, through the
    Predictor, the occupancy of the decoder's definition (z sampled from the maps, every layer in float32):
    to float32 rounding in fp32, within 2e-3 in bf16 for this untrained network (a trained one's logits move by
    up to ~0.7 in bf16: docs/EVALUATION.md, which is why eval and load_predictor default to fp32)."""
    path, model, cfg = _checkpoint(tmp_path)
    predictor = load_predictor(path, precision=precision)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    K = np.array([[60.0, 0, 23.5], [0, 60.0, 23.5], [0, 0, 1]], np.float32)
    Rt = np.concatenate([np.eye(3), [[0.02], [-0.01], [2.0]]], axis=1).astype(np.float32)
    points = rng.uniform(-0.55, 0.55, (5000, 3)).astype(np.float32)
    got = predictor.field(image, K, Rt)(points)

    from trainer.views import prepare_view

    img, K_scaled = prepare_view(torch.from_numpy(image), K, cfg.data.image_size)
    with torch.no_grad():
        maps = model.feature_extractor(img[None])
        want = torch.sigmoid(model.decode_unfolded(maps, torch.from_numpy(points)[None], K_scaled[None],
                                                   torch.from_numpy(Rt)[None], cfg.data.image_size))[0].numpy()
    tolerance = 1e-6 if predictor.precision == "fp32" else 2e-3
    assert np.abs(got - want).max() <= tolerance


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bfloat16 instructions")
def test_a_bf16_run_resumes_in_fp32_and_its_checkpoint_loads(analytic_store, tmp_path, caplog):
    """precision is how, not what, a run trains: a bf16 run (autocast, fused Adam) resumes in fp32 and back, its
    weights stay float32 (a checkpoint of either loads anywhere), and the run's log says what it ran in."""
    from trainer.checkpoint import load_checkpoint
    from trainer.config import override
    from trainer.loop import run_training

    def cfg(*more):
        return override(preset("cpu-test"), ["data.repeats=2", "data.batch_size=2", *more])

    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        run_training(cfg("optim.epochs=1", "precision=bf16"), analytic_store, out, progress=False)
        run_training(cfg("optim.epochs=2", "precision=fp32"), analytic_store, out, resume=True, progress=False)
    state = load_checkpoint(out / "last.ckpt")
    assert state["epoch"] == 1 and state["config"]["precision"] == "fp32"
    assert all(v.dtype in (torch.float32, torch.int64) for v in state["model"].values())
    assert all(group.get("fused") for group in state["optimizer"]["param_groups"])
    history = [row["loss"] for row in state["history"]]
    assert len(history) == 2 and all(np.isfinite(history))
    predictor = load_predictor(out, precision="fp32")
    assert predictor.precision == "fp32"


def test_a_cpu_predictor_decodes_in_cache_sized_batches(tmp_path):
    """load_predictor on a CPU decodes CPU_BATCH points a call (aps reconstruct used 65,536: 2.8x slower in fp32),
    and the batch does not change the field."""
    from inference.predictor import CPU_BATCH

    path, _, _ = _checkpoint(tmp_path)
    predictor = load_predictor(path)
    assert predictor.batch_points == CPU_BATCH == 4096
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    K = np.array([[50.0, 0, 19.5], [0, 50.0, 19.5], [0, 0, 1]], np.float32)
    Rt = np.concatenate([np.eye(3), [[0.0], [0.0], [2.0]]], axis=1).astype(np.float32)
    points = rng.uniform(-0.5, 0.5, (9000, 3)).astype(np.float32)
    small = predictor.field(image, K, Rt)(points)
    predictor.batch_points = 65536
    np.testing.assert_allclose(predictor.field(image, K, Rt)(points), small, atol=1e-6)
