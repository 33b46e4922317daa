"""report.html: a real eval (the true field, tests/evaluation/test_runner.py) written as one offline page, then
opened in Debian's chromium: no error, the 3D view draws and turns, the table sorts, rows switch the view."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import trimesh

from evaluation.config import EvalConfig
from evaluation.mesh_page import Column, PageItem, encode_meshes, write_page
from evaluation.render import load_source_mesh
from evaluation.runner import evaluate_store
from pipeline.schema import open_store
from tests.browser import body_column, canvas_pixels, changed_fraction, drag, drawn_fraction, opened
from tests.evaluation.test_runner import true_field

BUDGET = 500


@pytest.fixture(scope="module")
def report(eval_store, module_tmp):
    store = open_store(eval_store)
    out = module_tmp("page") / "eval"
    config = EvalConfig(resolution=64, coarse=16, n_samples=5_000, silhouette_views=2, page_faces=BUDGET)
    rows = evaluate_store(store, true_field(store), out, config, progress=False)
    return store, out, rows


def blocks(html: str) -> tuple[dict, dict[int, dict]]:
    """The page's table JSON and its per-row JSON blocks, as the page's script reads them."""
    table = json.loads(re.search(r'<script type="application/json" id="aps-table">(.*?)</script>', html).group(1))
    items = {int(i): json.loads(text) for i, text in
             re.findall(r'<script type="application/json" id="aps-item-(\d+)">(.*?)</script>', html)}
    return table, items


def decoded(record: dict) -> tuple[np.ndarray, np.ndarray]:
    q = np.frombuffer(base64.b64decode(record["positions"]), "<u2").reshape(-1, 3)
    index = np.frombuffer(base64.b64decode(record["indices"]), f"<u{record['index_bits'] // 8}").reshape(-1, 3)
    return np.asarray(record["origin"]) + q / 65535 * np.asarray(record["extent"]), index


def test_the_page_holds_every_object_with_both_meshes_within_the_face_budget(report):
    store, out, rows = report
    html = (out / "report.html").read_text()
    table, items = blocks(html)
    assert [r["id"] for r in table["rows"]] == [r["object_id"] for r in rows] == store.split("test")
    assert table["rows"][0]["values"]["iou"] == pytest.approx(rows[0]["iou"], abs=1e-6)  # numbers, not text
    assert set(items) == set(range(len(rows)))
    for index, row in enumerate(rows):
        item = items[index]
        assert [m["name"] for m in item["meshes"]] == ["prediction", "ground truth"]
        assert item["images"][0]["src"].startswith("data:image/png;base64,")  # nothing outside the file
        info, ref = store.info(row["object_id"]), store.load(row["object_id"], ["scale", "center"])
        truth = trimesh.Trimesh(*load_source_mesh(info, float(ref["scale"]), ref["center"]), process=False)
        full = {"prediction": trimesh.load(out / "meshes" / f"{row['object_id']}.ply"), "ground truth": truth}
        for mesh in item["meshes"]:
            vertices, faces = decoded(mesh)
            assert len(faces) == mesh["faces"] <= BUDGET and faces.max() < len(vertices)
            assert len(faces) > 0.8 * BUDGET or len(faces) == len(full[mesh["name"]].faces)  # small ones whole
            # decimated, not moved: the shown vertices stay on the part (the 64^3 truth is within a voxel)
            _, distance, _ = trimesh.proximity.closest_point(truth, vertices[::7])
            assert np.median(distance) < 0.01 and distance.max() < 0.05
    assert "http://" not in html and "https://" not in html and "src=\"http" not in html  # offline


def test_text_from_files_stays_text(tmp_path, chromium):
    hostile = '</script><img src=x onerror="window.owned=1">'
    sphere = trimesh.creation.icosphere(3)
    items = [PageItem(hostile, {"object_id": hostile, "iou": 0.5},
                      meshes=encode_meshes([("prediction", (1, 0.5, 0.2), sphere.vertices, sphere.faces)], 300))]
    path = tmp_path / "page.html"
    write_page(path, "hostile", [Column("object_id", "object", False), Column("iou", "IoU")], items, {"k": hostile})
    assert hostile not in path.read_text()
    with opened(chromium, path) as (page, errors):
        assert page.evaluate("window.owned") is None and page.locator("#table img").count() == 0
        assert body_column(page, 0) == [hostile] and page.locator("#title").text_content() == hostile
        assert not errors


def test_the_page_in_a_real_browser(report, chromium):
    store, out, rows = report
    with opened(chromium, out / "report.html") as (page, errors):
        # the 3D view draws: the prediction on the left, the ground truth on the right, both seen
        start = canvas_pixels(page)
        left, right = np.array_split(start, 2, axis=1)
        assert drawn_fraction(left) > 0.02 and drawn_fraction(right) > 0.02
        # dragging turns both (the cameras are linked)
        drag(page, 160, 60)
        turned = canvas_pixels(page)
        assert changed_fraction(start, turned) > 0.02
        for before, after in zip(np.array_split(start, 2, axis=1), np.array_split(turned, 2, axis=1), strict=True):
            assert changed_fraction(before, after) > 0.01
        # the start view comes back with a double click; the wheel zooms
        page.locator("#canvas").dblclick()
        assert changed_fraction(start, canvas_pixels(page)) < 0.01
        page.mouse.wheel(0, 400)
        assert drawn_fraction(canvas_pixels(page)) < drawn_fraction(start)
        # overlaid: one view, the ground truth through the prediction
        page.select_option("#mode", "overlay")
        assert changed_fraction(start, canvas_pixels(page)) > 0.02

        # the table sorts by a number column, both ways, and by text
        ious = {str(r["object_id"]): float(r["iou"]) for r in rows}
        headers = page.locator("#table th")
        page.locator("#table th[data-key=iou]").click()
        assert body_column(page, 0) == sorted(ious, key=ious.get)
        page.locator("#table th[data-key=iou]").click()
        assert body_column(page, 0) == sorted(ious, key=ious.get, reverse=True)
        headers.first.click()
        assert body_column(page, 0) == sorted(ious)

        # a row click shows that object
        before = canvas_pixels(page)
        page.locator("#table tbody tr").nth(1).click()
        assert page.evaluate("window.apsViewer.selected") == sorted(ious)[1]
        assert page.locator("#title").text_content() == sorted(ious)[1]
        assert changed_fraction(before, canvas_pixels(page)) > 0.02
        assert not errors and page.evaluate("window.apsViewer.error") is None


def test_page_faces_is_checked_before_anything_runs():
    with pytest.raises(ValueError, match="--page-faces"):
        EvalConfig(page_faces=10)
