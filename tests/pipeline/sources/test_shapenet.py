"""ShapeNet v1 / v2 with 3D-R2N2 renderings: listing, the stage end to end on the checked-in manifests, and
broken models failing alone with their reason."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema
from pipeline.manifest import Manifest, ManifestError
from pipeline.runner import run_preprocess
from pipeline.sources import decode_extras
from pipeline.sources.shapenet import PAPER_CATEGORIES, R2N2_CATEGORIES
from tests.pipeline.sources.conftest import AIRPLANE, BENCH, CHAIR, SMALL, manifest_with_paths


def v1_manifest(copy, tmp_path):
    m = manifest_with_paths("shapenet-v1-r2n2.toml", {
        "/path/to/ShapeNetCore.v1": str(copy.v1), "/path/to/ShapeNetRendering": str(copy.renderings),
        "/path/to/IM-NET": str(copy.splits / "imnet")}, tmp_path)
    m.params = dict(SMALL)
    m.split["val_from_train"] = 0.0  # 6 train objects: keep them all for the assertions below
    return m


def test_r2n2_categories_and_the_papers_seven():
    assert len(R2N2_CATEGORIES) == 13 and len(set(R2N2_CATEGORIES.values())) == 13
    assert set(PAPER_CATEGORIES) <= set(R2N2_CATEGORIES.values()) and len(PAPER_CATEGORIES) == 7
    assert R2N2_CATEGORIES[AIRPLANE] == "airplane" and R2N2_CATEGORIES[CHAIR] == "chair"


def test_v1_source_lists_every_model_folder_with_its_views(shapenet_copy, tmp_path):
    objects = v1_manifest(shapenet_copy, tmp_path).objects()
    good = {f"{s}/{m}" for s, ms in shapenet_copy.models.items() for m in ms}
    keys = {decode_extras(spec.extras)["key"]: (spec, split) for spec, split in objects}
    assert set(keys) == good | set(shapenet_copy.broken)  # broken models are listed, to fail with a reason
    for key, (spec, _) in keys.items():
        synset, model = key.split("/")
        assert spec.object_id == f"{R2N2_CATEGORIES[synset]}-{model}" and spec.category == R2N2_CATEGORIES[synset]
        assert spec.source == str(shapenet_copy.v1 / synset / model / "model.obj")
        views = decode_extras(spec.extras)["views"]
        assert views == {"type": "r2n2", "dir": str(shapenet_copy.renderings / synset / model / "rendering")}
    # IM-NET's lists: the last good model of each synset with two is test, the rest train
    assert sorted(k for k, (_, s) in keys.items() if s == "test") == sorted(
        f"{s}/{sorted(ms)[-1]}" for s, ms in shapenet_copy.models.items() if len(ms) > 1)
    assert {spec.category for spec, _ in objects} == set(PAPER_CATEGORIES)


def test_category_errors_are_clear(shapenet_copy, tmp_path):
    m = Manifest(name="x", sources=[{"type": "shapenet_v1", "root": str(shapenet_copy.v1), "categories": ["sofa"]}],
                 base_dir=tmp_path)
    with pytest.raises(ManifestError, match="no folder for category sofa"):
        m.objects()
    m.sources[0]["categories"] = ["teapot"]
    with pytest.raises(ManifestError, match="unknown ShapeNet category 'teapot'"):
        m.objects()
    m.sources = [{"type": "shapenet_v2", "root": str(shapenet_copy.v2), "renderings": str(shapenet_copy.renderings)}]
    with pytest.raises(ManifestError, match="needs 'v1_root'"):
        m.objects()
    m.sources = [{"type": "shapenet_v1", "root": str(tmp_path / "nowhere")}]
    with pytest.raises(ManifestError, match="root folder not found"):
        m.objects()


def check_store_like_ours(store: schema.Store) -> None:
    """ShapeNet stores hold the same arrays, dtypes and shapes as the rendered ones."""
    for oid in store.object_ids:
        d = store.load(oid)
        assert d["images"].dtype == np.uint8 and d["images"].shape == (24, 137, 137, 4)
        assert d["K"].dtype == np.float32 and d["K"].shape == (24, 3, 3)
        assert d["Rt"].dtype == np.float32 and d["Rt"].shape == (24, 3, 4)
        assert d["points"].shape == (schema.N_POINTS, 3) and d["udf"].dtype == np.float32
        assert 0 < d["images"][..., 3].astype(bool).mean() < 0.9  # the object, on a transparent background
        assert {"ref_surface_points", "ref_uniform_inside"} <= set(d) or d["split"] != "test"


def test_v1_r2n2_end_to_end_and_broken_models_fail_alone(shapenet_copy, tmp_path):
    store = tmp_path / "store"
    summary = run_preprocess(v1_manifest(shapenet_copy, tmp_path), store, scheduler="serial")
    assert summary.done == 9 and len(summary.failed) == 3
    reasons = {decode_extras(o.job.extras)["key"]: o.error for o in summary.failed}
    assert set(reasons) == set(shapenet_copy.broken)
    for key, problem in shapenet_copy.broken.items():
        expected = {"model folder without model.obj": r"model\.obj: cannot read file",
                    "no rendering/ folder": "no rendering folder",
                    "rendering/05.png missing": r"05\.png: view 5 of 24 is missing"}[problem]
        assert re.search(expected, reasons[key]), reasons[key]
        assert "\n" not in reasons[key]
    records = [json.loads(line) for line in (store / schema.RUNS_FILE).read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed"] * 3 + ["ok"] * 9
    st = schema.open_store(store)
    check_store_like_ours(st)
    assert st.categories == sorted(PAPER_CATEGORIES) and len(st.split("test")) == 2
    # the stored images are R2N2's PNGs, byte for byte
    from PIL import Image

    oid = st.object_ids[0]
    key = next(k for k in shapenet_copy.metadata if k.endswith(oid.split("-", 1)[1]))
    png = np.asarray(Image.open(shapenet_copy.renderings / key / "rendering" / "07.png"))
    assert np.array_equal(st.read(oid, "images", 7), png)


def test_rerun_skips_and_a_changed_view_redoes_its_object(shapenet_copy, tmp_path):
    copy_root = tmp_path / "renderings"
    shutil.copytree(shapenet_copy.renderings, copy_root)
    m = Manifest(name="x", sources=[{"type": "shapenet_v1", "root": str(shapenet_copy.v1),
                                     "renderings": str(copy_root), "categories": ["bench"]}],
                 params={**SMALL, "reference_splits": []}, base_dir=tmp_path)
    first = run_preprocess(m, tmp_path / "store", scheduler="serial")
    again = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert first.done == 2 and again.skipped == 2 and again.done == 0
    model = shapenet_copy.models[BENCH][0]
    meta = copy_root / BENCH / model / "rendering" / "rendering_metadata.txt"
    lines = meta.read_text().splitlines()
    a, e, r, ratio, f = lines[3].split()
    lines[3] = f"{float(a) + 10} {e} {r} {ratio} {f}"
    meta.write_text("\n".join(lines) + "\n")
    third = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert third.done == 1 and third.skipped == 1


def test_v2_with_r2n2_views_end_to_end(shapenet_copy, tmp_path):
    m = manifest_with_paths("shapenet-v2.toml", {
        "/path/to/ShapeNetCore.v2": str(shapenet_copy.v2), "/path/to/IM-NET": str(shapenet_copy.splits / "imnet")},
        tmp_path)
    m.sources[0].update(renderings=str(shapenet_copy.renderings), v1_root=str(shapenet_copy.v1))
    m.params = dict(SMALL)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 9 and len(summary.failed) == 3
    st = schema.open_store(tmp_path / "store")
    check_store_like_ours(st)
    for oid in st.object_ids:  # v2's scale and centre are kept in v2 file units
        assert st.info(oid)["source"].endswith("models/model_normalized.obj")


def test_v2_without_renderings_renders_its_views(shapenet_copy, tmp_path):
    m = Manifest(name="x", sources=[{"type": "shapenet_v2", "root": str(shapenet_copy.v2), "categories": [BENCH]}],
                 params={**SMALL, "views": {"n_views": 4, "image_size": 137, "up_axis": "y"}, "reference_splits": []},
                 base_dir=tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 2 and not summary.failed
    st = schema.open_store(tmp_path / "store")
    assert st.read(st.object_ids[0], "images").shape == (4, 137, 137, 4)


def test_v2_to_v1_undoes_the_quarter_turn_and_accepts_a_copy_that_kept_v1_axes(shapenet_copy):
    from pipeline.sources.shapenet import V2_TO_V1_AXES, v2_to_v1
    from pipeline.stages.load import load_mesh

    model = shapenet_copy.models[AIRPLANE][0]
    v1_path = shapenet_copy.v1 / AIRPLANE / model / "model.obj"
    v1, _ = load_mesh(v1_path)
    v2, f = load_mesh(shapenet_copy.v2 / AIRPLANE / model / "models" / "model_normalized.obj")
    s, Q, c = v2_to_v1(v2, f, v1_path)
    assert np.allclose(Q, V2_TO_V1_AXES)
    assert np.abs(s * v2 @ Q.T + c - v1).max() < 1e-5  # vertex for vertex: the fixture wrote the same mesh
    s, Q, c = v2_to_v1(v2 @ V2_TO_V1_AXES.T, f, v1_path)  # a copy whose v2 models kept v1's axes
    assert np.allclose(Q, np.eye(3)) and np.abs(s * v2 @ V2_TO_V1_AXES.T + c - v1).max() < 1e-5


def test_a_v2_model_that_does_not_match_v1_fails_with_the_reason(shapenet_copy, tmp_path):
    from tests.fixtures.shapenet_layouts import write_obj

    v2 = tmp_path / "v2"
    shutil.copytree(shapenet_copy.v2 / BENCH, v2 / BENCH)
    model = shapenet_copy.models[BENCH][0]
    from pipeline.stages.load import load_mesh

    obj = v2 / BENCH / model / "models" / "model_normalized.obj"
    v, f = load_mesh(obj)
    write_obj(obj, v * np.array([1.6, 1.0, 1.0]), f)  # stretched: no turn, scale and shift maps it onto v1
    m = Manifest(name="x", sources=[{"type": "shapenet_v2", "root": str(v2), "v1_root": str(shapenet_copy.v1),
                                     "renderings": str(shapenet_copy.renderings)}],
                 params={**SMALL, "reference_splits": []}, base_dir=tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 1 and len(summary.failed) == 1
    assert "does not line up with this v1 model" in summary.failed[0].error
    assert Path(summary.failed[0].job.source).parent.parent.name == model


@pytest.mark.parametrize("name", ["shapenet-v1-r2n2.toml", "shapenet-r2n2-13.toml", "shapenet-v2.toml",
                                  "step-parts.toml", "imnet-hdf5.toml"])
def test_checked_in_manifests_parse_and_only_their_paths_need_editing(name):
    from pipeline.manifest import load_manifest

    path = Path(__file__).parents[3] / "manifests" / name
    m = load_manifest(path)
    assert m.config().views.n_views == 24 and m.config().views.image_size == 137
    with pytest.raises(ManifestError, match="/path/to/"):  # the placeholder root is what a user sets
        m.objects()
