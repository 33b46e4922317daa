"""Object ids: Unicode names keep their letters (one id for macOS' and Linux's spelling), ASCII ids are exactly as
before, files differing only by suffix get it in their ids, and ids that still collide fail only those objects."""

from __future__ import annotations

import random
import re
import shutil
import string
import unicodedata
from pathlib import Path

import pytest
import trimesh

from pipeline.manifest import Manifest, folder_manifest
from pipeline.sources import make_object_id


def old_object_id(*parts: str) -> str:
    """make_object_id as it was before Unicode letters were kept (ASCII ids must not change)."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") for p in parts if p)


def test_ascii_ids_are_exactly_as_before():
    assert make_object_id("arm_link", "ur5e", "forearm") == "arm_link-ur5e-forearm"
    assert make_object_id("gripper part", "robotiq 85", "_outer (knuckle)_") == "gripper_part-robotiq_85-outer_knuckle"
    assert make_object_id("airplane", "1a04e3eab45ca15dd86060f189eb133") == "airplane-1a04e3eab45ca15dd86060f189eb133"
    rng = random.Random(0)
    for _ in range(3000):
        parts = ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 12))) for _ in range(3)]
        assert make_object_id(*parts) == old_object_id(*parts), parts


def test_unicode_names_keep_their_letters_in_nfc():
    assert make_object_id("零件", "轴承") == "零件-轴承"
    assert make_object_id("подшипник", "вал 2") == "подшипник-вал_2"
    assert make_object_id("भाग", "हिन्दी") == "भाग-हिन्दी"  # combining vowel signs are kept with their letters
    nfc, nfd = unicodedata.normalize("NFC", "Gehäuse"), unicodedata.normalize("NFD", "Gehäuse")
    assert nfc != nfd and make_object_id("teil", nfd) == make_object_id("teil", nfc) == "teil-Gehäuse"
    assert make_object_id("零件", "轴承 · 🔩 (v2)") == "零件-轴承_v2"  # symbols and punctuation are not letters


@pytest.fixture()
def real_stl(robosuite_meshes) -> Path:
    return robosuite_meshes["gripper_part"][0]


def test_folder_of_chinese_file_names_lists_one_object_each(tmp_path, real_stl, robosuite_meshes):
    cat = tmp_path / "meshes" / "零件"
    cat.mkdir(parents=True)
    shutil.copy(real_stl, cat / "轴承.stl")
    shutil.copy(robosuite_meshes["gripper_part"][1], cat / "齿轮.stl")
    m = folder_manifest(tmp_path / "meshes")
    m.split = {"method": "lists", "test": [unicodedata.normalize("NFD", "零件-齿轮")]}
    assert sorted((s.object_id, s.category, split) for s, split in m.objects()) == [
        ("零件-轴承", "零件", "train"), ("零件-齿轮", "零件", "test")]
    assert m.refused() == []


def test_decomposed_folder_names_give_nfc_categories_and_ids(tmp_path, real_stl):
    nfd = unicodedata.normalize("NFD", "Gehäuse")
    (tmp_path / nfd).mkdir()
    shutil.copy(real_stl, tmp_path / nfd / f"{unicodedata.normalize('NFD', 'Türflügel')}.stl")
    assert [p.name for p in tmp_path.iterdir()] == [nfd]  # the file system keeps the decomposed spelling
    m = Manifest(name="x", sources=[{"type": "folder", "root": str(tmp_path), "categories": ["Gehäuse"]}],
                 base_dir=tmp_path)
    [(spec, _)] = m.objects()
    assert (spec.object_id, spec.category) == ("Gehäuse-Türflügel", "Gehäuse")


def test_visual_and_collision_meshes_side_by_side_get_their_suffix(tmp_path, real_stl, robosuite_meshes):
    cat = tmp_path / "arm"
    (cat / "sub").mkdir(parents=True)
    shutil.copy(real_stl, cat / "link.stl")
    trimesh.load(real_stl, force="mesh").export(cat / "link.obj")
    shutil.copy(robosuite_meshes["gripper_part"][1], cat / "base.stl")
    shutil.copy(robosuite_meshes["gripper_part"][1], cat / "sub" / "base.STL")  # another folder: no collision
    m = folder_manifest(tmp_path)
    ids = {s.object_id: Path(s.source).name for s, _ in m.objects()}
    assert ids == {"arm-link_obj": "link.obj", "arm-link_stl": "link.stl", "arm-base": "base.stl",
                   "arm-sub-base": "base.STL"}
    assert m.refused() == []


def test_wheel_members_with_one_stem_get_their_suffix(tmp_path):
    jaco = "robosuite/models/assets/grippers/meshes/jaco_three_finger_gripper"
    m = Manifest(name="x", sources=[{"type": "pypi_wheel", "package": "robosuite", "version": "1.5.2",
                                     "category": "gripper_part",
                                     "include": [f"{jaco}/finger_distal.*", f"{jaco}/ring_small.stl"]}],
                 base_dir=tmp_path)
    ids = sorted(s.object_id for s, _ in m.objects())
    assert ids == ["gripper_part-finger_distal_obj", "gripper_part-finger_distal_stl", "gripper_part-ring_small"]


def test_ids_that_still_collide_fail_alone_with_both_files_named(tmp_path, real_stl, robosuite_meshes):
    a, b = tmp_path / "a" / "arm", tmp_path / "b" / "arm"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    shutil.copy(real_stl, a / "link.stl")
    shutil.copy(real_stl, b / "link.stl")  # the same id from two sources
    shutil.copy(robosuite_meshes["gripper_part"][1], a / "hand.stl")
    shutil.copy(robosuite_meshes["gripper_part"][2], a / "finger 1.stl")
    shutil.copy(robosuite_meshes["gripper_part"][3], a / "finger_1.stl")  # same suffix, same cleaned id
    m = Manifest(name="x", sources=[{"type": "folder", "root": str(tmp_path / "a")},
                                    {"type": "folder", "root": str(tmp_path / "b")}], base_dir=tmp_path)
    assert [s.object_id for s, _ in m.objects()] == ["arm-hand"]  # the run goes on with the others
    refused = {s.source: reason for s, reason in m.refused()}
    assert set(refused) == {str(a / "link.stl"), str(b / "link.stl"), str(a / "finger 1.stl"), str(a / "finger_1.stl")}
    assert refused[str(a / "link.stl")] == (f"object id 'arm-link' comes from both {a / 'link.stl'} and "
                                            f"{b / 'link.stl'}; rename one of the files")
    assert str(a / "finger 1.stl") in refused[str(a / "finger_1.stl")]
    assert all("\n" not in r for r in refused.values())


def test_objects_and_refused_share_one_listing_until_the_sources_change(tmp_path, real_stl):
    for root in ("a", "b"):
        (tmp_path / root / "arm").mkdir(parents=True)
        shutil.copy(real_stl, tmp_path / root / "arm" / "link.stl")
    shutil.copy(real_stl, tmp_path / "a" / "arm" / "other.stl")
    m = Manifest(name="x", sources=[{"type": "folder", "root": str(tmp_path / "a")},
                                    {"type": "folder", "root": str(tmp_path / "b")}], base_dir=tmp_path)
    assert [s.object_id for s, _ in m.objects()] == ["arm-other"]
    shutil.rmtree(tmp_path / "b")  # listed once: refused() does not look at the folders again
    assert sorted(s.source for s, _ in m.refused()) == [str(tmp_path / r / "arm" / "link.stl") for r in "ab"]
    m.sources = m.sources[:1]  # a changed manifest is listed anew
    assert sorted(s.object_id for s, _ in m.objects()) == ["arm-link", "arm-other"] and m.refused() == []


def test_colliding_objects_a_split_file_leaves_out_are_not_refused(tmp_path, real_stl):
    for root in ("a", "b"):
        (tmp_path / root / "arm").mkdir(parents=True)
        shutil.copy(real_stl, tmp_path / root / "arm" / "link.stl")
    shutil.copy(real_stl, tmp_path / "a" / "arm" / "other.stl")
    (tmp_path / "test.txt").write_text("arm-other\n")
    (tmp_path / "both.txt").write_text("arm-other\narm-link\n")
    sources = [{"type": "folder", "root": str(tmp_path / r)} for r in "ab"]
    only_other = Manifest(name="x", sources=sources, split={"method": "files", "test": "test.txt"}, base_dir=tmp_path)
    assert [(s.object_id, split) for s, split in only_other.objects()] == [("arm-other", "test")]
    assert only_other.refused() == []  # arm-link is not in the benchmark's split: skipped, not failed
    both = Manifest(name="x", sources=sources, split={"method": "files", "test": "both.txt"}, base_dir=tmp_path)
    assert [s.object_id for s, _ in both.objects()] == ["arm-other"]
    assert [s.object_id for s, _ in both.refused()] == ["arm-link", "arm-link"]
