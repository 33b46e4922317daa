"""`aps train` through typer, and the Predictor interface the evaluation stage calls."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from inference.predictor import load_predictor, resolve_checkpoint
from pipeline.schema import open_store
from trainer.checkpoint import CheckpointError
from trainer.cli import train

app = typer.Typer()
app.command()(train)


@pytest.fixture(scope="module")
def run_dir(analytic_store, module_tmp):
    out = module_tmp("cli") / "run"
    result = CliRunner().invoke(app, ["--data", str(analytic_store), "--out", str(out), "--preset", "cpu-test",
                                      "--epochs", "2", "--extractor", "fpn", "--labels", "fixed", "--s-fixed",
                                      "0.4", "--projection", "perspective", "--quiet",
                                      "--set", "data.repeats=2", "--set", "data.batch_size=2"])
    assert result.exit_code == 0, result.output
    assert "trained 2 epochs" in result.output and "best val F1" in result.output and "final s 0.4000" in result.output
    return out


def test_cli_writes_the_run_and_saves_the_options(run_dir):
    import json

    config = json.loads((run_dir / "config.json").read_text())
    assert config["labels"] == {**config["labels"], "mode": "fixed", "s_fixed": 0.4}
    assert config["model"]["projection"] == "perspective" and config["data"]["repeats"] == 2
    assert (run_dir / "last.ckpt").is_file()


def test_cli_refuses_bad_options(analytic_store, tmp_path):
    result = CliRunner().invoke(app, ["--data", str(analytic_store), "--out", str(tmp_path / "r"),
                                      "--extractor", "vit"])
    assert result.exit_code != 0 and "model.extractor must be one of" in str(result.exception)
    result = CliRunner().invoke(app, ["--data", str(analytic_store), "--out", str(tmp_path / "r"),
                                      "--set", "model.nonsense=1"])
    assert "unknown config field 'nonsense'" in str(result.exception)


def test_predictor_field(run_dir, analytic_store):
    predictor = load_predictor(run_dir)
    assert predictor.path == resolve_checkpoint(run_dir) and predictor.path.name in ("best.ckpt", "last.ckpt")
    assert predictor.image_size == 32 and predictor.config.model.projection == "perspective"
    o = open_store(analytic_store).load("box_b", ["images", "K", "Rt", "ref_uniform_points"])
    field = predictor.field(o["images"][1], o["K"][1], o["Rt"][1])
    points = o["ref_uniform_points"][:3000]
    values = field(points)
    assert values.shape == (3000,) and values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
    predictor.batch_points = 700  # batching must not change the answer (eval mode: no batch statistics)
    np.testing.assert_allclose(predictor.field(o["images"][1], o["K"][1], o["Rt"][1])(points), values, atol=1e-5)
    # RGBA is composited on white exactly as in training: the same picture as RGB on white gives the same field
    rgba = o["images"][1].astype(np.float32)
    alpha = rgba[..., 3:] / 255
    rgb = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    np.testing.assert_allclose(predictor.field(rgb, o["K"][1], o["Rt"][1])(points), values, atol=2e-3)


def test_predictor_errors(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="neither best.ckpt nor last.ckpt"):
        load_predictor(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_predictor(tmp_path / "missing.ckpt")
    predictor = load_predictor(run_dir / "last.ckpt")
    with pytest.raises(ValueError, match="uint8 image"):
        predictor.field(np.zeros((8, 8), np.uint8), np.eye(3), np.zeros((3, 4)))


def test_cli_options_reach_the_config_typed(monkeypatch, tmp_path):
    """A typed option goes to config.apply as the value typer made (no "k=v" text in between); --set is text,
    read by the field's type, and wins over an option for the same field."""
    import trainer.cli
    import trainer.loop

    applied, trained = [], []
    real_apply = trainer.cli.apply

    def spy_apply(cfg, values):
        applied.append(values)
        return real_apply(cfg, values)

    def no_training(cfg, data, out, **kwargs):
        trained.append(cfg)
        return trainer.loop.TrainingSummary(epochs=0, best_val_f1=0.0, final_s=None, seconds=0.0, out=out)

    monkeypatch.setattr(trainer.cli, "apply", spy_apply)
    monkeypatch.setattr(trainer.loop, "run_training", no_training)
    result = CliRunner().invoke(app, ["--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "cpu-test",
                                      "--epochs", "3", "--lr", "0.30000000000000004", "--extractor", "global",
                                      "--pretrained", "--set", "data.views=0,3", "--set", "optim.epochs=4"])
    assert result.exit_code == 0, result.output
    (values,) = applied
    assert values["optim.lr"] == 0.1 + 0.2 and type(values["optim.lr"]) is float
    assert values["model.extractor"] == "global" and values["model.pretrained"] is True
    assert values["data.views"] == (0, 3) and values["optim.epochs"] == 4  # --set, parsed, over --epochs 3
    (cfg,) = trained
    assert cfg.optim.lr == 0.1 + 0.2 and cfg.optim.epochs == 4 and cfg.data.views == (0, 3)


def test_a_run_folder_means_its_best_checkpoint_and_says_so(run_dir, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="inference.predictor"):
        predictor = load_predictor(run_dir)
    assert predictor.path == run_dir / "best.ckpt"
    assert f"{run_dir} is a run folder: best.ckpt, the epoch of its best validation F1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="inference.predictor"):
        load_predictor(run_dir / "last.ckpt")
    assert "is a run folder" not in caplog.text and "last.ckpt" in caplog.text
