"""The catalogue source: standard parts built from bd_warehouse's tables inside preprocess, on real geometry."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from pipeline import schema
from pipeline.manifest import ManifestError, load_manifest
from pipeline.runner import run_preprocess
from pipeline.sources import SourceError, check_source, hash_source, load_source_mesh
from pipeline.sources.catalogue import build_part, list_catalogue, load_catalogue_part
from pipeline.stages.load import MeshError

pytest.importorskip("bd_warehouse")
ROOT = Path(__file__).resolve().parents[3]

MANIFEST = """
name = "cad-test"
[params]
views = {{ n_views = 2, image_size = 48, up_axis = "z" }}
n_reference = 2000
{sources}
[split]
method = "lists"
test = {test}
"""


def _source(family: str, **keys) -> str:
    lines = ["[[sources]]", 'type = "catalogue"', f'family = "{family}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def _manifest(tmp_path, sources: list[str], test: list[str], name: str = "m.toml"):
    path = tmp_path / name
    path.write_text(MANIFEST.format(sources="\n".join(sources), test=json.dumps(test)))
    return load_manifest(path)


def test_listing_names_parts_in_the_catalogues_words():
    nuts = list_catalogue({"type": "catalogue", "family": "nut", "standards": ["iso4032"], "sizes": ["M6-1"]})
    assert [s.object_id for s in nuts] == ["nut-iso4032-M6-1"]
    assert nuts[0].source == "bd_warehouse:HexNut(fastener_type='iso4032', size='M6-1')"
    assert json.loads(nuts[0].extras)["tessellation"] == {"tolerance": 0.001, "angular_deg": 12.0}
    screws = list_catalogue({"type": "catalogue", "family": "screw", "classes": ["SocketHeadCapScrew"],
                             "standards": ["iso4762"], "sizes": ["M6-1"], "lengths": ["shortest", "longest"]})
    assert [s.object_id for s in screws] == ["screw-iso4762-M6-1-L8", "screw-iso4762-M6-1-L60"]
    keys = list_catalogue({"type": "catalogue", "family": "key", "category": "shaft_key", "sizes": ["10"]})
    assert [s.object_id for s in keys] == ["shaft_key-din6885-A-d10-L12", "shaft_key-din6885-B-d10-L12"]
    assert {s.category for s in keys} == {"shaft_key"}


def test_bad_catalogue_tables_are_refused_with_the_reason():
    with pytest.raises(SourceError, match="family must be one of nut, washer"):
        check_source({"type": "catalogue", "family": "sprocket"})
    with pytest.raises(SourceError, match="unknown class"):
        list_catalogue({"type": "catalogue", "family": "nut", "classes": ["HexBolt"]})
    with pytest.raises(SourceError, match="no part passes the filters"):
        list_catalogue({"type": "catalogue", "family": "nut", "sizes": ["M999"]})
    with pytest.raises(SourceError, match="lengths must be a list of shortest, middle, longest"):
        check_source({"type": "catalogue", "family": "screw", "lengths": ["all"]})


@pytest.mark.parametrize("cls, args, across_mm", [
    ("HexNut", {"size": "M6-1", "fastener_type": "iso4032"}, 10.0),       # ISO 4032 M6: 10 mm across flats
    ("PlainWasher", {"size": "M6", "fastener_type": "iso7089"}, 12.0),    # ISO 7089 M6: outer diameter 12 mm
])
def test_a_part_is_a_closed_mesh_of_its_catalogue_size(cls, args, across_mm):
    source = f"bd_warehouse:{cls}(...)"
    extras = json.dumps({"catalogue": {"class": cls, "args": args}, "tessellation": {"tolerance": 1e-3,
                                                                                    "angular_deg": 12.0}})
    vertices, faces = load_catalogue_part(source, extras)
    mesh = trimesh.Trimesh(vertices * 1000, faces, process=False)  # metres -> mm
    assert mesh.is_watertight and mesh.volume > 0
    assert min(np.ptp(mesh.vertices[:, :2], axis=0)) == pytest.approx(across_mm, rel=0.01)
    again, _ = load_catalogue_part(source, extras)
    assert np.array_equal(vertices, again)  # a pure function of its parameters


def test_the_tessellation_keeps_its_stated_tolerance():
    """An O-ring is a torus: every vertex lies on it, and every triangle centroid within the linear deflection."""
    part = build_part("ORing", {"size": "214", "o_ring_type": "iso3601"})
    bbox = part.bounding_box()
    tol = 1e-3
    extras = json.dumps({"catalogue": {"class": "ORing", "args": {"size": "214", "o_ring_type": "iso3601"}},
                         "tessellation": {"tolerance": tol, "angular_deg": 12.0}})
    v, f = load_catalogue_part("bd_warehouse:ORing", extras)
    v = v * 1000 - np.array([bbox.center().X, bbox.center().Y, bbox.center().Z])
    tube = (bbox.size.Z) / 2  # cross-section radius
    ring = (bbox.size.X / 2) - tube
    def off(p):
        return np.abs(np.hypot(np.hypot(p[:, 0], p[:, 1]) - ring, p[:, 2]) - tube)
    longest = max(bbox.size.X, bbox.size.Y, bbox.size.Z)
    assert off(v).max() < 1e-3 * tube
    assert off(v[f].mean(axis=1)).max() <= tol * longest


def test_records_read_back_from_a_store_cannot_name_other_code():
    """source and extras come back from a store file at evaluation: only the catalogue's own classes build."""
    extras = json.dumps({"catalogue": {"class": "Popen", "args": {"args": "touch /tmp/x"}}})
    with pytest.raises(MeshError, match="not a catalogue class"):
        load_source_mesh("bd_warehouse:Popen", extras)
    extras = json.dumps({"catalogue": {"class": "HexNut", "args": {"size": ["M6-1"], "fastener_type": "iso4032"}}})
    with pytest.raises(MeshError, match="arguments must be strings and numbers"):
        load_source_mesh("bd_warehouse:HexNut", extras)
    extras = json.dumps({"catalogue": {"class": "HexNut", "args": {"size": "M6-1", "fastener_type": "iso4032"}},
                         "tessellation": {"tolerance": 1e-12}})
    with pytest.raises(MeshError, match="out of range"):
        load_source_mesh("bd_warehouse:HexNut", extras)


def test_the_content_hash_is_the_part_and_the_library_versions():
    import hashlib

    def digest(source):
        h = hashlib.sha256()
        hash_source(h, source)
        return h.hexdigest()

    a = "bd_warehouse:HexNut(fastener_type='iso4032', size='M6-1')"
    assert digest(a) == digest(a) != digest(a.replace("M6-1", "M8-1.25"))


def test_by_category_splits_each_category_exactly(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n' + _source("o_ring") + _source("snap_ring") +
                    '[split]\nmethod = "hash"\nexact = true\nby_category = true\nval = 0.15\ntest = 0.15\n')
    counts = collections.Counter((spec.category, split) for spec, split in load_manifest(path).objects())
    for category, n in (("o_ring", 349), ("snap_ring", 174)):
        assert counts[(category, "test")] == round(0.15 * n) and counts[(category, "val")] == round(0.15 * n)
        assert sum(counts[(category, s)] for s in ("train", "val", "test")) == n
    path.write_text('name = "s"\n' + _source("o_ring") + '[split]\nmethod = "hash"\nby_category = true\n')
    with pytest.raises(ManifestError, match="needs exact = true"):
        load_manifest(path)


def test_catalogue_parts_through_preprocess_one_failing_alone(tmp_path):
    """Generated in the workers: a nut, a washer, a ball bearing (13 solids: rings, cage and balls) and a flange
    whose table row the library cannot build, which fails alone with the library's reason; a rerun skips all."""
    bearing = "bearing-AngularContactBall-SKT-M15-42-13"
    m = _manifest(tmp_path, [
        _source("nut", standards=["iso4032"], sizes=["M6-1"]),
        _source("washer", standards=["iso7089"], sizes=["M6"]),
        _source("bearing", classes=["SingleRowAngularContactBallBearing"], sizes=["M15-42-13"]),
        _source("flange", classes=["WeldNeckFlange"], nps=["14"], flange_classes=[300]),
    ], test=[bearing])
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 3 and len(summary.failed) == 1
    error = summary.failed[0].error
    assert "flange-WeldNeck-NPS14-class300-Raised" == summary.failed[0].job.object_id
    assert "bd_warehouse cannot build it" in error and "WeldNeckFlange" in error and "\n" not in error
    store = schema.open_store(tmp_path / "store")
    nut = store.load("nut-iso4032-M6-1")
    assert nut["scale"] == pytest.approx(0.0115, rel=0.05)  # metres: the nut's longest side, 11.05 mm across corners
    record = store.info(bearing)
    assert record["source"].startswith("bd_warehouse:SingleRowAngularContactBallBearing(")
    again = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert again.done == 0 and again.skipped == 3 and len(again.failed) == 1

    # the datasheet of the first run: counts per category and split, the failure by its reason, costs by step
    sheet = subprocess.run([sys.executable, str(ROOT / "scripts" / "datasheet.py"), str(tmp_path / "store"),
                            "--run", summary.run_id], capture_output=True, text=True, check=True).stdout
    assert "| bearing | 0 | 0 | 1 | 1 |" in sheet and "| **all** | **2** | **0** | **1** | **3** |" in sheet
    assert "| flange | 1 | MeshError: WeldNeckFlange: bd_warehouse cannot build it" in sheet
    assert re.search(r"\| category \| objects \| generate \|", sheet)  # generation is the costliest step

    # the multi-solid part's stored inside flags against OpenCASCADE's own classifier of the exact solids
    from build123d import Vector

    part = build_part("SingleRowAngularContactBallBearing", {"size": "M15-42-13", "bearing_type": "SKT"})
    arrays = store.load(bearing)  # decoded: points and distances in the normalised frame
    points, udf = np.asarray(arrays["points"], np.float64), np.asarray(arrays["udf"])
    rng = np.random.default_rng(0)
    far = np.flatnonzero(udf > 3e-3)  # three times the tessellation's deflection (1e-3 of the longest side)
    pick = rng.choice(far, 300, replace=False)
    original_mm = (points[pick] * float(arrays["scale"]) + arrays["center"]) * 1000
    solids = part.solids()
    occ = np.array([any(s.is_inside(Vector(*p)) for s in solids) for p in original_mm])
    stored = np.asarray(arrays["inside"])[pick]
    assert occ.any() and (~occ).any()
    assert (occ == stored).mean() >= 0.997


def test_a_threaded_screw_is_several_closed_solids():
    """threads = true models the thread: separate solids overlapping the core, each closed, ~10x the triangles."""
    source = {"type": "catalogue", "family": "screw", "classes": ["HexHeadScrew"], "standards": ["iso4017"],
              "sizes": ["M6-1"]}
    plain, = list_catalogue(source)
    threaded, = list_catalogue({**source, "threads": True})
    assert threaded.object_id == plain.object_id + "-threaded" and "simple=False" in threaded.source
    v, f = load_catalogue_part(threaded.source, threaded.extras)
    v0, f0 = load_catalogue_part(plain.source, plain.extras)
    assert len(f) > 5 * len(f0)
    assert not trimesh.Trimesh(v, f, process=False).is_watertight  # thread meets core: edges of four triangles
    # closed all the same: the exact winding number is an integer everywhere off the surface (1 in the core)
    import igl

    center = v.mean(axis=0)
    probes = center + np.random.default_rng(0).uniform(-1, 1, (200, 3)) * np.ptp(v, axis=0)
    w = igl.winding_number(v, f, probes)
    assert np.abs(w - np.round(w)).max() < 1e-6 and (np.round(w) != 0).any()
