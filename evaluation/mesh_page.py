"""One self-contained HTML page of meshes to turn in the browser: a sortable table, and per row its images and
its meshes in one WebGL view (orbit, zoom, prediction and ground truth side by side with linked cameras, or
overlaid, or one alone). `aps eval` writes it as report.html, `aps reconstruct` as reconstruct.html.

Everything is inside the file (our own viewer, evaluation/mesh_page.js; images as data URLs; meshes decimated to
a face budget, positions quantised to 16 bits in the object's box), so it opens offline, from a mail or a
network share. Each row's payload sits in its own inert <script type="application/json"> block and is decoded
only when the row is shown, so a 1,000-object page opens as fast as its table. Text from files (object ids,
categories, statuses) reaches the page as JSON and is put in by textContent, never as markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text

PAGE_FACES = 3000
"""default face budget of each mesh on a page: ~40 KB per mesh, ~0.1 MB per eval object with its ground truth"""
MIN_PAGE_FACES = 100
PAGE_VERSION = 1
ASSETS = Path(__file__).with_name("mesh_page.js"), Path(__file__).with_name("mesh_page.css")
PRED_RGB = (0.93, 0.55, 0.25)
GT_RGB = (0.55, 0.68, 0.85)


def check_page_faces(budget: int, option: str = "--page-faces") -> None:
    """Refuse a face budget decimate cannot meet (a mesh of fewer than 100 faces shows no shape)."""
    if not (isinstance(budget, int) and budget >= MIN_PAGE_FACES):
        raise ValueError(f"{option} must be an integer >= {MIN_PAGE_FACES}, got {budget!r}")


def decimate(vertices: np.ndarray, faces: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(V', 3) float32, (F', 3) int64 with F' <= budget faces (quadric error decimation, open3d); unchanged when
    the mesh is within budget. The page shows the shape, not the mesh: metrics are always on the full mesh.

    A mesh above 10x budget is first clustered on a grid of ~1.2 sqrt(budget) cells per side (~10x budget faces):
    quadric decimation of a 256^3 marching-cubes mesh (400k faces) alone took 5 s, longer than its prediction."""
    vertices, faces = np.asarray(vertices), np.asarray(faces)
    if len(faces) <= budget:  # shared vertices only: an STL repeats each one per triangle
        unique, inverse = np.unique(vertices.astype(np.float32), axis=0, return_inverse=True)
        return unique, inverse.reshape(-1)[faces].astype(np.int64)
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.astype(np.float64)),
                                     o3d.utility.Vector3iVector(faces.astype(np.int32)))
    mesh.remove_duplicated_vertices()  # an STL's triangles share no vertex: decimated apart they would crack
    if len(faces) > 10 * budget:
        extent = float(np.ptp(vertices, axis=0).max())
        mesh = mesh.simplify_vertex_clustering(extent / (1.2 * math.sqrt(budget)))
    mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(budget))
    mesh.remove_unreferenced_vertices()
    out_v, out_f = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int64)
    if len(out_f) > budget:  # quadric decimation stops short on some meshes: drop the rest evenly
        out_f = out_f[np.linspace(0, len(out_f) - 1, budget).astype(np.int64)]
    return out_v, out_f


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()


def encode_meshes(meshes: Sequence[tuple[str, tuple[float, float, float], np.ndarray, np.ndarray]],
                  budget: int) -> list[dict[str, object]]:
    """[(name, rgb, vertices (V, 3), faces (F, 3))] -> the page's mesh records, decimated to `budget` faces each
    and quantised to uint16 in their common box (so the meshes of one row stay registered: ~1e-5 of the box)."""
    kept = [(name, rgb, *decimate(v, f, budget)) for name, rgb, v, f in meshes]
    points = [v for _, _, v, f in kept if len(v) and len(f)]
    if points:
        lo = np.min([p.min(axis=0) for p in points], axis=0).astype(np.float64)
        hi = np.max([p.max(axis=0) for p in points], axis=0).astype(np.float64)
    else:
        lo, hi = np.zeros(3), np.ones(3)
    extent = np.maximum(hi - lo, 1e-9)
    records = []
    for name, rgb, v, f in kept:
        if not (len(v) and len(f)):
            records.append({"name": name, "rgb": list(rgb), "faces": 0})
            continue
        q = np.clip(np.rint((v - lo) / extent * 65535), 0, 65535).astype(np.uint16)
        index = f.astype(np.uint16 if len(v) <= 65536 else np.uint32)
        records.append({"name": name, "rgb": [round(c, 3) for c in rgb], "faces": int(len(f)),
                        "origin": [float(x) for x in lo], "extent": [float(x) for x in extent],
                        "positions": _b64(q), "indices": _b64(index), "index_bits": 8 * index.itemsize})
    return records


def png_data_url(image: np.ndarray, max_side: int = 384) -> str:
    """An (H, W, 3|4) uint8 image as a PNG data URL, shrunk to max_side pixels on its longer side."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image))
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def view_from_camera(Rt: np.ndarray) -> dict[str, list[float]]:
    """The page's starting camera from a stored view, Rt (3, 4) world -> camera (OpenCV axes: y down): its
    centre -R^T t, and the world axis nearest its up direction (-y of the camera), which the orbit turns about."""
    R, t = np.asarray(Rt, np.float64)[:, :3], np.asarray(Rt, np.float64)[:, 3]
    up = -R[1]
    axis = int(np.argmax(np.abs(up)))
    snapped = np.zeros(3)
    snapped[axis] = math.copysign(1.0, up[axis])
    return {"eye": [float(x) for x in -R.T @ t], "up": [float(x) for x in snapped]}


@dataclass
class PageItem:
    """One row of the page: its table values (column key -> number or text), images [(caption, data URL)],
    mesh records (encode_meshes) and where the camera starts (view_from_camera; None: a three-quarter view)."""

    row_id: str
    values: Mapping[str, object]
    images: Sequence[tuple[str, str]] = ()
    meshes: Sequence[Mapping[str, object]] = ()
    view: Mapping[str, Sequence[float]] | None = None
    links: Sequence[tuple[str, str]] = field(default_factory=tuple)
    """[(text, relative path)] shown under the view (files beside the page; they do not travel with it)"""


@dataclass
class Column:
    key: str
    label: str
    numeric: bool = True
    higher_is_better: bool | None = None


def _json_block(value: object) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>' or '<!--'); numbers finite (_plain makes NaN null)."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(value: object) -> object:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return "" if value is None else str(value)


def page_html(title: str, columns: Sequence[Column], items: Sequence[PageItem], settings: Mapping[str, object],
              notes: Sequence[str] = (), face_budget: int = PAGE_FACES) -> str:
    """The whole page as text. Numbers stay numbers (the table sorts them as numbers; NaN shows as 'nan')."""
    script, style = (p.read_text() for p in ASSETS)
    table = {"columns": [vars(c) for c in columns], "face_budget": face_budget, "version": PAGE_VERSION,
             "rows": [{"id": it.row_id, "has_view": bool(it.meshes or it.images),
                       "values": {c.key: _plain(it.values.get(c.key)) for c in columns}} for it in items]}
    blocks = []
    for index, it in enumerate(items):
        if it.meshes or it.images:
            payload = {"images": [{"caption": c, "src": s} for c, s in it.images], "meshes": list(it.meshes),
                       "view": it.view, "links": [{"text": t, "href": h} for t, h in it.links]}
            blocks.append(f'<script type="application/json" id="aps-item-{index}">{_json_block(payload)}</script>')
    settings_html = "".join(f"<li><b>{html.escape(str(k))}</b>: <code>{html.escape(str(v))}</code></li>"
                            for k, v in settings.items())
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{style}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<details><summary>settings</summary><ul>{settings_html}</ul></details>{notes_html}</header>
<div id="error" hidden></div>
<main>
<section id="list"><input id="filter" type="search" placeholder="filter rows (id, category, status)">
<div id="scroll"><table id="table"><thead></thead><tbody></tbody></table></div></section>
<section id="viewer">
<div id="title"></div>
<div id="images"></div>
<div id="controls">
<label>show <select id="mode">
<option value="side">side by side</option><option value="overlay">overlaid</option>
<option value="0">first mesh only</option><option value="1">second mesh only</option></select></label>
<button id="home" type="button" title="double-click the view does the same">start view</button>
<span class="hint">drag: orbit &middot; wheel: zoom &middot; shift-drag: pan</span></div>
<div id="stage"><canvas id="canvas"></canvas><div id="labels"></div></div>
<div id="links"></div>
</section>
</main>
<script type="application/json" id="aps-table">{_json_block(table)}</script>
{chr(10).join(blocks)}
<script>{script}</script>
</body></html>
"""


def write_page(path: str | os.PathLike, title: str, columns: Sequence[Column], items: Sequence[PageItem],
               settings: Mapping[str, object], notes: Sequence[str] = (), face_budget: int = PAGE_FACES) -> int:
    """Write the page atomically; returns its size in bytes."""
    text = page_html(title, columns, items, settings, notes, face_budget)
    atomic_write_text(Path(path), text)
    return len(text.encode())
