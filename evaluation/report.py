"""metrics.csv, the paper's tables (Table 1: metric x category; Table 2: variant x metric) and report.md."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from common.atomic import atomic_write_text
from evaluation.metrics import FSCORE_TAU, FSCORE_TAU_2, HIGHER_IS_BETTER, METRIC_NAMES, TABLE_ORDER

FIRST_COLUMNS = ("object_id", "category", *METRIC_NAMES)  # the columns outside tools rely on (README, docs/METRICS.md)
EXTRA_COLUMNS = ("fscore_2pct", "chamfer_l2", "silhouette_iou", "precision", "recall", "n_edge_pred", "n_edge_ref",
                 "n_vertices", "n_faces", "n_queries", "seconds", "status")
COLUMNS = (*FIRST_COLUMNS, *EXTRA_COLUMNS)
TABLE_METRICS = (*TABLE_ORDER, "silhouette_iou")

LABELS = {
    "iou": "IoU",
    "chamfer_l1": "Chamfer-L1",
    "ecd": "ECD",
    "normal_consistency": "Normal consistency",
    "fscore": f"F-score@{100 * FSCORE_TAU:g}%",
    "fscore_2pct": f"F-score@{100 * FSCORE_TAU_2:g}%",
    "chamfer_l2": "Chamfer-L2",
    "silhouette_iou": "Silhouette IoU (weight-free, not DR-KFS)",
}

DR_KFS_NOTE = ("DR-KFS (the paper's visual similarity) is not reported: it needs the trained weights of "
               "its metric network, which cannot be fetched here. Silhouette IoU over several rendered views "
               "stands beside the other metrics as a weight-free visual similarity; it is not DR-KFS and its "
               "numbers do not compare with the paper's DR-KFS column.")


ECD_NOTE = ("Two values in the tables are not distances: ECD is **nan** for an object whose reference has no edge "
            "point (a smooth or finely rounded part: there is nothing to compare; category means leave it out), "
            "and **1.732** (sqrt 3, the unit cube's diagonal, the worst value) where the prediction has no edge "
            "point while the reference has some, or where there is no predicted surface at all "
            "(docs/METRICS.md, \"Failures\").")


def label(metric: str) -> str:
    """Column or row label with the paper's arrow: ↑ higher is better, ↓ lower is better."""
    return f"{LABELS.get(metric, metric)} {'↑' if HIGHER_IS_BETTER.get(metric, True) else '↓'}"


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def metrics_csv_text(rows: Iterable[Mapping[str, object]]) -> str:
    """One row per object, columns COLUMNS in that order (object_id, category, iou, chamfer_l1, ecd, ...)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k, "")) for k in COLUMNS})
    return buffer.getvalue()


def write_metrics_csv(rows: Iterable[Mapping[str, object]], path: str | os.PathLike) -> None:
    atomic_write_text(Path(path), metrics_csv_text(rows))


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, object]]:
    """Rows of a metrics.csv with the metric columns as floats; a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.csv here (is it an `aps eval` output?)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in FIRST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not an `aps eval` metrics.csv (missing columns {missing})")
        rows: list[dict[str, object]] = []
        for row in reader:
            parsed: dict[str, object] = dict(row)
            for name in TABLE_METRICS:
                if row.get(name) not in (None, ""):
                    parsed[name] = float(row[name])
            rows.append(parsed)
    return rows


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def category_table(rows: Sequence[Mapping[str, object]]) -> list[list[str]]:
    """Table 1 shape: one row per metric, one column per category, then the mean over all objects.

    The mean is over objects (the paper: "the mean value of each metric is computed over all samples"), so a
    category with more objects weighs more. Objects whose prediction failed count with their worst values.
    """
    categories = sorted({str(r["category"]) for r in rows})
    table = [["metric", *categories, "mean"]]
    for metric in TABLE_METRICS:
        if not any(metric in r and r[metric] != "" for r in rows):
            continue
        line = [label(metric)]
        for category in categories:
            line.append(_format(_mean([r.get(metric) for r in rows if r["category"] == category])))
        line.append(_format(_mean([r.get(metric) for r in rows])))
        table.append(line)
    counts = [str(sum(r["category"] == c for r in rows)) for c in categories]
    table.append(["objects", *counts, str(len(rows))])
    return table


def compare_table(runs: Sequence[tuple[str, Sequence[Mapping[str, object]]]]) -> list[list[str]]:
    """Table 2 shape: one row per variant (run), one column per metric (mean over its objects)."""
    table = [["variant", *[label(m) for m in TABLE_METRICS], "objects", "failed"]]
    for name, rows in runs:
        failed = sum(str(r.get("status", "ok")) != "ok" for r in rows)
        table.append([name, *[_format(_mean([r.get(m) for r in rows])) for m in TABLE_METRICS],
                      str(len(rows)), str(failed)])
    return table


def _for_reading(cell: str) -> str:
    """A table cell as people read it: 4 significant digits for measured values (the CSV keeps 6)."""
    if "." not in cell and "e" not in cell:
        return cell  # counts, names
    try:
        return f"{float(cell):.4g}"
    except ValueError:
        return cell


def markdown(table: Sequence[Sequence[str]]) -> str:
    header, *body = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_for_reading(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def table_csv_text(table: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    return buffer.getvalue()


def write_table(table: Sequence[Sequence[str]], stem: str | os.PathLike) -> None:
    """Write a table as STEM.md and STEM.csv."""
    stem = Path(stem)
    atomic_write_text(stem.with_suffix(".md"), markdown(table))
    atomic_write_text(stem.with_suffix(".csv"), table_csv_text(table))


def run_name(path: Path) -> str:
    """A variant's name in the comparison table: the eval output folder's name."""
    return path.parent.name if path.suffix == ".csv" else path.name


def load_runs(paths: Sequence[str | os.PathLike]) -> list[tuple[str, list[dict[str, object]]]]:
    """Eval output folders or metrics.csv files -> (variant name, rows); names made unique by their path."""
    resolved = [Path(p) / "metrics.csv" if Path(p).is_dir() else Path(p) for p in paths]
    names = [run_name(Path(p)) for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    return [(name, read_metrics_csv(path)) for name, path in zip(names, resolved, strict=True)]


OBJECT_TABLE_METRICS = ("iou", "chamfer_l1", "ecd", "normal_consistency", "fscore", "fscore_2pct", "silhouette_iou")


def object_table(rows: Sequence[Mapping[str, object]], pictures: Mapping[str, str]) -> list[list[str]]:
    """One row per object: id (linked to its picture), category, every metric, seconds, status."""
    table = [["object", "category", *(label(m) for m in OBJECT_TABLE_METRICS), "seconds", "status"]]
    for row in rows:
        oid = str(row["object_id"])
        name = f"[{oid}]({pictures[oid]})" if oid in pictures else oid
        table.append([name, str(row.get("category", "")), *(_format(row.get(m, "")) for m in OBJECT_TABLE_METRICS),
                      _format(row.get("seconds", "")), str(row.get("status", "ok"))])
    return table


def write_report(out_dir: str | os.PathLike, rows: Sequence[Mapping[str, object]],
                 settings: Mapping[str, object], pictures: Mapping[str, str]) -> Path:
    """DIR/report.md: settings, Table 1, failures, the DR-KFS note, the per-object table (each id linked to its
    picture) and one picture per object (four views)."""
    out_dir = Path(out_dir)
    lines = ["# Evaluation report", ""]
    lines += [f"- {k}: `{v}`" for k, v in settings.items()]
    lines += ["", "Distances (Chamfer-L1, ECD) are in the normalised frame: the unit cube, longest side "
              f"of the object = 1. F-scores at tau = {FSCORE_TAU:g} and {FSCORE_TAU_2:g} (1% and 2% of the "
              f"longest side). IoU on the reference uniform points of {settings.get('iou_box', 'the store')}. "
              "Definitions and the conversions to other papers' units: docs/METRICS.md.", "",
              "## Per category (Table 1 shape)", "", markdown(category_table(rows)), DR_KFS_NOTE, "",
              ECD_NOTE, ""]
    failed = [r for r in rows if str(r.get("status", "ok")) != "ok"]
    if failed:
        lines += ["## Objects without a proper prediction", "",
                  "Scored by the rule of docs/METRICS.md (\"Failures\"): worst surface metrics, IoU from the "
                  "field.",
                  ""]
        lines += [f"- `{r['object_id']}` ({r['category']}): {r.get('status')}" for r in failed]
        lines.append("")
    lines += ["## Per object", "", markdown(object_table(rows, pictures)), ""]
    lines += ["## Pictures", "", "Each picture: one row per view, the input view first (marked INPUT) and three "
              "stored views spread around the object, each with the prediction and the ground truth rendered "
              "alike from that view's camera: what the input view hides (thickness, depth, the far side) shows "
              "in the other rows.", ""]
    for row in rows:
        oid = str(row["object_id"])
        if oid in pictures:
            lines += [f"### {oid} ({row['category']}) — IoU {_format(row.get('iou'))}, "
                      f"Chamfer-L1 {_format(row.get('chamfer_l1'))}", "", f"![{oid}]({pictures[oid]})", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
