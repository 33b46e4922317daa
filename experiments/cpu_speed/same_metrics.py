"""Are the metrics the same? Two `aps eval` folders of the same objects, per object side by side, with the
largest differences against the issue's tolerances (IoU within 0.005, Chamfer-L1 within 2%).

    python experiments/cpu_speed/same_metrics.py REFERENCE_DIR OTHER_DIR [--names "fp32 (main)" "bf16"]
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

COLUMNS = ("iou", "chamfer_l1", "normal_consistency", "fscore", "ecd", "silhouette_iou", "n_queries")
IOU_TOLERANCE, CHAMFER_TOLERANCE = 0.005, 0.02


def read(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as f:
        return {row["object_id"]: row for row in csv.DictReader(f)}


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def table(reference: dict, other: dict, names: tuple[str, str]) -> str:
    ids = [i for i in reference if i in other]
    lines = ["| object | " + " | ".join(f"{c} {names[0]} / {names[1]}" for c in COLUMNS[:5]) + " |",
             "| --- |" + " ---: |" * 5]
    worst = {"iou": 0.0, "chamfer_l1": 0.0, "normal_consistency": 0.0, "fscore": 0.0}
    for oid in ids:
        cells = []
        for c in COLUMNS[:5]:
            a, b = number(reference[oid][c]), number(other[oid][c])
            cells.append(f"{a:.4f} / {b:.4f}")
            if c in worst and math.isfinite(a) and math.isfinite(b):
                diff = abs(b - a) / abs(a) if c == "chamfer_l1" else abs(b - a)
                worst[c] = max(worst[c], diff)
        lines.append(f"| {oid} | " + " | ".join(cells) + " |")
    means = []
    for c in COLUMNS[:5]:
        pairs = [(number(reference[i][c]), number(other[i][c])) for i in ids]
        pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        means.append(f"{sum(a for a, _ in pairs) / max(len(pairs), 1):.4f} / "
                     f"{sum(b for _, b in pairs) / max(len(pairs), 1):.4f}")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    verdict = (f"\n{len(ids)} objects. Largest difference per object: IoU {worst['iou']:.4f} (tolerance "
               f"{IOU_TOLERANCE}: {'met' if worst['iou'] <= IOU_TOLERANCE else 'NOT met'}), Chamfer-L1 "
               f"{100 * worst['chamfer_l1']:.2f}% (tolerance {100 * CHAMFER_TOLERANCE:.0f}%: "
               f"{'met' if worst['chamfer_l1'] <= CHAMFER_TOLERANCE else 'NOT met'}), normal consistency "
               f"{worst['normal_consistency']:.4f}, F-score {worst['fscore']:.4f}.\n")
    return "\n".join(lines) + "\n" + verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--names", nargs=2, default=("reference", "other"))
    args = parser.parse_args()
    print(table(read(args.reference), read(args.other), tuple(args.names)))


if __name__ == "__main__":
    main()
