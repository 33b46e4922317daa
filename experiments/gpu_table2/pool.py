"""Several GPU Table 2 calls (one seed each) pooled: each variant's metrics as mean ± std over the seeds, paired
per-object differences against fpn+binary (same seed, same test part), the s each schedule ends at, and the
validation curves of every seed in one figure.

Reads only the table2.json files the calls brought back (their `objects` and `curves`), so the pooled tables can be
rebuilt here from what is committed: `python -m experiments.gpu_table2 pool DIR... --out DIR`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from common.atomic import atomic_write_text
from evaluation.report import markdown
from experiments.ablation.tables import mean_std, object_mean
from experiments.cpu_quality.figures import save_panels

BASE = "fpn+binary"
"""the variant every other one is paired against"""
METRICS = (("iou", "IoU", 3), ("fscore", "F@1%", 3), ("fscore_2pct", "F@2%", 3), ("chamfer_l1", "Chamfer-L1", 4),
           ("normal_consistency", "normal consistency", 3))
POOLED_MD, POOLED_JSON, POOLED_PNG = "table2-pooled.md", "table2-pooled.json", "table2-curves.png"


def load_calls(paths: Sequence[str | Path]) -> list[dict]:
    """The table2.json of each call (a file or the folder holding it), one seed each, in seed order; two calls of
    the same seed are refused (one would silently count twice)."""
    calls = []
    for path in map(Path, paths):
        file = path / "table2.json" if path.is_dir() else path
        record = json.loads(file.read_text())
        record["_file"] = str(file)
        calls.append(record)
    seeds = [_seed(c) for c in calls]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two calls of the same seed among {[c['_file'] for c in calls]}: seeds {seeds}")
    return sorted(calls, key=_seed)


def _seed(call: dict) -> int:
    return int(call["settings"]["plan"]["seeds"][0])


def _value(row: dict, key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _pm(values: Sequence[float], digits: int) -> str:
    mean, std = mean_std(values)
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def variants(calls: Sequence[dict]) -> list[str]:
    """The variants every call trained, in the first call's order."""
    return [v for v in calls[0]["objects"] if all(v in c["objects"] for c in calls)]


def pooled_table(calls: Sequence[dict]) -> list[list[str]]:
    """One row per variant: each metric's per-seed test mean, as mean ± sample std over the seeds; the meshes
    with no surface; the s each seed ended at."""
    table = [["variant", "seeds", *(name for _, name, _ in METRICS), "no surface", "final s (per seed)"]]
    for name in variants(calls):
        finals = [c["curves"][name][-1].get("s") if c["curves"].get(name) else None for c in calls]
        s_text = "binary" if all(s is None or math.isnan(float(s)) for s in finals) else \
            " / ".join("-" if s is None else f"{float(s):.2f}" for s in finals)
        table.append([name, str(len(calls)),
                      *(_pm([object_mean(c["objects"][name], key) for c in calls], digits)
                        for key, _, digits in METRICS),
                      str(sum(1 for c in calls for r in c["objects"][name] if r.get("status") != "ok")), s_text])
    return table


def _diffs(calls: Sequence[dict], name: str, base: str, key: str) -> list[float]:
    """name's metric minus base's on the same seed and test part, over every (seed, part) pair both scored."""
    diffs = []
    for call in calls:
        ref = {r["object_id"]: r for r in call["objects"][base]}
        diffs += [_value(r, key) - _value(ref[r["object_id"]], key) for r in call["objects"][name]
                  if r["object_id"] in ref]
    return [d for d in diffs if not math.isnan(d)]


def paired_table(calls: Sequence[dict], base: str = BASE) -> list[list[str]]:
    """One row per variant: the mean over (seed, test part) pairs of its metric minus `base`'s on the same seed and
    part, ± the standard error of that mean, and in how many pairs it is the better one."""
    table = [["variant", "pairs", "IoU − binary", "better IoU", "F@1% − binary", "better F@1%",
              "Chamfer-L1 − binary", "better Chamfer"]]
    for name in variants(calls):
        if name == base:
            continue
        cells = [name, str(len(_diffs(calls, name, base, "iou")))]
        for key, digits, lower_is_better in (("iou", 3, False), ("fscore", 3, False), ("chamfer_l1", 4, True)):
            diffs = _diffs(calls, name, base, key)
            if len(diffs) < 2:
                cells += ["n/a", "n/a"]
                continue
            sem = statistics.stdev(diffs) / math.sqrt(len(diffs))
            better = sum(1 for d in diffs if (d < 0 if lower_is_better else d > 0))
            cells += [f"{statistics.fmean(diffs):+.{digits}f} ± {sem:.{digits}f}", f"{better}/{len(diffs)}"]
        table.append(cells)
    return table


def speed_rows(calls: Sequence[dict]) -> list[list[str]]:
    """Per seed: the epochs (and seconds) each label-schedule variant takes to first reach 95% of fpn+binary's
    final validation IoU. Only variants validated on the same points as fpn+binary are compared (the gain
    variant validates on uniform points: another scale)."""
    table = [["seed", "fpn+binary final val IoU", "target (95%)", *(
        f"{v}: epochs (s)" for v in ("fpn+binary", "fpn+fixed(s=0.5)", "fpn+adaptive"))]]
    for call in calls:
        curves = call["curves"]
        if not curves.get(BASE):
            continue
        final = curves[BASE][-1]["val_iou"]
        target = 0.95 * final
        row = [str(_seed(call)), f"{final:.3f}", f"{target:.3f}"]
        for name in ("fpn+binary", "fpn+fixed(s=0.5)", "fpn+adaptive"):
            hit = next((r for r in curves.get(name, []) if r["val_iou"] >= target), None)
            row.append("never" if hit is None else f"{int(hit['epoch'])} ({hit['elapsed_s']:.0f} s)")
        table.append(row)
    return table


def curves_figure(calls: Sequence[dict], path: Path) -> None:
    """PATH (PNG): validation IoU and s against the epoch, one colour per variant, one line per seed."""
    import matplotlib.pyplot as plt

    fig, (ax_iou, ax_s) = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(variants(calls)):
        for j, call in enumerate(calls):
            curve = call["curves"].get(name) or []
            epochs = [r["epoch"] for r in curve]
            label = name if j == 0 else None
            style = "--" if name == "fpn+adaptive-gain" else "-"
            ax_iou.plot(epochs, [r["val_iou"] for r in curve], style, color=colours[i % len(colours)], lw=1,
                        label=label)
            s = [math.nan if r.get("s") is None else float(r["s"]) for r in curve]  # binary: None (strict JSON)
            if not all(math.isnan(v) for v in s):
                ax_s.plot(epochs, s, style, color=colours[i % len(colours)], lw=1, label=label)
    ax_iou.set(xlabel="epoch", ylabel="validation IoU",
               title="validation IoU (dashed: on uniform points; others: on stored points)")
    ax_s.set(xlabel="epoch", ylabel="s", title="s of the soft labels (one line per seed)")
    save_panels(fig, (ax_iou, ax_s), path)


def write_pooled(calls: Sequence[dict], out: Path) -> dict:
    """OUT/table2-pooled.md, .json and table2-curves.png -> the pooled record."""
    out.mkdir(parents=True, exist_ok=True)
    first = calls[0]
    plan = first["settings"]["plan"]
    machine = first["machine"]
    record = {"seeds": [_seed(c) for c in calls], "pooled": pooled_table(calls), "paired": paired_table(calls),
              "speed": speed_rows(calls), "plan": plan, "machine": machine,
              "training_seconds": {v: [c["runs"][v].get("training_seconds") for c in calls] for v in variants(calls)}}
    lines = [f"# Table 2 on {machine.get('gpu') or 'the CPU'}: {len(calls)} seeds pooled", "",
             f"Preset `{plan['train_preset']}`, {plan['epochs']} epochs, `--set {' '.join(plan['train_set'])}`, seeds "
             f"{', '.join(map(str, record['seeds']))}; scored on every test object at {plan['eval_resolution']}^3 "
             "(coarse-to-fine), each network at its label's own level.", "",
             "## Mean ± std over the seeds (each seed: the mean over the test objects)", "",
             markdown(record["pooled"]), "",
             f"## Paired against {BASE} (same seed, same test part; ± the standard error of the mean difference)", "",
             markdown(record["paired"]), "",
             f"## Epochs to 95% of {BASE}'s final validation IoU (validated on the same stored points)", "",
             markdown(record["speed"]), ""]
    atomic_write_text(out / POOLED_MD, "\n".join(lines))
    atomic_write_text(out / POOLED_JSON, json.dumps(record, indent=1))
    curves_figure(calls, out / POOLED_PNG)
    return record
