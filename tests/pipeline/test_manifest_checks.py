"""Every table of a manifest is checked when it is loaded: unknown keys, wrong types, impossible splits and names
that are paths fail at once, naming the file and the table, before any source is listed."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from pathlib import Path

import pytest

from pipeline.manifest import ManifestError, load_manifest

MANIFESTS = Path(__file__).parents[2] / "manifests"

# each source type with every key its lister reads, set to a valid value (the paths need not exist)
FULL_SOURCES = {
    "folder": 'root = "nowhere"\ncategories = ["bracket"]',
    "pypi_wheel": 'package = "robosuite"\nversion = "1.5.2"\ncategory = "arm_link"\ninclude = ["*.stl"]\n'
                  'exclude = ["*_vis.stl"]',
    "shapenet_v1": 'root = "nowhere"\ncategories = ["airplane", "02828884"]\nrenderings = "nowhere"',
    "shapenet_v2": 'root = "nowhere"\ncategories = ["chair"]\nrenderings = "nowhere"\nv1_root = "nowhere"',
    "step_folder": 'root = "nowhere"\ncategories = ["flange"]\ntolerance = 0.001\nangular_deg = 12.0',
    "imnet_hdf5": 'files = ["a.hdf5", "b.hdf5"]\ncategories = ["airplane"]\nimages = true\nrenderings = "nowhere"',
}
KNOWN_KEYS = {
    "folder": ["categories", "root", "type"],
    "pypi_wheel": ["category", "exclude", "include", "package", "type", "version"],
    "shapenet_v1": ["categories", "renderings", "root", "type"],
    "shapenet_v2": ["categories", "renderings", "root", "type", "v1_root"],
    "step_folder": ["angular_deg", "categories", "root", "tolerance", "type"],
    "imnet_hdf5": ["categories", "files", "images", "renderings", "type"],
}


def write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def folder_source(root: str = "nowhere") -> str:
    return f'[[sources]]\ntype = "folder"\nroot = "{root}"\n'


@pytest.mark.parametrize("kind", sorted(FULL_SOURCES))
def test_each_source_type_takes_exactly_the_keys_its_lister_reads(tmp_path, kind):
    table = f'[[sources]]\ntype = "{kind}"\n{FULL_SOURCES[kind]}\n'
    m = load_manifest(write(tmp_path, f'name = "x"\n{table}'))  # every known key, no data needed to load
    assert set(m.sources[0]) == set(KNOWN_KEYS[kind])
    typo = write(tmp_path, f'name = "x"\n{folder_source()}{table}rooot = "x"\ncategoriez = ["a"]\n')
    with pytest.raises(ManifestError) as exc:
        load_manifest(typo)
    assert str(exc.value) == (f"{typo}: source 2 ({kind}): unknown key(s) ['categoriez', 'rooot']; "
                              f"known: {KNOWN_KEYS[kind]}")


@pytest.mark.parametrize("table, error", [
    ('type = "folder"\nroot = "r"\ncategories = "bracket"',
     "categories must be a list of non-empty strings, got 'bracket'"),
    ('type = "folder"\nroot = 3',
     r"root must be a non-empty string \(the folder holding one subfolder per category\), got 3"),
    ('type = "folder"', r"folder source needs 'root': a non-empty string \(the folder"),
    ('type = "pypi_wheel"\npackage = "robosuite"\nversion = "1.5.2"\ncategory = "a"\ninclude = "*.stl"',
     r"include must be a list of non-empty strings \(globs over the wheel's member paths\), got '\*.stl'"),
    ('type = "pypi_wheel"\npackage = "robosuite"\nversion = 1.5\ncategory = "a"\ninclude = ["*.stl"]',
     r"version must be a PEP 440 release version \(its exact version, e.g. \"1.5.2\"\), got 1.5"),
    ('type = "pypi_wheel"\npackage = "robosuite"\nversion = "1.5.2"\ncategory = "a"',
     r"pypi_wheel source needs 'include': a list of non-empty strings \(globs"),
    ('type = "shapenet_v1"\nroot = "r"\nv1_root = "r"', r"unknown key\(s\) \['v1_root'\]"),  # v1 never reads it
    ('type = "step_folder"\nroot = "r"\ntolerance = 0.5', r"tolerance must be a number in \(0, 0.1\)"),
    ('type = "step_folder"\nroot = "r"\nangular_deg = true', r"angular_deg must be a number in \(0, 60\]"),
    ('type = "imnet_hdf5"\nfiles = []',
     r"files must be a string or a list of strings \(IM-NET's .hdf5 files, paths or globs\), got \[\]"),
    ('type = "imnet_hdf5"\nfiles = "a.hdf5"\nimages = "yes"', "images must be true or false, got 'yes'"),
    ('type = "obj_folder"\nroot = "r"', "unknown source type 'obj_folder'"),
])
def test_source_values_of_the_wrong_type_are_refused_at_load(tmp_path, table, error):
    path = write(tmp_path, f'name = "x"\n[[sources]]\n{table}\n')
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}: source 1.*: {error}"):
        load_manifest(path)


@pytest.mark.parametrize("split, error", [
    ('methd = "hash"', r"unknown key\(s\) \['methd'\] with method = 'hash'; known: \['at_least', 'by_category', "
                       r"'exact', 'method', 'test', 'val'\]"),
    ('method = "lists"\nvall = ["a"]', r"unknown key\(s\) \['vall'\] with method = 'lists'; known: \['method', 'test', "
                                       r"'val'\]"),
    ('method = "lists"\nval = ["a"]\nexact = true', r"unknown key\(s\) \['exact'\] with method = 'lists'"),
    ('method = "files"\ntest = "t.txt"\nvall = "v.txt"', r"unknown key\(s\) \['vall'\] in \[split\] with method = "
                                                        r"'files'; known: \["),
    ('method = "files"\ntest = 3', "split.test must be a path or glob or a list of them, not 3"),
    ('method = "files"\ntest = "t.txt"\nval_from_train = 1.5', r"split.val_from_train must be a fraction in \[0, 1\)"),
    ('method = "random"', "unknown split method 'random'"),
    ("val = 0.9\ntest = 0.9", r"split.val \+ split.test must be < 1 \(the rest is train\), got 0.9 \+ 0.9"),
    ("val = 0.5\ntest = 0.5", r"split.val \+ split.test must be < 1"),
    ("test = 1.0", r"split.val \+ split.test must be < 1"),  # val defaults to 0.1
    ("val = -0.1", r"split.val must be a fraction in \[0, 1\], got -0.1"),
    ("test = 1.5\nval = 0", r"split.test must be a fraction in \[0, 1\], got 1.5"),
    ('val = "0.1"', r"split.val must be a fraction in \[0, 1\], got '0.1'"),
    ('exact = "yes"', "split.exact must be true or false, got 'yes'"),
    ('method = "lists"\nval = "a"', "split.val must be a list of object ids with method = 'lists'"),
    ('method = "lists"\nval = ["a", "b"]\ntest = ["b"]',
     r"object id\(s\) \['b'\] are in both split.val and split.test"),
])
def test_split_tables_are_checked_per_method_at_load(tmp_path, split, error):
    path = write(tmp_path, f'name = "x"\n{folder_source()}[split]\n{split}\n')
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}: \[split\]: {error}"):
        load_manifest(path)


@pytest.mark.parametrize("split", ["val = 0.45\ntest = 0.5", "val = 0\ntest = 0", 'method = "hash"\nexact = true',
                                   'method = "lists"\nval = ["a"]\ntest = ["b"]',
                                   'method = "files"\ntest = "t.txt"\nunlisted = "train"\nval_from_train = 0.05'])
def test_possible_splits_still_load(tmp_path, split):
    m = load_manifest(write(tmp_path, f'name = "x"\n{folder_source()}[split]\n{split}\n'))
    assert m.split == tomllib.loads(split)


def test_split_lists_must_name_listed_objects(tmp_path, mesh_folder):
    part = sorted((mesh_folder / "arm_link").iterdir())[0].stem
    text = f'name = "x"\n{folder_source(str(mesh_folder))}[split]\nmethod = "lists"\n'
    m = load_manifest(write(tmp_path, text + f'test = ["arm_link-{part}"]\n'))
    assert [spec.object_id for spec, split in m.objects() if split == "test"] == [f"arm_link-{part}"]
    typo = write(tmp_path, text + f'test = ["arm_link-{part}", "arm_link-{part}x"]\n', "typo.toml")
    with pytest.raises(ManifestError, match=rf"typo.toml: \[split\]: split.test names 1 object id\(s\) that no source "
                                            rf"lists: \['arm_link-{part}x'\]"):
        load_manifest(typo).objects()


@pytest.mark.parametrize("name", ["/abs/path", "../../x", "a/b", "a\\\\b", ".", "..", "", "my data", "x\\u0000"])
def test_a_name_that_is_a_path_is_refused(tmp_path, name):
    path = write(tmp_path, f'name = "{name}"\n{folder_source()}')
    with pytest.raises(ManifestError, match=r"m.toml: name .* is not a plain name .*data/<name>"):
        load_manifest(path)


def test_plain_names_load_unicode_ones_in_nfc(tmp_path):
    for name in ["industrial-demo", "parts_v2.1", "零件数据集", "Gehäuse"]:
        assert load_manifest(write(tmp_path, f'name = "{name}"\n{folder_source()}')).name == name
    decomposed = unicodedata.normalize("NFD", "Gehäuse")
    assert decomposed != "Gehäuse"
    assert load_manifest(write(tmp_path, f'name = "{decomposed}"\n{folder_source()}')).name == "Gehäuse"
    with pytest.raises(ManifestError, match=r"not a plain name .*the file's stem is taken"):
        load_manifest(write(tmp_path, folder_source(), "my parts.toml"))  # no name: the stem must be plain too
    assert load_manifest(write(tmp_path, folder_source(), "parts.toml")).name == "parts"


def test_top_level_tables_of_the_wrong_shape_are_refused(tmp_path):
    for text, error in [(f'name = "x"\nsplit = "hash"\n{folder_source()}', "split must be a table"),
                        (f'name = "x"\nparams = 3\n{folder_source()}', "params must be a table"),
                        ('name = "x"\nsources = ["folder"]\n', r"source 1: must be a table \(\[\[sources\]\]\)"),
                        (f'name = "x"\ndescription = 3\n{folder_source()}', "description must be a string"),
                        (f'name = "x"\nsplitt = {{}}\n{folder_source()}', r"unknown top-level key\(s\) \['splitt'\]")]:
        with pytest.raises(ManifestError, match=rf"m.toml: {error}"):
            load_manifest(write(tmp_path, text))


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.toml")), ids=lambda p: p.name)
def test_every_checked_in_manifest_loads_and_its_tables_are_checked(tmp_path, path):
    m = load_manifest(path)  # placeholder paths (/path/to/...) need not exist to load
    m.check()
    assert m.sources and m.config().views.n_views >= 1
    text = path.read_text()
    assert text.count("[[sources]]\ntype = ") >= 1
    typo = write(tmp_path, text.replace("[[sources]]\n", "[[sources]]\nrooot = 'x'\n", 1), path.name)
    with pytest.raises(ManifestError, match=rf"{path.name}: source 1 \({m.sources[0]['type']}\): unknown key\(s\) "
                                            r"\['rooot'\]"):
        load_manifest(typo)
    assert "\n[split]\n" in text
    split_typo = write(tmp_path, text.replace("\n[split]\n", "\n[split]\nmethd = 'hash'\n", 1), path.name)
    with pytest.raises(ManifestError, match=rf"{path.name}: \[split\]: unknown key\(s\) \['methd'\]"):
        load_manifest(split_typo)
