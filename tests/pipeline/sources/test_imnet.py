"""IM-NET's HDF5 release as a source: rows listed by the names file, the voxel surface as geometry, IM-NET's
greyscale views with 3D-R2N2's cameras checked on the silhouette, broken rows failing alone."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from pipeline import schema
from pipeline.cameras import project
from pipeline.manifest import Manifest
from pipeline.runner import run_preprocess
from pipeline.sources import SourceError, decode_extras, list_objects
from pipeline.sources.imnet import voxel_surface
from tests.fixtures.shapenet_layouts import write_imnet_hdf5
from tests.pipeline.sources.conftest import AIRPLANE, BENCH, SMALL, manifest_with_paths


@pytest.fixture(scope="session")
def imnet_copy(shapenet_copy, tmp_path_factory):
    """IM-NET's two files for the good models of the ShapeNet fixture: the last model of airplane and bench in
    test, the other 7 in train (IM-NET's names files double as the split lists, as in its release)."""
    root = tmp_path_factory.mktemp("imnet") / "IM-NET"
    keys = [f"{s}/{m}" for s in sorted(shapenet_copy.models) for m in sorted(shapenet_copy.models[s])]
    test = [f"{s}/{sorted(shapenet_copy.models[s])[-1]}" for s in (AIRPLANE, BENCH)]
    write_imnet_hdf5(shapenet_copy, root / "all_vox256_img_train.hdf5", [k for k in keys if k not in test])
    write_imnet_hdf5(shapenet_copy, root / "all_vox256_img_test.hdf5", test)
    return root


def imnet_manifest(shapenet_copy, imnet_copy, tmp_path):
    m = manifest_with_paths("imnet-hdf5.toml", {"/path/to/IM-NET": str(imnet_copy),
                                                "/path/to/ShapeNetRendering": str(shapenet_copy.renderings)}, tmp_path)
    m.params = dict(SMALL)
    m.split["val_from_train"] = 0.0
    return m


def test_voxel_surface_is_watertight_outward_and_on_the_voxel_boundary():
    import trimesh

    voxels = np.zeros((64, 64, 64, 1), np.uint8)
    voxels[10:20, 30:40, 5:50] = 1  # a 10 x 10 x 45 voxel box
    v, f = voxel_surface(voxels)
    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and mesh.volume > 0
    lo, hi = v.min(0), v.max(0)  # level 0.5 halfway between the outer voxel centres and the empty ones
    assert np.allclose(lo, (np.array([10, 30, 5]) + 0.5 - 0.5) / 64 - 0.5, atol=1e-6)
    assert np.allclose(hi, (np.array([19, 39, 49]) + 0.5 + 0.5) / 64 - 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="no occupied voxel"):
        voxel_surface(np.zeros((64, 64, 64, 1), np.uint8))


def test_rows_are_listed_with_their_names_and_bad_files_are_named(shapenet_copy, imnet_copy, tmp_path):
    m = imnet_manifest(shapenet_copy, imnet_copy, tmp_path)
    specs = list_objects(m.sources[0], tmp_path)
    assert len(specs) == 9
    assert all(s.source.split("#")[0].endswith(".hdf5") for s in specs)
    keys = {decode_extras(s.extras)["key"] for s in specs}
    assert keys == {f"{s}/{i}" for s, ids in shapenet_copy.models.items() for i in ids}
    only = list_objects({**m.sources[0], "categories": ["bench"]}, tmp_path)
    assert {s.category for s in only} == {"bench"} and len(only) == 2

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(imnet_copy / "all_vox256_img_test.hdf5", bad / "x.hdf5")
    with pytest.raises(SourceError, match=r"x\.txt: missing"):
        list_objects({"type": "imnet_hdf5", "files": str(bad / "x.hdf5"), "images": False}, tmp_path)
    (bad / "x.txt").write_text("02691156/abc\n")
    with pytest.raises(SourceError, match=r"1 names for the 2 rows"):
        list_objects({"type": "imnet_hdf5", "files": str(bad / "x.hdf5"), "images": False}, tmp_path)
    with pytest.raises(SourceError, match="needs 'renderings'"):
        list_objects({"type": "imnet_hdf5", "files": str(bad / "x.hdf5")}, tmp_path)
    (bad / "y.hdf5").write_text("not hdf5")
    with pytest.raises(SourceError, match=r"y\.hdf5: not a readable HDF5 file"):
        list_objects({"type": "imnet_hdf5", "files": str(bad / "y.hdf5"), "images": False}, tmp_path)
    per_category = bad / "02691156_vox256_img_test.hdf5"  # IM-NET's per-category files: bare model ids
    shutil.copy(imnet_copy / "all_vox256_img_test.hdf5", per_category)
    per_category.with_suffix(".txt").write_text("abc\ndef\n")
    listed = list_objects({"type": "imnet_hdf5", "files": str(per_category), "images": False}, tmp_path)
    assert [decode_extras(o.extras)["key"] for o in listed] == ["02691156/abc", "02691156/def"]
    assert [o.object_id for o in listed] == ["airplane-abc", "airplane-def"]
    with pytest.raises(SourceError, match="no IM-NET HDF5 file"):
        list_objects({"type": "imnet_hdf5", "files": str(bad / "*.h5"), "images": False}, tmp_path)


def test_imnet_end_to_end_views_land_on_their_pixels(shapenet_copy, imnet_copy, tmp_path):
    m = imnet_manifest(shapenet_copy, imnet_copy, tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 9 and not summary.failed
    st = schema.open_store(tmp_path / "store")
    splits = [st.info(o)["split"] for o in st.object_ids]
    assert splits.count("test") == 2 and splits.count("train") == 7  # IM-NET's names files as the split
    for oid in st.object_ids:
        d = st.load(oid)
        path, row = d["source"].rsplit("#", 1)
        with h5py.File(path) as f:
            pixels, voxels = f["pixels"][int(row)], f["voxels"][int(row)][..., 0] > 0
        images = d["images"]
        assert images.shape == (24, 137, 137, 4)
        assert (images[..., 0] == pixels).all() and (images[..., 2] == pixels).all()  # IM-NET's pixels, as given
        # the inside flags of the uniform points agree with the voxels they fall in
        uniform = d["points"][schema.N_SURFACE:] * d["scale"] + d["center"]  # IM-NET frame
        idx = np.floor((uniform + 0.5) * 64).astype(int)
        ok = ((idx >= 0) & (idx < 64)).all(1)
        agree = (voxels[tuple(idx[ok].T)] == d["inside"][schema.N_SURFACE:][ok]).mean()
        assert agree >= 0.95, (oid, agree)
        # near-surface points project onto IM-NET's drawn pixels (dilated by 2 px: the voxel surface is within a
        # voxel of the true one), view by view
        near = d["points"][: schema.N_SURFACE][d["udf"][: schema.N_SURFACE] < 0.002]
        drawn = pixels < 250
        grown = drawn.copy()
        for axis in (1, 2):
            for shift in (1, 2, -1, -2):
                grown |= np.roll(drawn, shift, axis=axis)
        hits = []
        for v in range(24):
            uv = project(near, d["K"][v], d["Rt"][v])
            col, rowp = np.round(uv[:, 0] - 0.5).astype(int), np.round(uv[:, 1] - 0.5).astype(int)
            inb = (col >= 0) & (col < 137) & (rowp >= 0) & (rowp < 137)
            hits.append((grown[v][rowp[inb], col[inb]]).sum() / len(near))
        assert min(hits) >= 0.99, (oid, min(hits))
        if d["split"] == "test":  # the evaluation's pictures draw the same voxel surface as ground truth
            from evaluation.render import load_source_mesh
            from pipeline.stages.distances import udf

            v, f = load_source_mesh(st.info(oid), float(d["scale"]), d["center"])
            assert udf(v, f, d["ref_surface_points"][:500], "libigl").max() < 1e-5

    again = run_preprocess(m, tmp_path / "store", scheduler="serial")  # rows are hashed, not the whole file
    assert again.skipped == 9 and again.done == 0

    from reconstruct.framing import framing_from_store  # a checkpoint trained here wants grey photos

    assert framing_from_store(st).greyscale


def test_a_file_in_another_frame_and_broken_rows_fail_alone_with_the_reason(shapenet_copy, tmp_path):
    keys = [f"{AIRPLANE}/{m}" for m in shapenet_copy.models[AIRPLANE]] + [f"{BENCH}/{shapenet_copy.models[BENCH][0]}"]
    renderings = tmp_path / "ShapeNetRendering"
    for key in keys:
        shutil.copytree(shapenet_copy.renderings / key, renderings / key)
    good = write_imnet_hdf5(shapenet_copy, tmp_path / "good" / "all_vox256_img_train.hdf5", keys, empty=(keys[1],))
    (renderings / keys[2] / "rendering" / "rendering_metadata.txt").unlink()
    unturned = write_imnet_hdf5(shapenet_copy, tmp_path / "v1axes" / "all_vox256_img_train.hdf5", keys[:1],
                                frame="v1")
    m = Manifest(name="x", sources=[{"type": "imnet_hdf5", "files": [str(good)], "renderings": str(renderings)}],
                 params={**SMALL, "reference_splits": []}, base_dir=tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 1 and len(summary.failed) == 2
    reasons = {decode_extras(o.job.extras)["key"]: o.error for o in summary.failed}
    assert "no occupied voxel" in reasons[keys[1]] and f"{good}#1" in reasons[keys[1]]
    assert "rendering_metadata.txt: missing" in reasons[keys[2]]

    m.sources[0]["files"] = [str(unturned)]
    summary = run_preprocess(m, tmp_path / "store2", scheduler="serial")
    assert summary.done == 0 and len(summary.failed) == 1
    assert "do not line up with its voxels" in summary.failed[0].error


def test_without_images_views_are_rendered_from_the_voxel_surface(shapenet_copy, imnet_copy, tmp_path):
    m = Manifest(name="x", sources=[{"type": "imnet_hdf5", "files": str(imnet_copy / "*_test.hdf5"),
                                     "images": False}],
                 params={**SMALL, "views": {"n_views": 4, "image_size": 64, "up_axis": "y"}}, base_dir=tmp_path)
    summary = run_preprocess(m, tmp_path / "store", scheduler="serial")
    assert summary.done == 2 and not summary.failed
    st = schema.open_store(tmp_path / "store")
    images = st.read(st.object_ids[0], "images")
    assert images.shape == (4, 64, 64, 4) and 0 < (images[..., 3] > 0).mean() < 0.9
