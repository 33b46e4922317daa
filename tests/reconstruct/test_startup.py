"""`aps reconstruct`'s start-up and per-photo work (issue 24): the command imports no other stage's modules and
no trimesh, and the faster ways it writes a PLY and draws the preview's mesh give the same bytes and pixels as
the plain ones. A real command in a fresh process, a real checkpoint file, real geometry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from evaluation.render import PRED_COLOR
from inference.mesh_io import ply_bytes, vertex_normals, write_mesh
from pipeline.cameras import render_mesh, scale_intrinsics
from reconstruct.framing import R0, canonical_camera
from reconstruct.preview import mesh_views

# What `aps reconstruct` must not load: the other stages' command modules (aps.cli imported all of them to
# build its command list: 0.2 s) and trimesh (0.4-0.7 s, for a PLY that numpy writes byte for byte).
NOT_NEEDED = ("pipeline.cli", "trainer.cli", "evaluation.cli", "trimesh", "dask")

# the `aps` console script in a fresh process (python -X importtime: every module it loads is named on stderr);
# an atexit handler writes a file, which must not appear: the command ends without the interpreter's teardown
RUN = """
import atexit, pathlib, sys
marker, sys.argv = sys.argv[1], ["aps", *sys.argv[2:]]
atexit.register(lambda: pathlib.Path(marker).write_text("teardown ran"))
from aps.cli import main
main()
"""
def _aps(tmp_path, *args) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`aps ARGS` in a fresh process: what it did (its stderr without the import times), and the modules it
    loaded."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", RUN, str(tmp_path / "teardown"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    loaded = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    done.stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    return done, loaded


def _photo(path) -> None:
    photo = Image.new("RGB", (96, 80), (205, 190, 165))
    ImageDraw.Draw(photo).rounded_rectangle((24, 18, 72, 62), radius=8, fill=(70, 75, 85))
    photo.save(path)


def test_reconstruct_loads_no_other_stage_and_no_trimesh(checkpoint, tmp_path):
    _photo(tmp_path / "part.png")
    out = tmp_path / "out"
    done, loaded = _aps(tmp_path, "reconstruct", tmp_path / "part.png", "--checkpoint", checkpoint, "--out", out,
                        "--resolution", "16", "--coarse", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["part.json", "part.ply", "part.preview.png", "reconstruct.html"]
    assert "reconstruct.framing" in loaded and "torch" in loaded  # (importlib.import_module is not timed)
    assert not [name for name in NOT_NEEDED if name in loaded], sorted(loaded & set(NOT_NEEDED))
    info = json.loads((out / "part.json").read_text())
    header = (out / "part.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert f"element vertex {info['n_vertices']}\n" in header and f"element face {info['n_faces']}\n" in header


def test_reconstruct_ends_without_teardown_with_its_status_and_output(checkpoint, tmp_path):
    """Skipping the interpreter's teardown (1 s) keeps the exit status and everything printed, through pipes."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png")
    (photos / "b.png").write_bytes(b"not an image")
    done, _ = _aps(tmp_path, "reconstruct", photos, "--checkpoint", checkpoint, "--out", tmp_path / "out",
                   "--resolution", "16", "--coarse", "0", "--no-preview")
    assert done.returncode == 1
    assert done.stdout.strip().endswith(f"1 of 2 images reconstructed into {tmp_path / 'out'}")
    assert done.stderr.strip().endswith("aps: error: 1 of 2 images failed: b.png")
    assert (tmp_path / "out" / "a.ply").is_file() and not (tmp_path / "out" / "b.ply").exists()
    assert not (tmp_path / "teardown").exists()
    done, _ = _aps(tmp_path, "reconstruct", photos / "a.png", "--checkpoint", checkpoint, "--out",
                   tmp_path / "out2", "--resolution", "16", "--coarse", "0", "--size", "nan")
    assert done.returncode == 1 and "aps: error: --size must be positive" in done.stderr
    assert not (tmp_path / "teardown").exists()
    done, _ = _aps(tmp_path, "--help")  # other commands and the help end as before: atexit handlers run
    assert done.returncode == 0 and (tmp_path / "teardown").read_text() == "teardown ran"


def test_the_help_still_lists_every_command():
    done = subprocess.run([sys.executable, "-c", "from aps.cli import main; main()", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(f" {name} " in done.stdout for name in ("preprocess", "train", "eval", "compare", "reconstruct"))


def _torus(resolution: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A marching-cubes torus (major radius 0.3, minor 0.12), vertices float32 (V, 3), faces int64 (F, 3)."""
    from skimage.measure import marching_cubes

    g = np.linspace(-0.5, 0.5, resolution)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    sdf = (np.sqrt(x ** 2 + y ** 2) - 0.3) ** 2 + z ** 2 - 0.12 ** 2
    vertices, faces, _, _ = marching_cubes(sdf, 0.0, spacing=(g[1] - g[0],) * 3)
    return (vertices - 0.5).astype(np.float32), faces.astype(np.int64)


def test_ply_is_byte_for_byte_what_trimesh_wrote(tmp_path):
    import trimesh

    vertices, faces = _torus()
    cases = {"torus": (vertices, faces), "float64 and int32": (vertices.astype(np.float64), faces.astype(np.int32))}
    empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    write_mesh(*empty, tmp_path / "empty.ply")  # trimesh cannot make an empty mesh with normals to compare with
    assert (tmp_path / "empty.ply").read_bytes() == ply_bytes(*empty, np.zeros((0, 3), np.float32))
    assert b"element vertex 0\nproperty float x" in (tmp_path / "empty.ply").read_bytes()
    for name, (v, f) in cases.items():
        n = vertex_normals(v, f)
        expected = trimesh.Trimesh(v, f, vertex_normals=n, process=False).export(file_type="ply")
        assert ply_bytes(v, f, n) == expected, name
        write_mesh(v, f, tmp_path / "mesh.ply")
        assert (tmp_path / "mesh.ply").read_bytes() == expected, name
    write_mesh(vertices, faces, tmp_path / "torus.ply")
    back = trimesh.load(tmp_path / "torus.ply", process=False)
    np.testing.assert_array_equal(back.vertices, vertices)
    np.testing.assert_array_equal(back.faces, faces)


def test_preview_mesh_views_are_the_plain_renders():
    vertices, faces = _torus()
    tile = 128
    K, Rt = canonical_camera(137)
    K = scale_intrinsics(K, tile / 137)
    a = np.radians(50.0)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rts = [Rt, np.concatenate([R0 @ turn, Rt[:, 3:]], axis=1)]
    views = mesh_views(vertices, faces, K, Rts, tile)
    for view, rt in zip(views, Rts, strict=True):
        assert (view[..., 3] > 0).mean() > 0.05  # the torus is in the picture
        np.testing.assert_array_equal(view, render_mesh(vertices, faces, K, rt, tile, tile, PRED_COLOR))
    empty = mesh_views(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), K, Rts, tile)
    assert all(v.shape == (tile, tile, 4) and not v.any() for v in empty)


# ---- the training store's framing, measured once a store ------------------------------------------------------
FRAMING = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from pipeline.schema.read import open_store
from reconstruct.framing import remembered_framing
framing = remembered_framing(open_store(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"framing": asdict(framing), "read_views": "zarr" in sys.modules}))
"""


def _remembered(store, cache) -> tuple[dict, bool]:
    """remembered_framing in a fresh process: (the framing, whether it read the store's views: zarr loaded)."""
    done = subprocess.run([sys.executable, "-c", FRAMING, str(store), str(cache)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    return out["framing"], out["read_views"]


def test_framing_is_measured_once_a_store_and_again_when_it_changes(demo_store, tmp_path):
    from dataclasses import asdict

    from pipeline.schema.read import open_store
    from reconstruct.framing import framing_from_store

    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    measured = asdict(framing_from_store(open_store(store)))
    cache = tmp_path / "cache"
    assert _remembered(store, cache) == (measured, True)
    assert len(list(cache.iterdir())) == 1
    assert _remembered(store, cache) == (measured, False)  # the same figures, no view read
    index = store / "index.json"
    os.utime(index, ns=(index.stat().st_atime_ns, index.stat().st_mtime_ns + 1_000_000_000))
    assert _remembered(store, cache) == (measured, True)  # the store's index changed: measured again
    assert _remembered(store, cache) == (measured, False)


@pytest.mark.parametrize("figures", [
    '{"fill": NaN, "distance": 1.8, "image_size": 137, "greyscale": true}',
    '{"fill": 0.6, "distance": -1, "image_size": 137, "greyscale": true}',
    '{"fill": 0.6, "distance": 1.8, "image_size": true, "greyscale": true}',
    '{"fill": "0.6", "distance": 1.8, "image_size": 137, "greyscale": true}',
    '{"fill": 0.6, "distance": 1.8, "image_size": 137, "greyscale": true, "source": "/elsewhere"}',
    "[" * 3000 + "]" * 1000, '"x"' + " " * 5000])
def test_a_remembered_framing_that_is_not_one_is_measured_again(demo_store, tmp_path, figures):
    from dataclasses import asdict

    from pipeline.schema.read import open_store
    from reconstruct.framing import framing_from_store

    measured = asdict(framing_from_store(open_store(demo_store)))
    cache = tmp_path / "cache"
    _remembered(demo_store, cache)
    (path,) = cache.iterdir()
    record = json.loads(path.read_text())
    key = json.dumps({k: record[k] for k in ("version", "store", "index")})[:-1]
    path.write_text(f'{key}, "framing": {figures}}}' if figures.startswith("{") else figures)
    assert _remembered(demo_store, cache) == (measured, True)


def test_a_cache_that_cannot_be_written_only_costs_the_measurement(demo_store, tmp_path):
    from dataclasses import asdict

    from pipeline.schema.read import open_store
    from reconstruct.framing import framing_from_store

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    measured = asdict(framing_from_store(open_store(demo_store)))
    assert _remembered(demo_store, blocked) == (measured, True)
    assert _remembered(demo_store, blocked) == (measured, True)
