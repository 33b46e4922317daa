"""Read a mesh file of any common format into one triangle soup, refusing what cannot be processed."""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common.errors import first_line

# trimesh is imported where a mesh is read: heavy, and the manifest and config import this module for its names
MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")
# Coordinates beyond this are refused: triangle areas square the coordinates and their norms square them again,
# which overflows float64 from about 1e77; no real part is 1e30 units of anything wide (1e30 nm is 1e12 km).
MAX_COORDINATE = 1e30
# The preprocess holds ~750 bytes per triangle (measured on a 330k-triangle part: +245 MB), so 10M triangles is
# ~7.5 GB, a worker's share of a 16-core node with 128 GB; real CAD parts have up to a few million. A manifest
# sets another limit with [params] max_triangles (pipeline.config).
DEFAULT_MAX_TRIANGLES = 10_000_000


class MeshError(ValueError):
    """A mesh that cannot be processed; the message names the file and the reason in one line."""


def load_mesh(path: str | Path, max_triangles: int = DEFAULT_MAX_TRIANGLES) -> tuple[np.ndarray, np.ndarray]:
    """Load OBJ, STL (ascii or binary), PLY, OFF, GLB/GLTF; multi-part scenes are merged into one object.

    A mesh with more than `max_triangles` triangles is refused before it is read where its header or face lines
    say so (binary and ASCII STL, PLY, OFF, OBJ), after it is read otherwise (glTF). Returns vertices (V, 3)
    float64 in the file's units and faces (F, 3) int64.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MeshError(f"{path}: empty file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh format {path.suffix!r} (use one of {', '.join(MESH_SUFFIXES)})")
    claimed = claimed_triangles(path)
    if claimed is not None:
        check_triangles(path, claimed, max_triangles, "; ~750 bytes of memory per triangle")
    for uri, target in referenced_files(path):  # the loader would block on a FIFO, read /dev/zero to the end
        if target is not None and not target.is_file():
            raise MeshError(f"{path}: its URI {uri!r} names {target}, which is not a regular file")
    if path.suffix.lower() == ".stl":
        soup = read_binary_stl(path)
        if soup is not None:
            return check_mesh(*soup, str(path))
    with quiet_library():
        import trimesh

        try:
            # scenes (GLB/GLTF, multi-object OBJ) are concatenated with their node transforms applied
            mesh = trimesh.load(str(path), force="mesh", process=False)
        except Exception as exc:  # noqa: BLE001 - every parser error becomes one clear line
            detail = first_line(exc, "")
            raise MeshError(f"{path}: cannot parse mesh ({type(exc).__name__}: {detail})") from exc
        vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
        faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
        if len(faces) == 0:
            raise MeshError(f"{path}: {_no_faces(path)}")
    check_triangles(path, len(faces), max_triangles)
    return check_mesh(vertices, faces, str(path))


def check_triangles(path: str | Path, n: int, limit: int, why: str = "") -> None:
    """MeshError when a mesh has (or its header claims) more than `limit` triangles (`[params] max_triangles`)."""
    if n > limit:
        raise MeshError(f"{path}: {n:,} triangles, above the limit of {limit:,} (max_triangles in the manifest's "
                        f"[params]{why})")


@contextmanager
def quiet_library() -> Iterator[None]:
    """Parse without library noise: numpy's floating-point warnings on NaN or huge files, Python warnings and
    trimesh's log lines. What went wrong is the MeshError's one line (in a Dask worker, a log line would go to the
    terminal raw)."""
    trimesh_log = logging.getLogger("trimesh")
    level = trimesh_log.level
    trimesh_log.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        trimesh_log.setLevel(level)


def _no_faces(path: Path) -> str:
    """Why a file gave no triangles, in a few words: a point cloud, a binary STL whose size disagrees with its
    header, or no geometry at all."""
    import trimesh

    if path.suffix.lower() == ".stl" and (n := _stl_header_count(path)) is not None:
        size = path.stat().st_size
        if not _looks_like_text(path):
            return (f"no triangles: not a valid STL (binary, but its header says {n:,} triangles, {84 + 50 * n:,} "
                    f"bytes, and the file has {size:,})")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception:  # noqa: BLE001 - only to describe the file; the load above failed already
        loaded = None
    if isinstance(loaded, trimesh.PointCloud):
        return f"no triangles: a point cloud of {len(loaded.vertices):,} points"
    geometry = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    points = sum(len(g.vertices) for g in geometry if isinstance(g, trimesh.PointCloud))
    if points:
        return f"no triangles: only point clouds ({points:,} points)"
    return f"no triangles (not a valid {path.suffix.lstrip('.').upper()} file?)"


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return head.lstrip().lower().startswith(b"solid") and b"\0" not in head[80:]


def _stl_header_count(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(84)
    return struct.unpack_from("<I", head, 80)[0] if len(head) == 84 else None


def claimed_triangles(path: Path) -> int | None:
    """How many triangles a mesh file holds, at least, read without loading it: a binary STL's header count (when
    the file's size agrees with it, as read_binary_stl requires), the face count of a PLY or OFF header, the
    facets of an ASCII STL or the face lines of an OBJ (counted at disk speed); None for glTF."""
    suffix = path.suffix.lower()
    if suffix == ".stl":
        n = _stl_header_count(path)
        if n is not None and path.stat().st_size == 84 + 50 * n:
            return n
        return _count_lines(path, b"outer") if _looks_like_text(path) else None
    if suffix == ".obj":
        return _count_lines(path, b"f ", b"f\t")
    if suffix == ".ply":
        return _ply_faces(path)
    if suffix == ".off":
        return _off_faces(path)
    return None


def _count_lines(path: Path, *starts: bytes) -> int:
    """Lines of a text file that begin with one of `starts` after optional blanks, counted in one pass over blocks
    of 16 MiB."""
    pattern = re.compile(rb"(?m)^[ \t]*(?:" + b"|".join(map(re.escape, starts)) + rb")")
    count, tail = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the block: its start is all that is matched
                tail = (tail + block)[:64]
                continue
            count += len(pattern.findall(tail + block[:cut]))
            tail = block[cut:]
    return count + len(pattern.findall(tail))


def _ply_faces(path: Path) -> int | None:
    """`element face N` of a PLY header (read up to its first 64 kB)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    m = re.search(rb"(?m)^element\s+face\s+(\d+)\s*$", head[:end if end >= 0 else len(head)])
    return int(m.group(1)) if m else None


def _off_faces(path: Path) -> int | None:
    """The face count of an OFF header: `OFF` then `V F E`, possibly on one line, comments (#) skipped."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    words = b" ".join(line.split(b"#")[0] for line in head.splitlines()[:64]).split()
    if not words or not words[0].endswith(b"OFF"):
        return None
    counts = words[1:3]
    return int(counts[1]) if len(counts) == 2 and all(c.isdigit() for c in counts) else None


# a glTF's "uri": "..." values (JSON strings, escapes included); data: URIs carry their bytes in the file itself
_URI = re.compile(rb'"uri"\s*:\s*"((?:[^"\\]|\\.){1,4096})"')


def referenced_files(path: str | Path) -> list[tuple[str, Path | None]]:
    """The files a glTF (.gltf, or a .glb's JSON chunk) names by URI, its buffers and images: (uri, path), found
    as trimesh's loader finds them (FilePathResolver.get: the URI, then without a leading '/', then its bare file
    name, the first that exists inside the glTF's folder: a `../` or absolute URI never reaches out), path None
    where none exists. Other formats name none that shape the geometry: an OBJ's .mtl and its textures give colour
    only, which no stored array holds (views are rendered grey). The file is scanned through mmap, never parsed
    whole, so a huge or hostile one costs no memory."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gltf", ".glb") or not path.is_file() or path.stat().st_size == 0:
        return []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start, end = 0, len(mm)
        if suffix == ".glb":  # 12-byte header, then the JSON chunk: length, type, bytes
            if end < 20 or mm[:4] != b"glTF" or mm[16:20] != b"JSON":
                return []
            start, end = 20, min(end, 20 + struct.unpack_from("<I", mm, 12)[0])
        uris = []
        for m in _URI.finditer(mm, start, end):
            try:
                uri = json.loads(b'"' + m.group(1) + b'"')
            except ValueError:
                continue
            if "base64," not in uri:
                uris.append(uri)
    folder = path.parent.resolve()
    return [(uri, _resolve_inside(folder, uri)) for uri in uris]


def _resolve_inside(folder: Path, uri: str) -> Path | None:
    for candidate in (uri.strip(), uri.strip().lstrip("/"), os.path.split(uri)[-1]):
        try:
            target = (folder / candidate).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            continue
        if target.is_relative_to(folder) and target.exists():
            return target
    return None


_STL_TRIANGLE = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attributes", "<u2")])


def read_binary_stl(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A binary STL's triangle soup, as trimesh.load(process=False) returns it (vertices (3F, 3) float64, faces
    arange(3F) as (F, 3)), or None when the file is not binary STL (its size is not 84 + 50 x its triangle count:
    trimesh's own test); 10x faster than trimesh, and a worker that meets only binary STL never imports it
    (1.2 s of every worker's start)."""
    with open(path, "rb") as f:
        head = f.read(84)
        if len(head) < 84:
            return None
        n = int(np.frombuffer(head, "<u4", 1, 80)[0])
        if n == 0 or path.stat().st_size != 84 + 50 * n:
            return None
        triangles = np.fromfile(f, _STL_TRIANGLE, n)
    if len(triangles) != n:
        return None
    vertices = triangles["vertices"].reshape(-1, 3).astype(np.float64)
    return vertices, np.arange(3 * n, dtype=np.int64).reshape(n, 3)


def check_mesh(vertices: np.ndarray, faces: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a triangle soup and drop zero-area triangles; raises MeshError naming `name`."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise MeshError(f"{name}: no vertices")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError(f"{name}: no triangles")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{name}: {int((~np.isfinite(vertices)).any(axis=1).sum())} vertices are NaN or infinite")
    reach = float(np.abs(vertices).max())
    if reach > MAX_COORDINATE:
        raise MeshError(f"{name}: coordinates up to {reach:.3g} file units, beyond the {MAX_COORDINATE:.0e} that can "
                        "be computed with (a unit or export error?)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{name}: face indices out of range")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = area > 1e-12 * max(float(np.ptp(vertices, axis=0).max()), 1e-30) ** 2
    if not keep.any():
        raise MeshError(f"{name}: degenerate mesh (all {len(faces)} triangles have zero area)")
    extent = np.ptp(vertices[faces[keep]].reshape(-1, 3), axis=0)
    if (extent > 1e-9 * extent.max()).sum() < 2:
        raise MeshError(f"{name}: degenerate mesh (all triangles lie on a line)")
    return vertices, faces[keep]
