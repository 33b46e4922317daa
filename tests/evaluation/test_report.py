"""metrics.csv layout and the two table shapes, on rows whose means are known by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.report import (
    FIRST_COLUMNS,
    category_table,
    compare_table,
    load_runs,
    markdown,
    read_metrics_csv,
    write_metrics_csv,
)

ROWS = [
    {"object_id": "a1", "category": "arm", "iou": 0.5, "chamfer_l1": 0.01, "ecd": 0.02, "normal_consistency": 0.9,
     "fscore": 0.6, "silhouette_iou": 0.7, "status": "ok"},
    {"object_id": "a2", "category": "arm", "iou": 0.7, "chamfer_l1": 0.03, "ecd": math.nan,
     "normal_consistency": 0.8, "fscore": 0.4, "silhouette_iou": 0.9, "status": "ok"},
    {"object_id": "g1", "category": "gripper", "iou": 0.0, "chamfer_l1": math.sqrt(3), "ecd": math.sqrt(3),
     "normal_consistency": 0.0, "fscore": 0.0, "silhouette_iou": 0.0, "status": "no_surface: ..."},
]


def test_metrics_csv_starts_with_the_contract_columns_and_reads_back(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv(ROWS, path)
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header[:7]) == FIRST_COLUMNS == ("object_id", "category", "iou", "chamfer_l1", "ecd",
                                                   "normal_consistency", "fscore")
    back = read_metrics_csv(path)
    assert [r["object_id"] for r in back] == ["a1", "a2", "g1"]
    assert back[1]["iou"] == 0.7 and math.isnan(back[1]["ecd"])


def test_table1_rows_are_metrics_columns_are_categories_and_the_mean_over_objects():
    table = category_table(ROWS)
    assert table[0] == ["metric", "arm", "gripper", "mean"]
    iou = next(r for r in table if r[0].startswith("IoU"))
    assert [float(x) for x in iou[1:]] == pytest.approx([0.6, 0.0, 0.4])  # mean over all 3 objects
    ecd = next(r for r in table if r[0].startswith("ECD"))
    # an undefined ECD (NaN) is left out of the means
    assert [float(x) for x in ecd[1:]] == pytest.approx([0.02, math.sqrt(3), (0.02 + math.sqrt(3)) / 2])
    assert table[-1] == ["objects", "2", "1", "3"]
    assert "| metric | arm | gripper | mean |" in markdown(table)


def test_compare_table_has_one_row_per_run(tmp_path):
    for name, rows in (("binary", ROWS), ("adaptive", ROWS[:2])):
        (tmp_path / name).mkdir()
        write_metrics_csv(rows, tmp_path / name / "metrics.csv")
    table = compare_table(load_runs([tmp_path / "binary", tmp_path / "adaptive" / "metrics.csv"]))
    assert [r[0] for r in table[1:]] == ["binary", "adaptive"]
    assert float(table[2][1]) == pytest.approx(0.6)  # IoU of the second run
    assert table[1][-2:] == ["3", "1"] and table[2][-2:] == ["2", "0"]  # objects, failed


def test_a_file_that_is_not_a_metrics_csv_is_a_clear_error(tmp_path):
    bad = tmp_path / "metrics.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_metrics_csv(bad)
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        load_runs([tmp_path / "nowhere"])
