"""report.html: the eval report as one self-contained page (evaluation.mesh_page): the per-object table,
sortable, and each object's input image with its prediction and ground truth in one 3D view.

Each object's part (images, decimated meshes, input camera) was written by its task as OUT/page/<object_id>.json
(evaluation.object_eval.page_payload); this module only gathers them, so a resumed eval's page has every object.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.errors import first_line
from evaluation.mesh_page import Column, PageItem, write_page
from evaluation.metrics import FSCORE_TAU, HIGHER_IS_BETTER
from evaluation.object_eval import PAGE_FOLDER
from evaluation.report import ECD_NOTE, LABELS, OBJECT_TABLE_METRICS
from pipeline.schema.layout import object_file

log = logging.getLogger(__name__)

SHORT = {"silhouette_iou": "Silhouette IoU", "normal_consistency": "Normal cons."}  # the page's notes say more
COLUMNS = (Column("object_id", "object", numeric=False), Column("category", "category", numeric=False),
           *(Column(m, SHORT.get(m, LABELS.get(m, m)), True, HIGHER_IS_BETTER.get(m, True))
             for m in OBJECT_TABLE_METRICS),
           Column("seconds", "seconds", True, None), Column("status", "status", numeric=False))
MAX_PAYLOAD_BYTES = 64 << 20
"""a page/<object_id>.json larger than this is not ours (a 3,000-face pair is ~0.1 MB): left out, not read"""


def _payload(out_dir: Path, object_id: str) -> dict | None:
    path = object_file(out_dir / PAGE_FOLDER, object_id, ".json")
    if not path.is_file():
        return None  # evaluated with --no-pictures, or by an eval from before report.html
    try:
        if path.stat().st_size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than a page part can be")
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or not isinstance(payload.get("meshes"), list):
            raise ValueError("not a page part of `aps eval`")
        return payload
    except (OSError, ValueError) as exc:
        log.warning("%s: %s; %s shows in report.html without its view", path, first_line(exc), object_id)
        return None


def write_report_page(out_dir: str | os.PathLike, rows: Sequence[Mapping[str, object]], settings: Mapping[str, object],
                      pictures: Mapping[str, str], face_budget: int) -> tuple[Path, int]:
    """OUT/report.html from the rows (metrics.csv's) and each object's page part; returns (path, bytes)."""
    out_dir = Path(out_dir)
    items = []
    for row in rows:
        oid = str(row["object_id"])
        payload = _payload(out_dir, oid) or {}
        links = [("four views (PNG beside this page)", pictures[oid])] if oid in pictures else []
        items.append(PageItem(oid, row, [tuple(i) for i in payload.get("images", [])], payload.get("meshes", []),
                              payload.get("view"), links))
    notes = [f"{len(rows)} objects. Click a row to see its input image and its prediction beside the ground truth "
             "(drag to orbit, the two cameras move together; the view starts at the input camera). Meshes are shown "
             f"decimated to at most {face_budget} faces each; every metric was computed on the full mesh. "
             f"Distances in the normalised frame (longest side of the object = 1); F-score at tau = {FSCORE_TAU:g}. "
             "Definitions: docs/METRICS.md.", ECD_NOTE.replace("**", "")]
    path = out_dir / "report.html"
    size = write_page(path, "Evaluation report", COLUMNS, items, settings, notes, face_budget)
    return path, size
