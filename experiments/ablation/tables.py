"""The ablation's tables, read from what the evals and runs wrote: Table 2 (variant x metric, mean ± std over
seeds), the failures behind its means, and the training-speed table with its all-inside reference.

Why apart from running: a table is a pure function of the files under OUT, so it can be rebuilt (and tested)
from finished runs without making any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from evaluation.metrics import TABLE_ORDER
from evaluation.report import label, markdown, read_metrics_csv
from experiments.ablation.plan import (
    KNOWN_VARIANTS,
    SPEED_BASE,
    SPEED_FRACTION,
    SPEED_TEST,
    VARIANTS,
    Layout,
    Variant,
    fixed,
    read_curve,
)


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, float | int) and not math.isnan(float(v))]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value); NaNs left out; (nan, nan) if none."""
    values = _finite(values)
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def object_mean(rows: Sequence[dict], metric: str) -> float:
    """Mean of a metric over an eval's objects (NaN values, e.g. ECD of an edge-free part, left out)."""
    values = _finite(r.get(metric) for r in rows)
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _eval_rows(layout: Layout, variant: Variant, seed: int, limit: int | None) -> list[dict] | None:
    """An eval's metrics.csv rows (the first `limit` objects, split order), or None when it has not finished."""
    if not (layout.eval_dir(variant, seed) / "eval.json").is_file():
        return None
    return read_metrics_csv(layout.eval_dir(variant, seed) / "metrics.csv")[:limit]


def _variant(name: str) -> Variant:
    return KNOWN_VARIANTS.get(name) or fixed(float(name.split("s=")[1].rstrip(")")))


def variant_table(layout: Layout, names: Sequence[str], seeds: Sequence[int],
                  limit: int | None = None) -> list[list[str]]:
    """Table 2 shape: variant x metric, 'mean ± std' over the seeds whose eval finished, plus how many
    (object, seed) pairs got no surface (scored with the worst values, docs/METRICS.md "Failures")."""
    table = [["variant", *[label(m) for m in TABLE_ORDER], "no surface", "seeds", "test objects"]]
    for name in names:
        per_seed = [r for s in seeds if (r := _eval_rows(layout, _variant(name), s, limit)) is not None]
        if not per_seed:
            table.append([name, *["not run"] * len(TABLE_ORDER), "", "0", "0"])
            continue
        cells = []
        for metric in TABLE_ORDER:
            mean, std = mean_std([object_mean(rows, metric) for rows in per_seed])
            cells.append(f"{_fmt(mean)} ± {_fmt(std)}" if len(per_seed) > 1 else _fmt(mean))
        # objects (summed over seeds) whose mesh is empty and so scored with the worst surface values
        no_surface = sum(str(r.get("status", "ok")) != "ok" for rows in per_seed for r in rows)
        table.append([name, *cells, str(no_surface), str(len(per_seed)),
                      "/".join(sorted({str(len(r)) for r in per_seed}))])
    return table


def failure_table(layout: Layout, names: Sequence[str], seeds: Sequence[int],
                  limit: int | None = None) -> list[list[str]]:
    """What drives the means of table2, pooled over the seeds' (object, seed) pairs: empty meshes (scored √3,
    0), meshes without a single edge point where the reference has edges (ECD = √3, docs/METRICS.md), and the
    medians of IoU and Chamfer-L1, which such worst values do not move."""
    import statistics

    table = [["variant", "(object, seed) pairs", "no surface", "ECD = √3: no predicted edge",
              "median IoU", "median Chamfer-L1"]]
    for name in names:
        rows = [r for s in seeds for r in _eval_rows(layout, _variant(name), s, limit) or []]
        if not rows:
            continue
        ok = [r for r in rows if str(r.get("status", "ok")) == "ok"]
        no_edge = sum(float(r.get("n_edge_pred") or 0) == 0 and float(r.get("n_edge_ref") or 0) > 0 for r in ok)
        table.append([name, str(len(rows)), str(len(rows) - len(ok)), str(no_edge),
                      _fmt(statistics.median(_finite(r.get("iou") for r in rows))),
                      _fmt(statistics.median(_finite(r.get("chamfer_l1") for r in rows)))])
    return table


def epochs_to_reach(curve: Sequence[dict[str, float]], target: float) -> tuple[int, float] | None:
    """First epoch whose val_iou >= target and the training seconds up to it (validation time excluded)."""
    seconds = 0.0
    for row in curve:
        seconds += row["seconds"]
        if row["val_iou"] >= target:
            return int(row["epoch"]), seconds
    return None


def speed_rows(layout: Layout, seeds: Sequence[int], reference: float = math.nan) -> list[dict[str, object]]:
    """Per seed: fpn+binary's final val IoU, the 95% target, and when each of the two variants reached it;
    `reference` (the all-inside val IoU) is carried along so the target can be judged against it."""
    rows = []
    for seed in seeds:
        base = read_curve(layout.run_dir(VARIANTS[SPEED_BASE], seed))
        test = read_curve(layout.run_dir(VARIANTS[SPEED_TEST], seed))
        if not base or not test:
            continue
        final = base[-1]["val_iou"]
        target = SPEED_FRACTION * final
        row: dict[str, object] = {"seed": seed, "epochs": len(base), "binary_final_val_iou": final,
                                  "adaptive_final_val_iou": test[-1]["val_iou"], "target_val_iou": target,
                                  "all_inside_val_iou": reference}
        for key, curve in (("binary", base), ("adaptive", test)):
            hit = epochs_to_reach(curve, target)
            row[f"{key}_epochs"] = hit[0] if hit else None
            row[f"{key}_seconds"] = round(hit[1], 1) if hit else None
            row[f"{key}_seconds_per_epoch"] = round(sum(r["seconds"] for r in curve) / len(curve), 2)
        rows.append(row)
    return rows


def speed_markdown(rows: Sequence[dict[str, object]]) -> str:
    def reached(row, key):
        if row[f"{key}_epochs"] is None:
            return f"not reached in {row['epochs']}"
        return f"{row[f'{key}_epochs']} ({row[f'{key}_seconds']:.0f} s)"

    table = [["seed", "fpn+binary final val IoU", f"target ({SPEED_FRACTION:.0%})", "fpn+binary: epochs (s)",
              "fpn+adaptive: epochs (s)", "fpn+adaptive final val IoU", "every point inside"]]
    for r in rows:
        table.append([str(r["seed"]), _fmt(r["binary_final_val_iou"]), _fmt(r["target_val_iou"]),
                      reached(r, "binary"), reached(r, "adaptive"), _fmt(r["adaptive_final_val_iou"]),
                      _fmt(r["all_inside_val_iou"])])
    return markdown(table)


def all_inside_val_iou(data: Path, split: str = "val", on: str = "stored") -> float:
    """The validation IoU of a network that calls every point inside: the inside fraction of the split's stored
    points (tp = inside, fp = outside, fn = 0), over all 10,000 points of each object (training validates on
    a fixed subset of them, so its value differs slightly). The stored points lie near the surface and about
    half are inside, so this trivial answer scores high; curves must be read against it. nan: no such split.
    on = "uniform" (training with data.val_on = uniform): over the uniform points only.
    """
    import numpy as np

    from pipeline.schema.layout import N_UNIFORM
    from pipeline.schema.read import open_store

    store = open_store(data)
    n_uniform = int(store.params.get("n_uniform", N_UNIFORM))
    inside = [store.read(o, "inside")[-n_uniform:] if on == "uniform" else store.read(o, "inside")
              for o in store.split(split)]
    return float(np.concatenate(inside).mean()) if inside else math.nan
