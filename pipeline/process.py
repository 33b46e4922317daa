"""One object, end to end: mesh file in, a schema ObjectRecord out. Pure apart from reading the mesh; Dask maps it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from common.errors import first_line
from common.timing import LapTimer
from pipeline.config import PreprocessConfig
from pipeline.schema.layout import ObjectMeta, ObjectRecord, dequantize_points, quantize_points, quantize_udf
from pipeline.sources import load_dataset_views, load_source_mesh
from pipeline.sources.catalogue import is_catalogue_source
from pipeline.stages.distances import inside, udf
from pipeline.stages.load import MeshError
from pipeline.stages.normalize import normalize
from pipeline.stages.render_views import render_views, sample_cameras
from pipeline.stages.sample_points import jitter, morton_order, sample_surface, uniform_points


@dataclass
class ObjectFailure:
    """A per-object error, returned (not raised) so one bad mesh never stops a batch."""

    job: ObjectMeta
    error: str
    seconds: float = 0.0


def object_rng(draw_seed: str, seed: int) -> np.random.Generator:
    """The generator of all of one object's draws (ObjectMeta.draw_seed: the same across code versions)."""
    return np.random.default_rng([seed, int(draw_seed[:16] or "0", 16)])


def process_object(job: ObjectMeta, config: PreprocessConfig) -> ObjectRecord:
    """Normalise, sample, measure and render one object (docs/METHOD.md, "Per-object training data").

    Where the source ships views with their cameras (3D-R2N2 for ShapeNet, IM-NET's greyscale views), those are
    stored instead of rendered ones.
    """
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    lap = LapTimer(timings, cpu).lap

    vertices, faces = load_source_mesh(job.source, job.extras, config.max_triangles)
    vertices, scale, center = normalize(vertices, faces)
    lap("generate" if is_catalogue_source(job.source) else "load")  # a catalogue part is built here, not read

    rng = object_rng(job.draw_seed, config.seed)
    surface, _ = sample_surface(vertices, faces, config.n_surface, rng)
    surface_points = jitter(surface, config.jitter_sigmas, config.jitter_weights, rng)
    uniform = uniform_points(config.n_uniform, rng)
    surface_q = quantize_points(surface_points)
    points_q = np.concatenate([surface_q[morton_order(surface_q)], quantize_points(uniform)])
    points = dequantize_points(points_q).astype(np.float64)  # distances of what is stored
    lap("sample")
    dist = udf(vertices, faces, points, config.distance_backend)
    lap("distance")
    wants_reference = job.split in config.reference_splits
    if wants_reference:  # one winding-number call for both point sets: the tree is built once
        ref_uniform = uniform_points(config.n_reference, rng, config.reference_half)
        flags = inside(vertices, faces, np.concatenate([points, ref_uniform]))
        inside_flags, ref_inside = flags[: len(points)], flags[len(points):]
    else:
        inside_flags = inside(vertices, faces, points)
    if not inside_flags.any() and not (wants_reference and ref_inside.any()):
        raise MeshError(f"{job.source}: encloses no volume (none of its {len(points):,} sample points is inside: "
                        "a flat or open sheet?); occupancy needs a solid")
    lap("inside")

    dataset_views = load_dataset_views(job.extras, job.source, vertices, faces, scale, center, config.views.n_views,
                                       config.views.image_size)
    if dataset_views is not None:
        images, K, Rt = dataset_views
        lap("views")
    else:
        used = vertices[faces].reshape(-1, 3)
        diagonal = float(np.linalg.norm(np.ptp(used, axis=0)))
        K, Rt, _ = sample_cameras(config.views, diagonal, rng, radius=float(np.linalg.norm(used, axis=1).max()))
        images = render_views(vertices, faces, K, Rt, config.views.image_size)
        lap("render")

    arrays: dict[str, np.ndarray] = {
        "points": points_q,
        "udf": quantize_udf(dist),
        "inside": inside_flags,
        "scale": np.float64(scale),
        "center": np.asarray(center, np.float64),
        "images": images,
        "K": K,
        "Rt": Rt,
    }
    if wants_reference:
        ref_points, ref_normals = sample_surface(vertices, faces, config.n_reference, rng)
        arrays.update(
            ref_surface_points=ref_points.astype(np.float32),
            ref_surface_normals=ref_normals.astype(np.float32),
            ref_uniform_points=ref_uniform.astype(np.float32),
            ref_uniform_inside=ref_inside,
        )
        lap("reference")
    return ObjectRecord(job, arrays=arrays, timings=timings, cpu=cpu)


def process_object_safe(job: ObjectMeta, config: PreprocessConfig) -> ObjectRecord | ObjectFailure:
    """process_object, with any error turned into an ObjectFailure that names the object and the reason."""
    start = time.perf_counter()
    try:
        return process_object(job, config)
    except Exception as exc:  # noqa: BLE001 - a batch records the failure and carries on
        msg = first_line(exc)
        if job.source not in msg:
            msg = f"{job.source}: {msg}"
        return ObjectFailure(job, f"{type(exc).__name__}: {msg}", time.perf_counter() - start)
