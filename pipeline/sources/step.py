"""CAD parts from industry (STEP, IGES): the digital-twin case. Tessellated with OpenCASCADE through cascadio
(what trimesh itself uses for STEP) at a tolerance stated relative to the part's size.

Tolerance: `tolerance` is the largest distance allowed between a triangle and the exact BREP surface (OCC's
linear deflection), as a fraction of the part's longest bounding-box side, i.e. in the unit-cube units the
part is normalised to. The default 0.001 is a quarter of a voxel of the paper's 256^3 evaluation grid and 1/20
of d* = 5/256. `angular_deg` bounds the angle between neighbouring facets of a curved face (OCC's angular
deflection), so small holes stay round even when the linear bound alone would allow a coarse polygon.
Vertices come back in metres, whatever the file's unit (IGES output, in millimetres, is converted).
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources.keys import TEXT, TEXTS, needed, number_in
from pipeline.sources.spec import ObjectSpec, SourceError, encode_extras, suffix_colliding_ids
from pipeline.sources.walk import resolve_root, walk_categories
from pipeline.stages.load import MeshError, check_mesh

log = logging.getLogger(__name__)
# cascadio and trimesh are imported where a CAD file is read: heavy, and most runs read none

CAD_SUFFIXES = {".step": "step", ".stp": "step", ".iges": "iges", ".igs": "iges"}
DEFAULT_TOLERANCE = 1e-3
DEFAULT_ANGULAR_DEG = 12.0
# OpenCASCADE's session length unit is the millimetre and the linear deflection is given in it. cascadio's GLB
# of a STEP file is in metres (the file's unit applied), of an IGES file in that session unit, millimetres.
# Measured on exact geometry in tests/pipeline/sources/test_step.py, for both formats.
_MM_PER_OUTPUT_UNIT = {"step": 1000.0, "iges": 1.0}
SOURCE_KEYS = {"step_folder": {"root": needed(TEXT, "the folder holding one subfolder per category"),
                               "categories": TEXTS,
                               "tolerance": number_in(0, 0.1, hi_open=True, what="(fraction of the longest side)"),
                               "angular_deg": number_in(0, 60, what="(degrees)")}}


def list_step_folder(source: dict[str, Any], manifest_dir: Path) -> list[ObjectSpec]:
    """[[sources]] type = "step_folder": root/<category>/**/<part>.step|.stp|.iges|.igs, optional categories,
    tolerance (fraction of the longest side, default 0.001) and angular_deg (default 12)."""
    root = resolve_root(str(source["root"]), manifest_dir)
    if not root.is_dir():
        raise SourceError(f"{root}: CAD folder not found")
    tolerance = float(source.get("tolerance", DEFAULT_TOLERANCE))
    angular = float(source.get("angular_deg", DEFAULT_ANGULAR_DEG))
    if not (0 < tolerance < 0.1) or not (0 < angular <= 60):
        raise SourceError(f"step_folder: tolerance must be in (0, 0.1) (fraction of the longest side) and "
                          f"angular_deg in (0, 60]; got {tolerance}, {angular}")
    wanted = set(source.get("categories", []))
    extras = encode_extras({"tessellation": {"tolerance": tolerance, "angular_deg": angular}})
    specs = suffix_colliding_ids(walk_categories(root, CAD_SUFFIXES, wanted, extras))
    if not specs:
        raise SourceError(f"{root}: no CAD files ({', '.join(CAD_SUFFIXES)}) in its category subfolders")
    return specs


@contextmanager
def native_output() -> Iterator[list[str]]:
    """Collect what native code writes to the process's stdout and stderr (OpenCASCADE's coloured
    `**** ERR StepFile : ...` on fd 1, cascadio's `Error: Failed to read STEP data` on fd 2) instead of letting it
    reach the terminal: the list it yields gets the non-empty lines, without colour codes, when the block ends;
    the caller turns them into its one-line reason. C's stdio buffers are flushed before the descriptors return."""
    lines: list[str] = []
    for stream in (sys.stdout, sys.stderr):  # what Python buffered goes out first, where it belongs
        if stream is not None:
            stream.flush()
    libc = ctypes.CDLL(None)
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read(1 << 16).decode(errors="replace")
            lines += [clean for line in text.splitlines() if (clean := _ANSI.sub("", line).strip(" *"))]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tessellate(data: bytes, file_type: str, tol_linear: float, tol_relative: bool, tol_angular: float,
                said: list[str] | None = None):
    """cascadio's tessellation as a trimesh mesh, or None where it gives nothing; what OpenCASCADE printed goes
    to `said` (native_output), never to the terminal."""
    import cascadio
    import trimesh

    with native_output() as printed:
        glb = cascadio.load(data, file_type=file_type, tol_linear=tol_linear, tol_angular=tol_angular,
                            tol_relative=tol_relative, use_parallel=False)
    if said is not None:
        said += printed
    if not glb:
        return None
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh", process=False)
    return mesh if len(getattr(mesh, "faces", [])) else None


def load_cad(path: str | Path, tolerance: float = DEFAULT_TOLERANCE, angular_deg: float = DEFAULT_ANGULAR_DEG,
             require_closed: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tessellate a STEP or IGES file: vertices (V, 3) float64 in metres, faces (F, 3) int64.

    Two passes: a coarse one finds the part's size, then the part is tessellated with a linear deflection of
    `tolerance` times its longest side. Faces of the BREP share their boundary vertices after merging, so a
    closed solid comes out watertight.

    IGES files usually hold unsewn trimmed surfaces, not solids: their faces come out separately, some of them
    reversed, and the winding-number inside test is then wrong (measured: 3.7% of uniform points differ from
    the same part read from STEP). So an IGES tessellation must be closed (`require_closed`, default True for
    IGES, False for STEP) or the object fails with that reason.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    file_type = CAD_SUFFIXES.get(path.suffix.lower())
    if file_type is None:
        raise MeshError(f"{path}: not a CAD file ({', '.join(CAD_SUFFIXES)})")
    try:
        import cascadio  # noqa: F401 - only to say what is missing
    except ImportError as exc:
        raise MeshError(f"{path}: reading STEP/IGES needs the 'cascadio' package (pip install cascadio)") from exc
    data = path.read_bytes()
    said: list[str] = []
    coarse = _tessellate(data, file_type, 0.5, True, np.radians(30.0), said)
    if coarse is None:
        why = next((line for line in said if "ERR" in line), said[0] if said else "")
        raise MeshError(f"{path}: OpenCASCADE found no surface to tessellate (empty or unreadable {file_type}"
                        f"{': ' + why if why else ''})")
    mm_per_unit = _MM_PER_OUTPUT_UNIT[file_type]
    tol_linear = tolerance * float(np.ptp(coarse.vertices, axis=0).max()) * mm_per_unit
    mesh = _tessellate(data, file_type, tol_linear, False, np.radians(angular_deg))
    if mesh is None:
        raise MeshError(f"{path}: tessellation at {tolerance} of the longest side failed")
    mesh.merge_vertices()
    log.debug("%s: %d triangles at linear deflection %.3g mm", path, len(mesh.faces), tol_linear)
    if require_closed is None:
        require_closed = file_type == "iges"
    if require_closed and not mesh.is_watertight:
        import trimesh

        open_edges = len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1))
        raise MeshError(f"{path}: the {file_type} surfaces are not sewn into a closed solid ({open_edges} open "
                        "edges), so inside/outside is undefined; export the part as STEP (a solid)")
    vertices = np.asarray(mesh.vertices, np.float64) * (mm_per_unit / 1000.0)
    return check_mesh(vertices, np.asarray(mesh.faces, np.int64), str(path))
