"""Standard catalogue parts generated from parametric CAD: bd_warehouse's ISO/DIN/ASME tables (nuts, washers, screws,
bearings, flanges, pipes, gears, O-rings, snap rings, shaft keys) built with build123d on OpenCASCADE.

A part is a pure function of its parameters: `[[sources]] type = "catalogue"` lists (class, arguments) pairs from
the library's own data tables, the object's source is `bd_warehouse:<Class>(<arguments>)`, and its content hash is
that text plus the versions of bd_warehouse, build123d and the OCP kernel (hash_catalogue_source), so a rerun skips
every part it has and a new library version redoes them all. The part is built inside the Dask worker that
processes it (load_catalogue_part), so generation is part of the parallel ETL.

Tessellation as for the STEP source (pipeline.sources.step): `tolerance` is OpenCASCADE's linear deflection as a
fraction of the part's longest bounding-box side (default 0.001, a quarter of a voxel of 256^3), `angular_deg` its
angular deflection. Vertices come back in metres (the library models in millimetres). A part whose triangles do
not close (an edge used a -> b more often than b -> a) fails with that reason: inside/outside would be undefined.
Parts of several solids (a bearing's rings and balls, a threaded screw's core and thread) are closed shells that
may touch or overlap, which the winding-number inside test (pipeline.stages.distances.inside) handles.

The store records source and extras, and evaluation rebuilds the ground truth from them: both are read back from a
file, so a class is looked up by name in this module's table (never imported or evaluated from the text) and its
arguments must be the strings and numbers the listing writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.threads import library_threads
from pipeline.sources.keys import FLAG, TEXT, TEXTS, Key, needed, number_in
from pipeline.sources.spec import ObjectSpec, SourceError, decode_extras, encode_extras, make_object_id
from pipeline.stages.load import MeshError, check_mesh

SCHEME = "bd_warehouse:"
DEFAULT_TOLERANCE = 1e-3
DEFAULT_ANGULAR_DEG = 12.0
MIN_TOLERANCE, MIN_ANGULAR_DEG = 1e-5, 1.0
"""the finest tessellation a manifest or a store record may ask for: the triangle count grows as 1/tolerance, and
these bounds keep a part's mesh within memory (1e-5 of the longest side is 1/40 of a voxel of 1024^3)"""
LENGTH_PICKS = ("shortest", "middle", "longest")
GEAR_KINDS = ("spur", "helical")
IN_MM = 25.4


@dataclass(frozen=True)
class Part:
    """One catalogue part as listed: its id parts (after the category) and the library call that builds it."""

    name: tuple[str, ...]
    cls: str
    args: dict[str, Any]


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and v != [] and all(
        isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < 1e4 for x in v)


NUMBERS = Key("a non-empty list of positive numbers", _numbers)

# family -> (module, the classes it lists, what `standards` filters); modules are bd_warehouse's
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "nut": ("fastener", ("HexNut", "HexNutWithFlange", "UnchamferedHexagonNut", "SquareNut", "HeatSetNut",
                         "DomedCapNut"), "fastener type (iso4032, din1587, ...)"),
    "washer": ("fastener", ("PlainWasher", "ChamferedWasher", "CheeseHeadWasher", "InternalToothLockWasher"),
               "fastener type (iso7089, ...)"),
    "screw": ("fastener", ("ButtonHeadScrew", "ButtonHeadWithCollarScrew", "CheeseHeadScrew", "CounterSunkScrew",
                           "HexHeadScrew", "HexHeadWithFlangeScrew", "PanHeadScrew", "PanHeadWithCollarScrew",
                           "RaisedCheeseHeadScrew", "RaisedCounterSunkOvalHeadScrew", "SetScrew", "ShoulderScrew",
                           "SocketHeadCapScrew", "LowProfileScrew"), "fastener type (iso4762, ...)"),
    "bearing": ("bearing", ("SingleRowDeepGrooveBallBearing", "SingleRowCappedDeepGrooveBallBearing",
                            "SingleRowAngularContactBallBearing", "SingleRowCylindricalRollerBearing",
                            "SingleRowTaperedRollerBearing"), "bearing type (SKT, OpenBuilds)"),
    "flange": ("flange", ("BlindFlange", "SlipOnFlange", "SocketWeldFlange", "WeldNeckFlange"), "face type (Raised, "
               "Flat, ...)"),
    "pipe": ("pipe", ("Pipe",), "material (abs, copper, stainless, ...)"),
    "gear": ("gear", ("SpurGear", "HelicalGear"), "kind (spur, helical)"),
    "o_ring": ("o_rings", ("ORing",), "O-ring type (iso3601)"),
    "snap_ring": ("retaining_ring", ("ExternalSnapRing", "InternalSnapRing"), "none"),
    "key": ("shaft_key", ("ShaftKey",), "key form (A, B)"),
}

SOURCE_KEYS = {"catalogue": {
    "family": needed(Key(f"one of {', '.join(FAMILIES)}", lambda v: v in FAMILIES), "which kind of part"),
    "category": TEXT,
    "classes": TEXTS,
    "standards": TEXTS,
    "sizes": TEXTS,
    "lengths": Key(f"a list of {', '.join(LENGTH_PICKS)}",
                   lambda v: isinstance(v, list) and v != [] and all(x in LENGTH_PICKS for x in v)),
    "threads": FLAG,
    "flange_classes": NUMBERS,
    "nps": TEXTS,
    "teeth": NUMBERS,
    "face_widths": NUMBERS,
    "length_ratio": number_in(0, 100, what="(part length over its diameter)"),
    "tolerance": number_in(MIN_TOLERANCE, 0.1, lo_open=False, hi_open=True, what="(fraction of the longest side)"),
    "angular_deg": number_in(MIN_ANGULAR_DEG, 60, lo_open=False, what="(degrees)"),
}}


def _library(module: str):
    import importlib

    return importlib.import_module(f"bd_warehouse.{module}")


def library_versions() -> dict[str, str]:
    """The versions a part's geometry depends on: bd_warehouse's tables, build123d, the OCP kernel."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("bd_warehouse", "build123d", "cadquery-ocp-novtk"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _require_library(what: str) -> None:
    try:
        import bd_warehouse  # noqa: F401 - only to say what is missing
    except ImportError as exc:
        raise SourceError(f"{what}: catalogue parts need the 'bd_warehouse' package (pip install bd_warehouse "
                          "build123d; scripts/setup.sh installs it)") from exc


def list_catalogue(source: dict[str, Any]) -> list[ObjectSpec]:
    """[[sources]] type = "catalogue": every part of a family the filters keep (classes, standards, sizes, and the
    family's own keys), as ObjectSpecs whose extras carry the library call and the tessellation."""
    family = source["family"]
    _require_library(f"catalogue source {family!r}")
    category = source.get("category", family)
    tessellation = {"tolerance": float(source.get("tolerance", DEFAULT_TOLERANCE)),
                    "angular_deg": float(source.get("angular_deg", DEFAULT_ANGULAR_DEG))}
    module, classes, _ = FAMILIES[family]
    wanted = source.get("classes")
    unknown = sorted(set(wanted or []) - set(classes))
    if unknown:
        raise SourceError(f"catalogue {family}: unknown class(es) {unknown}; known: {list(classes)}")
    keep_standards = set(source["standards"]) if "standards" in source else None
    keep_sizes = set(source["sizes"]) if "sizes" in source else None
    lister = _LISTERS[family]
    specs = []
    for cls in (c for c in classes if wanted is None or c in wanted):
        for standard, size, part in lister(getattr(_library(module), cls), source):
            if (keep_standards is None or standard in keep_standards) and (keep_sizes is None or size in keep_sizes):
                extras = encode_extras({"catalogue": {"class": part.cls, "args": part.args},
                                        "tessellation": tessellation})
                specs.append(ObjectSpec(make_object_id(category, *part.name), category, source_text(part), extras))
    if not specs:
        raise SourceError(f"catalogue {family}: no part passes the filters (classes, standards, sizes)")
    return specs


def source_text(part: Part) -> str:
    """`bd_warehouse:HexNut(fastener_type='iso4032', size='M6-1')`: what the part is, in the library's words."""
    return f"{SCHEME}{part.cls}({', '.join(f'{k}={v!r}' for k, v in sorted(part.args.items()))})"


def is_catalogue_source(source: str) -> bool:
    return source.startswith(SCHEME)


# ---- listing, one function per family: yield (standard, size, Part) ------------------------------------------

def _fastener_size_token(size: str) -> str:
    return size.replace("#", "no").replace(" ", "_")


def _list_nut_or_washer(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    for standard in sorted(cls.types()):
        for size in cls.sizes(standard):
            yield standard, size, Part((standard, _fastener_size_token(size)), cls.__name__,
                                       {"size": size, "fastener_type": standard})


def _screw_lengths(cls, standard: str, size: str, picks: list[str]) -> list[float]:
    """The catalogue lengths of one screw size (its table's short..long within the standard's nominal lengths),
    picked by position; [] when the table gives none."""
    from bd_warehouse.fastener import Screw, evaluate_parameter_dict, isolate_fastener_type

    data = evaluate_parameter_dict(isolate_fastener_type(standard, cls.fastener_data)[size],
                                   is_metric=size.startswith("M"))
    lengths = Screw.nominal_length_range.get(standard, [])
    lo, hi = data.get("short"), data.get("long")
    if lo is not None and hi is not None:
        lengths = [v for v in lengths if lo <= v <= hi]
    lengths = sorted(set(round(float(v), 3) for v in lengths))
    if not lengths:
        return []
    where = {"shortest": 0, "middle": (len(lengths) - 1) // 2, "longest": len(lengths) - 1}
    return sorted({lengths[where[p]] for p in picks})


def _list_screw(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    picks = source.get("lengths", ["middle"])
    simple = not source.get("threads", False)
    for standard in sorted(cls.types()):
        for size in cls.sizes(standard):
            for length in _screw_lengths(cls, standard, size, picks):
                name = (standard, _fastener_size_token(size), f"L{length:g}") + (() if simple else ("threaded",))
                yield standard, size, Part(name, cls.__name__, {"size": size, "length": length,
                                                                "fastener_type": standard, "simple": simple})


def _list_bearing(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    short = re.sub(r"(SingleRow|Bearing)", "", cls.__name__)
    for standard in sorted(cls.types()):
        for size in cls.sizes(standard):
            yield standard, size, Part((short, standard, size), cls.__name__, {"size": size, "bearing_type": standard})


def _list_flange(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    import inspect
    from typing import get_args

    params = inspect.signature(cls.__init__).parameters
    nps_all = get_args(params["nps"].annotation)
    classes = [int(c) for c in source.get("flange_classes", [150, 300])]
    short = cls.__name__.removesuffix("Flange")
    for face in sorted(source.get("standards", ["Raised"])):
        for nps in source.get("nps", nps_all):
            for flange_class in classes:
                yield face, nps, Part((short, f"NPS{nps.replace(' ', '_').replace('/', '_')}", f"class{flange_class}",
                                       face), cls.__name__, {"nps": nps, "flange_class": flange_class,
                                                             "face_type": face})


def _list_pipe(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    from typing import get_args

    from bd_warehouse.pipe import Identifier, Material, Nps, PipeSection

    ratio = float(source.get("length_ratio", 3.0))
    for nps in get_args(Nps):
        for material in get_args(Material):
            for identifier in get_args(Identifier):
                if nps + material + identifier in PipeSection.pipe_data:
                    yield material, nps, Part((material, f"NPS{nps.replace(' ', '_').replace('/', '_')}", identifier),
                                              cls.__name__, {"nps": nps, "material": material,
                                                             "identifier": identifier, "length_ratio": ratio})


def _list_gear(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    kind = "helical" if cls.__name__ == "HelicalGear" else "spur"
    for teeth in source.get("teeth", list(range(12, 61, 4))):
        for width in source.get("face_widths", [4, 10]):
            args = {"module": 1.0, "tooth_count": int(teeth), "pressure_angle": 20.0, "thickness": float(width)}
            if kind == "helical":
                args["helix_angle"] = 20.0
            yield kind, str(int(teeth)), Part((kind, "m1", f"z{int(teeth)}", f"b{float(width):g}"), cls.__name__, args)


def _list_o_ring(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    for standard in sorted(cls.types()):
        for size in cls.sizes(standard):
            yield standard, size, Part((standard, size), cls.__name__, {"size": size, "o_ring_type": standard})


def _list_snap_ring(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    side = "external" if cls.__name__.startswith("External") else "internal"
    for size in cls.sizes():
        yield "din471" if side == "external" else "din472", str(size), Part(
            ("din471" if side == "external" else "din472", side, str(size)), cls.__name__, {"size": str(size)})


def _list_key(cls, source: dict) -> Iterator[tuple[str, str, Part]]:
    ratio = float(source.get("length_ratio", 4.0))
    for form in ("A", "B"):
        for diameter in cls.sizes():
            width = float(cls.parameters(diameter)["b"])  # DIN 6885 key width
            length = float(round(ratio * width))
            yield form, str(diameter), Part(("din6885", form, f"d{diameter:g}", f"L{length:g}"), cls.__name__,
                                            {"shaft_diameter": diameter, "length": length, "key_form": form})


_LISTERS: dict[str, Callable[[Any, dict], Iterator[tuple[str, str, Part]]]] = {
    "nut": _list_nut_or_washer, "washer": _list_nut_or_washer, "screw": _list_screw, "bearing": _list_bearing,
    "flange": _list_flange, "pipe": _list_pipe, "gear": _list_gear, "o_ring": _list_o_ring,
    "snap_ring": _list_snap_ring, "key": _list_key,
}


# ---- building and tessellating, in the worker ------------------------------------------------------------------

def _class_of(name: Any) -> Any:
    """The library class of that name, only from FAMILIES' table (the name is read from a store or manifest)."""
    for module, classes, _ in FAMILIES.values():
        if name in classes:
            return getattr(_library(module), name)
    known = sorted(c for _, classes, _ in FAMILIES.values() for c in classes)
    raise MeshError(f"{SCHEME}{name!r}: not a catalogue class (known: {', '.join(known)})")


def _plain(value: Any) -> bool:
    return isinstance(value, str | bool) or (isinstance(value, int | float) and math.isfinite(value))


def build_part(cls_name: str, args: dict[str, Any]):
    """The build123d Part of one catalogue entry (millimetres)."""
    if not isinstance(args, dict) or not all(isinstance(k, str) and _plain(v) for k, v in args.items()):
        raise MeshError(f"{SCHEME}{cls_name}: arguments must be strings and numbers, got {args!r}")
    cls = _class_of(cls_name)
    if cls_name == "Pipe":
        from bd_warehouse.pipe import PipeSection
        from build123d import Edge

        args = dict(args)
        ratio = float(args.pop("length_ratio", 3.0))
        od = PipeSection(args["nps"], args["material"], args["identifier"]).od
        return cls(**args, path=Edge.make_line((0, 0, 0), (0, 0, ratio * od)))
    return cls(**args)


def tessellate(part, tolerance: float, angular_deg: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """vertices (V, 3) float64 in metres, faces (F, 3) int64 of a build123d shape, the linear deflection
    `tolerance` times its longest side; faces share their boundary vertices (welded by position), and every edge
    has two triangles or the part fails."""
    size = part.bounding_box().size
    longest = max(size.X, size.Y, size.Z)
    if not longest > 0:
        raise MeshError(f"{name}: the part is empty")
    from OCP.BRepMesh import BRepMesh_IncrementalMesh

    # meshed here on this thread (OpenCASCADE's own call; build123d's would mesh the faces on a thread pool of
    # every core, and a preprocess worker is one core of many: two workers would each spread over both cores);
    # tessellate() below then finds the triangulation made and only reads it
    linear, angular = tolerance * longest, math.radians(angular_deg)
    BRepMesh_IncrementalMesh(part.wrapped, linear, False, angular, False)
    points, triangles = part.tessellate(linear, angular)
    vertices = np.array([(p.X, p.Y, p.Z) for p in points], np.float64)
    faces = np.array(triangles, np.int64).reshape(-1, 3)
    if not len(faces):
        raise MeshError(f"{name}: OpenCASCADE gave no triangles")
    # BRepMesh shares each edge's discretisation between its two faces: the copies agree to the last bits (a
    # transformed face's copy to ~1e-15 of the part), so they are welded on a grid of 1e-9 of the longest side
    grid = longest * 1e-9
    _, first, inverse = np.unique(np.round(vertices / grid), axis=0, return_index=True, return_inverse=True)
    unique = vertices[first]
    faces = inverse.reshape(-1)[faces]
    # a sphere's poles and a cone's apex give triangles with a repeated corner: no area, and their zero-length
    # edge has one triangle; they go before the closedness test (check_mesh would drop them anyway)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    open_edges = _open_edges(faces)
    if open_edges:
        raise MeshError(f"{name}: its tessellation is not closed ({open_edges} edges without their opposite "
                        "triangle), so inside/outside is undefined")
    return check_mesh(unique / 1000.0, faces, name)


def _open_edges(faces: np.ndarray) -> int:
    """Edges whose triangles do not close: each use a -> b must be matched by a use b -> a (two solids may share an
    edge, a threaded screw's thread meets its core along one: four triangles, still closed), else the winding
    number is not an integer around it and inside/outside is undefined."""
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    forward = directed[:, 0] < directed[:, 1]
    keys = np.sort(directed, axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    balance = np.zeros(len(unique), np.int64)
    np.add.at(balance, inverse.reshape(-1), np.where(forward, 1, -1))
    return int((balance != 0).sum())


_pool_sized = False


def _size_occt_pool() -> None:
    """OpenCASCADE's thread pool (build123d runs its booleans in parallel) at APS_LIBRARY_THREADS threads where this
    process was given a number, as a preprocess worker is (1: one core each, like open3d and libigl); the pool
    takes its size when it is first made, so before the first part. Measured on 6 parts: 3% less CPU, and a
    1-worker run keeps to one core."""
    global _pool_sized
    if _pool_sized:
        return
    _pool_sized = True
    threads = library_threads()
    if threads > 0:
        from OCP.OSD import OSD_ThreadPool

        OSD_ThreadPool.DefaultPool_s(threads)


def load_catalogue_part(source: str, extras: str) -> tuple[np.ndarray, np.ndarray]:
    """Build and tessellate the part an ObjectSpec (or a store's record of one) names; MeshError with the
    library's own reason when it cannot be built."""
    _require_library(source)
    _size_occt_pool()
    spec = decode_extras(extras)
    call, tess = spec.get("catalogue"), spec.get("tessellation") or {}
    if not isinstance(call, dict) or not isinstance(tess, dict):
        raise MeshError(f"{source}: its record names no catalogue call")
    tolerance = tess.get("tolerance", DEFAULT_TOLERANCE)
    angular = tess.get("angular_deg", DEFAULT_ANGULAR_DEG)
    if not (_plain(tolerance) and MIN_TOLERANCE <= tolerance < 0.1 and _plain(angular)
            and MIN_ANGULAR_DEG <= angular <= 60):
        raise MeshError(f"{source}: tessellation {tess!r} out of range")
    try:
        part = build_part(call.get("class"), call.get("args"))
    except MeshError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's reason, whatever its type, names the failure
        raise MeshError(f"{source}: bd_warehouse cannot build it ({_reason(exc)})") from None
    try:
        return tessellate(part, float(tolerance), float(angular), source)
    except MeshError:
        raise
    except Exception as exc:  # noqa: BLE001 - OpenCASCADE's own exception types
        raise MeshError(f"{source}: OpenCASCADE cannot tessellate it ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


def hash_catalogue_source(h, source: str) -> None:
    """A part's own input for the content hash: what it is and the library versions that shape it."""
    h.update(json.dumps(["catalogue", source, library_versions()], sort_keys=True).encode())
