"""Hostile and careless input, second round (issue 22): manifests that would run code or write files, files a mesh
references, oversized meshes and a worker killed by one, parameters that make a useless store, garbage
manifests, a folder of broken meshes, and source roots that reach out of themselves. Real files, real stores,
real processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from pipeline import schema
from pipeline.manifest import Manifest, ManifestError, load_manifest
from pipeline.runner import run_preprocess
from pipeline.sources import SourceError
from pipeline.sources.pypi_wheel import fetch_wheel
from pipeline.stages.load import MeshError, load_mesh

ROOT = Path(__file__).parents[2]
SMALL = {"views": {"n_views": 1, "image_size": 16}, "n_surface": 500, "n_uniform": 50, "reference_splits": []}
_STL = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attributes", "<u2")])


def write_stl(path: Path, triangles: np.ndarray, trailing: bytes = b"") -> Path:
    """A binary STL of `triangles` (F, 3, 3)."""
    rec = np.zeros(len(triangles), _STL)
    rec["vertices"] = triangles
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 80 + np.uint32(len(triangles)).tobytes() + rec.tobytes() + trailing)
    return path


def folder_manifest_of(root: Path, **params) -> Manifest:
    return Manifest(name="hostile", sources=[{"type": "folder", "root": str(root)}],
                    split={"method": "hash", "val": 0, "test": 0}, params={**SMALL, **params}, base_dir=root)


def aps(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "aps", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


# S1 -------------------------------------------------------------------------------------------------------------

def test_a_wheel_source_naming_a_folder_or_an_option_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    """`package = "/some/folder"`, `version = "0"` made pip build the folder `/some/folder==0` (its build backend
    ran); `package = "--log=FILE"` made pip write FILE. Only a PyPI name and version pass, at load and in
    fetch_wheel."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil==0"
    evil.mkdir()
    (evil / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                         'backend-path = ["."]\n[project]\nname = "evil"\nversion = "0"\n')
    (evil / "backend.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("APS_CACHE", str(tmp_path / "cache"))  # an empty cache: nothing is found without pip
    log_file = tmp_path / "pip.log"
    for package, version, field in [(str(tmp_path / "evil"), "0", "package"), (f"--log={log_file}", "0", "package"),
                                    ("robosuite", "1.5.2 ; os_name == 'posix'", "version"),
                                    ("robosuite", "--pre", "version"), ("robosuite", "1.5.2+local", "version")]:
        path = tmp_path / "m.toml"
        path.write_text(f'name = "x"\n[[sources]]\ntype = "pypi_wheel"\npackage = {json.dumps(package)}\n'
                        f'version = {json.dumps(version)}\ncategory = "c"\ninclude = ["*.stl"]\n')
        with pytest.raises(ManifestError, match=rf"^{path}: source 1 \(pypi_wheel\): {field} must be a P") as exc:
            load_manifest(path)
        assert "\n" not in str(exc.value)
        with pytest.raises(SourceError, match="is not a PyPI project name and release version"):
            fetch_wheel(package, version)
    assert not marker.exists() and not list(tmp_path.glob("pip.log*"))


def test_a_wheel_source_with_a_real_name_still_lists_its_members(tmp_path, robosuite_meshes):
    path = tmp_path / "m.toml"
    path.write_text('name = "x"\n[[sources]]\ntype = "pypi_wheel"\npackage = "robosuite"\nversion = "1.5.2"\n'
                    'category = "arm_link"\ninclude = ["robosuite/models/assets/robots/iiwa/meshes/link_?.stl"]\n')
    ids = [spec.object_id for spec, _ in load_manifest(path).objects()]
    assert "arm_link-link_6" in ids and len(ids) == 8


# S5 -------------------------------------------------------------------------------------------------------------

def write_gltf(path: Path, vertices: np.ndarray, faces: np.ndarray, uri: str, buffer: bool = True) -> None:
    """A glTF whose one buffer is the file `uri` (positions float32, then indices uint32), written beside it
    where `buffer`."""
    pos, idx = vertices.astype("<f4").tobytes(), faces.astype("<u4").tobytes()
    if buffer:
        (path.parent / uri).write_bytes(pos + idx)
    path.write_text(json.dumps({
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"uri": uri, "byteLength": len(pos) + len(idx)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(pos)},
                        {"buffer": 0, "byteOffset": len(pos), "byteLength": len(idx)}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(vertices), "type": "VEC3",
                       "min": vertices.min(0).tolist(), "max": vertices.max(0).tolist()},
                      {"bufferView": 1, "componentType": 5125, "count": faces.size, "type": "SCALAR"}]}))


def test_a_changed_gltf_buffer_redoes_its_object(tmp_path, robosuite_meshes):
    """The content hash covered the .gltf only: a .bin stretched x3 in z (same size) was skipped on rerun."""
    part = trimesh.load(robosuite_meshes["arm_link"][0], force="mesh")
    root = tmp_path / "meshes"
    (root / "arm").mkdir(parents=True)
    gltf = root / "arm" / "shoulder.gltf"
    write_gltf(gltf, part.vertices, part.faces, "shoulder.bin")
    m, store = folder_manifest_of(root), tmp_path / "store"
    first = run_preprocess(m, store, scheduler="serial")
    assert (first.done, first.skipped, first.failed) == (1, 0, [])
    text, size = gltf.read_bytes(), (root / "arm" / "shoulder.bin").stat().st_size
    stretched = (part.vertices * [1, 1, 3]).astype("<f4").tobytes() + part.faces.astype("<u4").tobytes()
    (root / "arm" / "shoulder.bin").write_bytes(stretched)  # the .gltf itself is untouched
    assert gltf.read_bytes() == text and len(stretched) == size
    second = run_preprocess(m, store, scheduler="serial")
    assert (second.done, second.skipped, second.failed) == (1, 0, [])
    assert second.line().startswith(f"preprocess {second.run_id}: 1 done, 0 skipped")
    stored = schema.open_store(store).load("arm-shoulder")
    assert float(stored["scale"]) == pytest.approx(3 * np.ptp(part.vertices[:, 2]), rel=1e-6)  # z is now longest
    third = run_preprocess(m, store, scheduler="serial")
    assert (third.done, third.skipped) == (0, 1)


@pytest.mark.timeout(120)
def test_gltf_buffers_outside_their_folder_or_not_files_are_never_read(tmp_path, robosuite_meshes):
    """What held in round one, kept: `../` and absolute buffer URIs are refused; a FIFO or /dev/zero is neither
    hashed nor loaded (either would hang)."""
    part = trimesh.load(robosuite_meshes["arm_link"][0], force="mesh")
    root = tmp_path / "meshes"
    (root / "arm").mkdir(parents=True)
    os.mkfifo(root / "outside.bin")
    os.mkfifo(root / "arm" / "pipe.bin")
    os.symlink("/dev/zero", root / "arm" / "zero.bin")
    for name, uri in [("up", "../outside.bin"), ("absolute", "/dev/zero"), ("fifo", "pipe.bin"), ("zero", "zero.bin")]:
        write_gltf(root / "arm" / f"{name}.gltf", part.vertices, part.faces, uri, buffer=False)
    summary = run_preprocess(folder_manifest_of(root), tmp_path / "store", scheduler="serial")
    reasons = {o.job.object_id: o.error for o in summary.failed}
    assert summary.done == 0 and sorted(reasons) == ["arm-absolute", "arm-fifo", "arm-up", "arm-zero"]
    assert "escapes resolver root" in reasons["arm-up"] and "\n" not in reasons["arm-up"]
    assert "not a regular file" in reasons["arm-fifo"] and "not a regular file" not in reasons["arm-zero"]


# S6 -------------------------------------------------------------------------------------------------------------

def test_a_sparse_stl_claiming_40m_triangles_fails_from_its_header_beside_real_parts(tmp_path, robosuite_meshes):
    """A 2 GB binary STL (sparse: no disk used) whose header claims 40M triangles is refused before it is read;
    the real parts beside it are written."""
    root = tmp_path / "meshes"
    huge = write_stl(root / "arm" / "huge.stl", np.zeros((0, 3, 3)))
    with open(huge, "r+b") as f:
        f.seek(80)
        f.write(np.uint32(40_000_000).tobytes())
        f.truncate(84 + 50 * 40_000_000)
    shutil.copy(robosuite_meshes["arm_link"][1], root / "arm" / "link_6.stl")
    start = time.perf_counter()
    summary = run_preprocess(folder_manifest_of(root), tmp_path / "store", scheduler="serial")
    assert time.perf_counter() - start < 60
    assert summary.done == 1 and [o.job.object_id for o in summary.failed] == ["arm-huge"]
    assert summary.failed[0].error == (f"MeshError: {huge}: 40,000,000 triangles, above the limit of 10,000,000 "
                                       "(max_triangles in the manifest's [params]; ~750 bytes of memory per triangle)")


@pytest.mark.parametrize("suffix, kwargs", [(".stl", {}), (".stl", {"file_type": "stl_ascii"}), (".obj", {}),
                                             (".ply", {}), (".ply", {"encoding": "ascii"}), (".off", {})])
def test_the_triangle_limit_is_read_from_headers_and_set_in_params(tmp_path, robosuite_meshes, suffix, kwargs):
    part = trimesh.load(robosuite_meshes["gripper_part"][0], force="mesh")
    path = tmp_path / "meshes" / "grip" / f"part{suffix}"
    path.parent.mkdir(parents=True)
    part.export(path, **kwargs)
    n = len(part.faces)
    with pytest.raises(MeshError, match=rf"^{path}: {n:,} triangles, above the limit of 100 \(max_triangles"):
        load_mesh(path, max_triangles=100)
    assert len(load_mesh(path, max_triangles=n)[1]) == n
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'name = "x"\n[params]\nmax_triangles = {n - 1}\n[[sources]]\ntype = "folder"\n'
                        f'root = "{tmp_path / "meshes"}"\n')
    summary = run_preprocess(load_manifest(manifest), tmp_path / "store", scheduler="serial")
    assert summary.done == 0 and f"above the limit of {n - 1:,}" in summary.failed[0].error


def uv_sphere(path: Path, n: int) -> int:
    """A closed UV sphere of 2 n (2 n) triangles, as a binary STL: a real mesh, big enough to matter."""
    u, v = np.linspace(0, np.pi, n + 1), np.linspace(0, 2 * np.pi, 2 * n + 1)
    p = np.stack([np.outer(np.sin(u), np.cos(v)), np.outer(np.sin(u), np.sin(v)),
                  np.outer(np.cos(u), np.ones_like(v))], axis=-1)
    a, b, c, d = p[:-1, :-1], p[1:, :-1], p[1:, 1:], p[:-1, 1:]
    triangles = np.concatenate([np.stack([a, b, c], -2).reshape(-1, 3, 3), np.stack([a, c, d], -2).reshape(-1, 3, 3)])
    write_stl(path, triangles)
    return len(triangles)


@pytest.mark.timeout(300)
def test_a_worker_killed_by_one_mesh_fails_only_that_object_and_the_run_completes(tmp_path, robosuite_meshes):
    """A worker of 1 GiB (a real LocalCluster, restarted by its nanny past 95%) meets a real 2M-triangle mesh
    (~1.8 GB to process) in a shard with two real parts: the worker dies; Dask used to end the run with
    KilledWorker, the store left in_progress and no record naming the file."""
    from distributed import Client

    from common.cluster import local_cluster
    from pipeline.executors import PREPROCESS_CLUSTER
    from pipeline.stages.validate import validate_store

    root = tmp_path / "meshes"
    big = root / "arm" / "big.stl"
    assert uv_sphere(big, 710) > 2_000_000
    for p in robosuite_meshes["gripper_part"][:2]:
        shutil.copy(p, root / "arm" / p.name)
    store = tmp_path / "store"
    with local_cluster(1, settings=PREPROCESS_CLUSTER, memory_limit="1GiB") as cluster, Client(cluster):
        summary = run_preprocess(folder_manifest_of(root), store, scheduler=cluster.scheduler_address)
    assert summary.done == 2 and [o.job.object_id for o in summary.failed] == ["arm-big"]
    assert summary.failed[0].error.startswith(f"{big}: the Dask worker computing it died (KilledWorker)")
    records = [json.loads(line) for line in (store / schema.RUNS_FILE).read_text().splitlines()]
    assert [(r["object_id"], r["source"]) for r in records if r["status"] == "failed"] == [("arm-big", str(big))]
    opened = schema.open_store(store)  # complete: not in_progress
    assert sorted(opened.object_ids) == sorted(f"arm-{p.stem}" for p in robosuite_meshes["gripper_part"][:2])
    assert validate_store(store) == []


# S10, D5: tests/pipeline/test_params_checks.py::test_parameters_beyond_what_one_object_can_use_are_refused

# D1 -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    (bytes(range(256)) * 8, "not a text file (byte 128 is not UTF-8); a manifest is TOML"),
    (b'name = "x"\na = ' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "not valid TOML (nested too deeply to parse)"),
    (b'name = "x"\na = ' + b"{b = " * 100_000 + b"1" + b"}" * 100_000 + b"\n",
     "not valid TOML (nested too deeply to parse)"),
    (b"# padding\n" * 420_000, "larger than 4 MiB, not a manifest"),
])
def test_a_garbage_deep_or_huge_manifest_is_one_line_naming_it(tmp_path, content, reason):
    path = tmp_path / "m.toml"
    path.write_bytes(content)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    assert str(exc.value) == f"{path}: {reason}"


def test_the_cli_names_a_binary_manifest_in_one_line(tmp_path):
    path = tmp_path / "m.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    proc = aps("preprocess", "--manifest", str(path), "--out", str(tmp_path / "store"))
    assert proc.returncode == 1
    assert proc.stderr == f"aps: error: {path}: not a text file (byte 0 is not UTF-8); a manifest is TOML\n"


# D6 -------------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_a_hostile_folder_gives_one_true_line_per_file_and_no_library_noise(tmp_path, robosuite_meshes):
    """A one-triangle STL was stored with no inside at all; a point cloud failed as "no vertices"; a garbage STEP
    put `**** ERR StepFile` on stdout and cascadio's `Error:` on stderr. The open real forearm is still stored."""
    cat = tmp_path / "meshes" / "parts"
    write_stl(cat / "one_triangle.stl", np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]]))
    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)[[[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]]
    nan = tetra.copy()
    nan[0, 0, 0] = np.nan
    write_stl(cat / "nan.stl", nan)
    write_stl(cat / "trailing.stl", tetra, trailing=b"\0\0")
    points = np.random.default_rng(0).random((102, 3))
    (cat / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 102\nproperty float x\nproperty float y\n"
                                   "property float z\nend_header\n" + "".join(f"{x} {y} {z}\n" for x, y, z in points))
    (cat / "garbage.step").write_bytes(b"ISO-10303-21;\nHEADER;\n" + bytes(range(256)) * 4)
    forearm = robosuite_meshes["arm_link"][3]
    shutil.copy(forearm, cat / "forearm.stl")
    proc = aps("preprocess", "--meshes", str(tmp_path / "meshes"), "--out", str(tmp_path / "store"),
               "--scheduler", "serial", "--views", "1", "--image-size", "16")
    assert proc.returncode == 1
    failed = {line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in proc.stderr.splitlines()
              if line.startswith("  failed: ")}
    assert failed == {
        "parts-one_triangle": f"MeshError: {cat / 'one_triangle.stl'}: encloses no volume (none of its 10,000 "
                              "sample points is inside: a flat or open sheet?); occupancy needs a solid",
        "parts-cloud": f"MeshError: {cat / 'cloud.ply'}: no triangles: a point cloud of 102 points",
        "parts-nan": f"MeshError: {cat / 'nan.stl'}: 1 vertices are NaN or infinite",
        "parts-trailing": f"MeshError: {cat / 'trailing.stl'}: no triangles: not a valid STL (binary, but its header "
                          "says 4 triangles, 284 bytes, and the file has 286)",
        "parts-garbage": f"MeshError: {cat / 'garbage.step'}: OpenCASCADE found no surface to tessellate (empty or "
                         "unreadable step: ERR StepFile : Undefined Parsing: Line 4: Incorrect syntax: unexpected "
                         "QUID, expecting ENDSEC or TYPE)"}
    assert ": 1 done, 0 skipped, 5 failed" in proc.stdout
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("  failed: ")
             and any(word in line for word in ("Warning", "****", "Error", "Traceback"))]
    assert noise == []


# D11 ------------------------------------------------------------------------------------------------------------

def test_a_root_of_proc_is_listed_without_a_permission_error_and_names_the_manifest(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('name = "x"\n[[sources]]\ntype = "folder"\nroot = "/proc"\n')
    with pytest.raises(ManifestError, match=rf"^{path}: source 1 \(folder\): /proc: no mesh or CAD files"):
        load_manifest(path).objects()


@pytest.mark.timeout(60)
def test_a_category_linked_to_slash_is_not_walked_and_special_files_are_skipped(tmp_path, robosuite_meshes, caplog):
    """root/everything -> / walked the whole filesystem; FIFOs, links to /dev/zero and symlink loops named like
    meshes are left out without a hang (what held in round one); a symlinked category inside the root is kept."""
    root = tmp_path / "meshes"
    (root / "arm" / "deeper").mkdir(parents=True)
    shutil.copy(robosuite_meshes["arm_link"][1], root / "arm" / "link_6.stl")
    os.symlink("/", root / "everything")
    os.symlink("/", root / "arm" / "deeper" / "slash")
    os.symlink(root / "arm", root / "arm_again")
    os.mkfifo(root / "arm" / "pipe.stl")
    os.symlink("/dev/zero", root / "arm" / "zero.stl")
    os.symlink("loop.stl", root / "arm" / "loop.stl")
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.walk"):
        objects = folder_manifest_of(root).objects()
    assert sorted(spec.object_id for spec, _ in objects) == ["arm-link_6", "arm_again-link_6"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{root}: left out 1 symlinked folder(s) that lead out of the source root, not followed: "
        f"{root / 'everything'} -> /"]
