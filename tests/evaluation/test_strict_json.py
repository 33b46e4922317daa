"""Every JSON file `aps eval` writes is strict JSON (issue 22, S9): a metric that is undefined for an object
(ECD of a smooth reference without edge points, NaN in metrics.csv) is null in objects/<id>.json, not the
bare NaN that JSON readers other than Python's refuse, and a resumed run reads it back as NaN. A real
preprocessed sphere, the real eval loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluation.config import EvalConfig
from evaluation.report import read_metrics_csv
from evaluation.runner import evaluate_store
from pipeline.schema import open_store
from tests.evaluation import fields
from tests.evaluation.conftest import preprocessed_sphere


def strict(path) -> object:
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def sphere_store(module_tmp):
    """One test object, an icosphere: a smooth reference, so its ECD is undefined."""
    path, _ = preprocessed_sphere(module_tmp, subdivisions=4, n_reference=20000)
    return open_store(path)


def test_an_undefined_metric_is_null_in_the_json_and_nan_again_on_resume(sphere_store, tmp_path):
    config = EvalConfig(resolution=32, coarse=8, n_samples=5000, silhouette_views=1, pictures=False)
    (row,) = evaluate_store(sphere_store, lambda view: fields.sphere(0.45), tmp_path, config, progress=False)
    assert row["status"] == "ok" and math.isnan(row["ecd"])  # no edge point on the reference
    for path in [tmp_path / "eval.json", tmp_path / "resume.json", *sorted((tmp_path / "objects").glob("*.json"))]:
        strict(path)
    assert strict(tmp_path / "objects" / "ball-sphere.json")["row"]["ecd"] is None
    # a rerun skips the object and reads its record back: the same NaN in metrics.csv and the rows
    (again,) = evaluate_store(sphere_store, lambda view: fields.sphere(0.45), tmp_path, config, progress=False)
    assert math.isnan(again["ecd"]) and again["iou"] == row["iou"]
    (csv_row,) = read_metrics_csv(tmp_path / "metrics.csv")
    assert math.isnan(csv_row["ecd"]) and np.isclose(csv_row["iou"], row["iou"])
