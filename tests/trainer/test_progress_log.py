"""Progress bars in a log (stderr not a terminal, as in CI): each bar must visibly move, a line at a time."""

from __future__ import annotations

import re

from tqdm import tqdm

from common.progress import bar_options
from trainer.config import override, preset
from trainer.loop import run_training


def _counts(log: str, total: int) -> list[int]:
    """The n of every `n/total` the log shows, in order."""
    return [int(n) for n in re.findall(rf"\b(\d+)/{total}\b", log)]


def test_a_bar_in_a_log_prints_a_line_every_tenth_and_its_end(capsys):
    for _ in tqdm(range(65), desc="epoch 1/1", **bar_options(total=65, leave=False)):
        pass
    lines = capsys.readouterr().err.splitlines()
    counts = _counts("\n".join(lines), 65)
    assert counts[0] == 0 and counts[-1] == 65, lines
    assert any(0 < n < 65 for n in counts), f"the bar never moved before its end: {lines}"
    assert counts == sorted(counts) and len(lines) <= 13, lines  # 0, every 10%, the end
    assert all("\r" not in line and line.startswith("epoch 1/1:") for line in lines), lines


def test_training_in_a_log_is_one_line_an_epoch(analytic_store, tmp_path, capsys, caplog):
    """2 training objects x 10 repeats in batches of 2: 10 steps in the epoch. In a log the epoch's bar (11 lines
    an epoch were most of the demo's log) gives way to the epoch's own line."""
    import logging

    cfg = override(preset("cpu-test"), ["optim.epochs=2", "data.repeats=10", "data.batch_size=2"])
    with caplog.at_level(logging.INFO, logger="trainer.writer"):
        run_training(cfg, analytic_store, tmp_path / "run", progress=True)
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1/2", "epoch 2/2"], epochs


def test_a_bars_end_is_printed_once(capsys):
    with tqdm(total=4, desc="eval test", **bar_options(total=4)) as bar:
        for _ in range(4):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert sum(bool(re.search(r"\b4/4\b", line)) for line in lines) == 1, lines


def test_a_long_bar_in_a_log_prints_every_hundredth(capsys):
    """A ShapeNet-sized preprocess (44k objects, hours): a line every 1%, not one every 10% (~25 min apart)."""
    for _ in tqdm(range(5000), desc="objects", **bar_options(total=5000)):
        pass
    counts = _counts(capsys.readouterr().err, 5000)
    assert counts[0] == 0 and counts[-1] == 5000 and 90 <= len(counts) <= 103 and 50 in counts, counts[:5]
