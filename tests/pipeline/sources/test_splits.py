"""The benchmark's split files (IM-NET, OccNet, plain lists) select train/val/test in a manifest."""

from __future__ import annotations

import pytest

from pipeline.manifest import Manifest, ManifestError
from pipeline.sources import decode_extras
from tests.pipeline.sources.conftest import AIRPLANE, BENCH


def manifest(copy, split, tmp_path) -> Manifest:
    source = {"type": "shapenet_v1", "root": str(copy.v1), "categories": ["airplane", "bench"]}
    return Manifest(name="x", sources=[source], split=split, base_dir=tmp_path)


def splits_by_key(objects) -> dict[str, str]:
    return {decode_extras(spec.extras)["key"]: split for spec, split in objects}


def test_imnet_and_occnet_lists_give_the_same_split(shapenet_copy, tmp_path):
    lists = shapenet_copy.splits
    imnet_files = {"method": "files", "train": str(lists / "imnet" / "*_train.txt"),
                   "test": str(lists / "imnet" / "*_test.txt")}
    occnet_files = {"method": "files", "train": str(lists / "occnet" / "*" / "train.lst"),
                    "test": str(lists / "occnet" / "*" / "test.lst")}
    imnet = splits_by_key(manifest(shapenet_copy, imnet_files, tmp_path).objects())
    occnet = splits_by_key(manifest(shapenet_copy, occnet_files, tmp_path).objects())
    assert imnet == occnet and set(imnet.values()) == {"train", "test"}
    assert imnet[f"{AIRPLANE}/{sorted(shapenet_copy.models[AIRPLANE])[-1]}"] == "test"
    assert imnet[f"{BENCH}/{sorted(shapenet_copy.models[BENCH])[0]}"] == "train"


def test_plain_list_of_object_ids_relative_to_the_manifest_and_unlisted(shapenet_copy, tmp_path):
    objects = manifest(shapenet_copy, {"method": "hash"}, tmp_path).objects()
    ids = sorted(spec.object_id for spec, _ in objects)
    (tmp_path / "test.txt").write_text(f"# two objects\n{ids[0]}\n\n{ids[1]}\n")
    picked = manifest(shapenet_copy, {"method": "files", "test": "test.txt"}, tmp_path).objects()
    assert {spec.object_id: s for spec, s in picked} == {ids[0]: "test", ids[1]: "test"}  # unlisted: skipped
    kept = manifest(shapenet_copy, {"method": "files", "test": "test.txt", "unlisted": "train"}, tmp_path).objects()
    assert len(kept) == len(ids) and sum(s == "test" for _, s in kept) == 2


def test_val_from_train_holds_out_a_stable_fraction(shapenet_copy, tmp_path):
    table = {"method": "files", "train": str(shapenet_copy.splits / "imnet" / "*_train.txt"),
             "test": str(shapenet_copy.splits / "imnet" / "*_test.txt"), "val_from_train": 0.5}
    first = splits_by_key(manifest(shapenet_copy, table, tmp_path).objects())
    assert first == splits_by_key(manifest(shapenet_copy, table, tmp_path).objects())
    assert "val" in first.values() and list(first.values()).count("test") == 2  # test untouched


def test_bad_split_files_are_named(shapenet_copy, tmp_path):
    with pytest.raises(ManifestError, match="nowhere.lst: no split file matches"):
        manifest(shapenet_copy, {"method": "files", "test": "nowhere.lst"}, tmp_path).objects()
    (tmp_path / "a.lst").write_text(f"{AIRPLANE}/{shapenet_copy.models[AIRPLANE][0]}\n")
    with pytest.raises(ManifestError, match="in both the train and the test lists"):
        manifest(shapenet_copy, {"method": "files", "train": "a.lst", "test": "a.lst"}, tmp_path).objects()
    with pytest.raises(ManifestError, match="unlisted must be"):
        manifest(shapenet_copy, {"method": "files", "test": "a.lst", "unlisted": "val"}, tmp_path).objects()
