"""Mesh extraction from an occupancy field at threshold 0.5: a dense grid and a coarse-to-fine one.

The field is any callable `points (N, 3) float32 -> occupancy (N,) float in [0, 1]`, with points in the
normalised frame (the unit cube [-0.5, 0.5]^3, longest side 1). The grid covers the box
[-BOX_HALF, BOX_HALF]^3 = [-0.55, 0.55]^3: the unit cube padded by 0.05 on each side, so a surface that
touches the unit cube still has grid points outside it and closes. The value grid is also padded by one
layer of "outside" before marching cubes, so a field that is inside at the box border still gives a
closed mesh.

`resolution` counts grid cells per axis (resolution + 1 grid points): the paper's 256^3 grid is
`resolution=256`, a spacing of 1.1 / 256 = 0.0043 in the normalised frame.

Coarse-to-fine (MISE-style, Mescheder et al. 2019): evaluate a coarse grid, keep the cells whose corners
are not all on the same side of the threshold, halve the spacing inside them only, and fill every other
grid point by trilinear interpolation of its coarser cell (which is on the same side as all of that cell's
corners, so it can create no surface). At every level a closure loop then evaluates every grid point that
belongs to a cell whose corners (measured or interpolated) disagree, until every such cell has all eight
corners measured. Marching cubes therefore sees, in every cell it triangulates, exactly the values the dense
grid would hold, and the two meshes coincide on every surface component that the coarse grid detects.
What it can miss: a component that lies wholly inside one coarse cell with all corners outside
(a feature thinner than the coarse spacing that no coarse grid point hits) and that no detected surface
leads to; choose `coarse` so the coarse spacing (1.1 / coarse) is below the thinnest feature you expect.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BOX_HALF = 0.55  # the unit cube [-0.5, 0.5]^3 padded by 0.05 per side
THRESHOLD = 0.5  # paper §4: the surface is the 0.5-level set of the occupancy
DEFAULT_BATCH = 1 << 16  # points per field call: bounds the memory a network query needs

Field = Callable[[np.ndarray], np.ndarray]


@dataclass
class Extraction:
    """A mesh in the normalised frame and what it cost.

    vertices: (V, 3) float32, normalised frame; faces: (F, 3) int64, outward-facing (counter-clockwise seen
    from outside). status: "ok", or "no_surface" when the field never crosses the threshold on the grid
    (then vertices and faces are empty).
    """

    vertices: np.ndarray
    faces: np.ndarray
    n_queries: int
    seconds: float
    resolution: int
    status: str
    query_seconds: float = 0.0
    """of `seconds`, the time spent inside the field (the network's queries)"""
    marching_seconds: float = 0.0
    """of `seconds`, the time spent in marching cubes (the rest is the grid's bookkeeping)"""

    @property
    def spacing(self) -> float:
        return grid_spacing(self.resolution)


def grid_spacing(resolution: int) -> float:
    """Distance between neighbouring grid points, normalised units."""
    return 2 * BOX_HALF / resolution


def grid_points(resolution: int, index: np.ndarray) -> np.ndarray:
    """index: (N, 3) integer grid indices in [0, resolution] -> (N, 3) float32 points, normalised frame."""
    return (index * grid_spacing(resolution) - BOX_HALF).astype(np.float32)


class CountingField:
    """Calls the field in batches of at most `batch_size` points, checks what it returns, counts queries and
    the seconds spent inside the field."""

    def __init__(self, field: Field, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.field = field
        self.batch_size = batch_size
        self.n_queries = 0
        self.seconds = 0.0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), np.float32)
        for start in range(0, len(points), self.batch_size):
            chunk = np.ascontiguousarray(points[start:start + self.batch_size], np.float32)
            t0 = time.perf_counter()
            values = np.asarray(self.field(chunk), np.float32).reshape(-1)
            self.seconds += time.perf_counter() - t0
            if values.shape != (len(chunk),):
                raise ValueError(f"field returned {values.shape[0]} values for {len(chunk)} points; "
                                 "it must map (N, 3) points to (N,) occupancies")
            out[start:start + len(chunk)] = values
        self.n_queries += len(points)
        # A NaN would silently count as outside; make the field's fault visible instead.
        if not np.all(np.isfinite(out)):
            raise ValueError("field returned non-finite occupancies")
        return out


# ---- grid helpers (boolean grids: points (n+1)^3, cells n^3) -----------------------------------------
def _cells_any_all(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """inside: (n+1,)*3 point flags -> (any corner inside, all corners inside), each (n,)*3 over cells."""
    any_, all_ = inside, inside
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        any_ = any_[tuple(lo)] | any_[tuple(hi)]
        all_ = all_[tuple(lo)] & all_[tuple(hi)]
    return any_, all_


def _crossing_cells(inside: np.ndarray) -> np.ndarray:
    """Cells whose 8 corners are not all on one side of the threshold: where marching cubes puts faces."""
    any_, all_ = _cells_any_all(inside)
    return any_ & ~all_


def _cell_corners(cells: np.ndarray) -> np.ndarray:
    """cells: (n,)*3 flags -> (n+1,)*3 flags of the grid points that are a corner of a flagged cell."""
    points = cells
    for axis in range(3):
        shape = list(points.shape)
        shape[axis] += 1
        grown = np.zeros(shape, bool)
        grown[_along(axis, slice(None, -1))] = points  # a cell's lower corner ...
        grown[_along(axis, slice(1, None))] |= points  # ... and its upper one
        points = grown
    return points


def _along(axis: int, index: slice) -> tuple[slice, ...]:
    """The 3-D index that takes `index` along `axis` and everything along the other two."""
    out = [slice(None)] * 3
    out[axis] = index
    return tuple(out)


def _crossing_corners(values: np.ndarray, threshold: float) -> np.ndarray:
    """Grid points that are corners of a crossing cell, the one-layer "outside" frame included."""
    inside = np.pad(values > threshold, 1, constant_values=False)
    return _cell_corners(_crossing_cells(inside))[1:-1, 1:-1, 1:-1]


def _upsample_values(values: np.ndarray) -> np.ndarray:
    """(n+1,)*3 -> (2n+1,)*3 by trilinear interpolation (exact at the old points)."""
    out = values
    for axis in range(3):
        n = out.shape[axis]
        shape = list(out.shape)
        shape[axis] = 2 * n - 1
        new = np.empty(shape, np.float32)
        even = [slice(None)] * 3
        odd = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        new[tuple(even)] = out
        new[tuple(odd)] = 0.5 * (out[tuple(lo)] + out[tuple(hi)])
        out = new
    return out


def _upsample_known(known: np.ndarray) -> np.ndarray:
    """(n+1,)*3 -> (2n+1,)*3: only the old points are measured at the finer level."""
    n = known.shape[0]
    out = np.zeros((2 * n - 1,) * 3, bool)
    out[::2, ::2, ::2] = known
    return out


def _subdivided_corners(cells: np.ndarray) -> np.ndarray:
    """cells: (n,)*3 flags of coarse cells -> (2n+1,)*3 flags of the finer grid's points that are a corner of a
    finer cell inside a flagged coarse cell: _cell_corners of the cells repeated twice along each axis, without
    building the repeated grid. Along an axis, finer point 2a is a corner of coarse cells a-1 and a, finer point
    2a+1 of coarse cell a alone; the three axes compose (a point's cells are the product of its axes' sets)."""
    points = cells
    for axis in range(3):
        shape = list(points.shape)
        shape[axis] = 2 * shape[axis] + 1
        grown = np.zeros(shape, bool)
        even = _along(axis, slice(0, None, 2))
        grown[_along(axis, slice(1, None, 2))] = points
        grown[even][_along(axis, slice(None, -1))] = points  # (views of views: writes reach `grown`)
        grown[even][_along(axis, slice(1, None))] |= points
        points = grown
    return points


def _evaluate(field: CountingField, values: np.ndarray, known: np.ndarray, need: np.ndarray,
              resolution: int) -> np.ndarray:
    """Measure the field at the grid points flagged in `need` that are not yet `known`; returns their flat
    indices."""
    flat = np.flatnonzero(need & ~known)  # C order, as argwhere: the field sees the same points in the same order
    _measure(field, values, known, flat, resolution)
    return flat


def _measure(field: CountingField, values: np.ndarray, known: np.ndarray, flat: np.ndarray, resolution: int
             ) -> None:
    """Measure the field at the grid points of the flat indices `flat` (in that order)."""
    if len(flat):
        index = np.stack(np.unravel_index(flat, values.shape), axis=1)
        np.put(values, flat, field(grid_points(resolution, index)))
        np.put(known, flat, True)


NEAR_BLOCK = 16  # grid points per side of the blocks a closure round looks at around the points measured last


def _unknown_crossing_corners_near(values: np.ndarray, known: np.ndarray, changed: np.ndarray,
                                   threshold: float) -> np.ndarray:
    """np.flatnonzero(_crossing_corners(values, threshold) & ~known), looked for only in the blocks of
    NEAR_BLOCK^3 grid points around the points `changed` (flat indices) measured by the previous closure round.

    Exact when every crossing cell none of whose corners changed since then had all its corners measured by then
    (extract_coarse_to_fine's closure loop keeps that true): such a cell still crosses, or not, as before, so
    only cells with a changed corner can add points, and their corners lie within one point of a changed point.
    Returned in C order, as flatnonzero: the field sees the same points in the same order. A round that changed
    points all over the grid is looked at whole instead (as fast, fewer Python steps).
    """
    size = values.shape[0]
    if len(changed) == 0:
        return changed
    n_blocks = -(-size // NEAR_BLOCK)
    index = np.stack(np.unravel_index(changed, values.shape), axis=1)
    # the blocks holding [p - 1, p + 1] along each axis, for every changed point p
    blocks = np.unique(np.concatenate([np.clip((index + np.array(d)) // NEAR_BLOCK, 0, n_blocks - 1)
                                       for d in itertools.product((-1, 1), repeat=3)]), axis=0)
    if len(blocks) * NEAR_BLOCK ** 3 > values.size // 4:
        return np.flatnonzero(_crossing_corners(values, threshold) & ~known)
    found = []
    for block in blocks:
        start = block * NEAR_BLOCK
        stop = np.minimum(start + NEAR_BLOCK, size)
        # the inside flags of points [start - 1, stop] (all corners of the cells that touch the block), the frame
        # of "outside" where that runs past the grid
        lo, hi = np.maximum(start - 1, 0), np.minimum(stop, size - 1)
        inside = values[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] > threshold
        inside = np.pad(inside, [(int(start[a] == 0), int(stop[a] == size)) for a in range(3)])
        corners = _cell_corners(_crossing_cells(inside))[1:-1, 1:-1, 1:-1]
        need = corners & ~known[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
        local = np.nonzero(need)
        if len(local[0]):
            found.append(np.ravel_multi_index(tuple(local[a] + start[a] for a in range(3)), values.shape))
    return np.sort(np.concatenate(found)) if found else changed[:0]


# ---- marching cubes ------------------------------------------------------------------------------------
def _marching_cubes(values: np.ndarray, resolution: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """values: (resolution+1,)*3 occupancies on the grid -> vertices (V, 3) float32, faces (F, 3) int64."""
    from skimage.measure import marching_cubes  # scikit-image (with scipy) loads only when a mesh is extracted

    # The grid padded by one layer of 0.0 (outside), so that meshes always close. Only a cell with a corner at or
    # above the threshold can hold a face: march over the box of those corners and one cell around them (the same
    # cells in the same order, so the same faces; a third of the time on a 256^3 grid, benchmarks/bench_eval.py).
    # The box is filled from the grid directly, not cut from a padded copy of the whole grid: its index b along an
    # axis is grid index lo - 1 + b.
    n = values.shape[0] - 1
    lo, hi = _bounds(values >= threshold)
    box = np.zeros(tuple(hi - lo + 3), np.float32)
    src_lo, src_hi = np.maximum(lo - 1, 0), np.minimum(hi + 1, n)  # the grid points inside the box
    dst_lo, dst_hi = src_lo - (lo - 1), src_hi - (lo - 1) + 1
    box[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
        values[src_lo[0]:src_hi[0] + 1, src_lo[1]:src_hi[1] + 1, src_lo[2]:src_hi[2] + 1]
    # gradient_direction="ascent": the occupancy grows inwards, so this orients faces outward.
    verts, faces, _, _ = marching_cubes(box, level=threshold, gradient_direction="ascent", allow_degenerate=False)
    verts = (verts.astype(np.float64) + (lo - 1.0)) * grid_spacing(resolution) - BOX_HALF
    return verts.astype(np.float32), faces.astype(np.int64)


def _bounds(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) index per axis of the True entries of a 3-D array (it must hold one)."""
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(flags.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.array(lo), np.array(hi)


def _finish(values: np.ndarray, resolution: int, threshold: float, field: CountingField,
            t0: float) -> Extraction:
    if not values.max() > threshold:  # no point inside (the field's values are finite: CountingField)
        return Extraction(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), field.n_queries,
                          time.perf_counter() - t0, resolution, "no_surface", field.seconds)
    t_mc = time.perf_counter()
    verts, faces = _marching_cubes(values, resolution, threshold)
    t_end = time.perf_counter()
    status = "ok" if len(faces) else "no_surface"
    return Extraction(verts, faces, field.n_queries, t_end - t0, resolution, status, field.seconds, t_end - t_mc)


def extract_dense(field: Field, resolution: int = 256, threshold: float = THRESHOLD,
                  batch_size: int = DEFAULT_BATCH) -> Extraction:
    """Evaluate the field at every point of a (resolution+1)^3 grid and run marching cubes (paper §4)."""
    t0 = time.perf_counter()
    counting = CountingField(field, batch_size)
    n = resolution + 1
    values = np.empty((n, n, n), np.float32)
    axis = (np.arange(n) * grid_spacing(resolution) - BOX_HALF).astype(np.float32)
    # one z-y slab at a time: the points of a slab are built, queried and dropped, bounding memory
    yz = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    for i, x in enumerate(axis):
        slab = np.concatenate([np.full((len(yz), 1), x, np.float32), yz], axis=1)
        values[i] = counting(slab).reshape(n, n)
    return _finish(values, resolution, threshold, counting, t0)


def extract_coarse_to_fine(field: Field, resolution: int = 256, coarse: int = 32,
                           threshold: float = THRESHOLD, batch_size: int = DEFAULT_BATCH) -> Extraction:
    """Same mesh as `extract_dense(field, resolution)` for far fewer queries (module docstring).

    resolution must be coarse * 2^k (e.g. 32 -> 256 in three halvings).
    """
    levels = _levels(resolution, coarse)
    t0 = time.perf_counter()
    counting = CountingField(field, batch_size)
    n = coarse
    values = np.zeros((n + 1,) * 3, np.float32)
    known = np.zeros_like(values, dtype=bool)
    _evaluate(counting, values, known, np.ones_like(known), n)
    for level in range(levels + 1):
        if level > 0:
            # subdivide the crossing cells of the coarser level: measure all points of their sub-cells
            crossing = _crossing_cells(np.pad(values > threshold, 1, constant_values=False))[1:-1, 1:-1, 1:-1]
            values, known, n = _upsample_values(values), _upsample_known(known), 2 * n
            _evaluate(counting, values, known, _subdivided_corners(crossing), n)
        # closure: every cell that (by measured or interpolated corners) crosses gets all corners measured. The
        # first round looks at the whole grid; after it, a crossing cell whose corners are not all measured must
        # have a corner that the previous round measured, so each later round looks only around those points.
        rounds = 0
        changed = _evaluate(counting, values, known, _crossing_corners(values, threshold), n)
        while len(changed):
            rounds += 1
            changed = _unknown_crossing_corners_near(values, known, changed, threshold)
            _measure(counting, values, known, changed, n)
        log.debug("coarse-to-fine level %d (%d^3 cells): %d closure rounds, %d queries so far",
                  level, n, rounds, counting.n_queries)
    return _finish(values, resolution, threshold, counting, t0)


def _levels(resolution: int, coarse: int) -> int:
    if coarse < 2 or resolution < coarse or resolution % coarse:
        raise ValueError(f"resolution {resolution} must be coarse {coarse} times a power of two")
    ratio = resolution // coarse
    levels = ratio.bit_length() - 1
    if 1 << levels != ratio:
        raise ValueError(f"resolution {resolution} must be coarse {coarse} times a power of two")
    return levels


# The grids `aps eval` and `aps reconstruct` may ask for. Coarse to fine, the grid's own arrays take ~12 bytes
# a point, measured: 0.23 GB at 256, 1.7 GB at 512, so ~13 GB at 1024 (the dense grid holds the same arrays, for
# (n+1)^3 queries). 3000 would be 101 GiB and 0 divides by zero: such values are refused before any work.
MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024


def check_grid(resolution: int, coarse: int | None) -> None:
    """Refuse a grid extract_mesh cannot make, naming the option (--resolution, --coarse): a resolution outside
    [MIN_RESOLUTION, MAX_RESOLUTION], or a coarse grid below it that is under 2 or that it is not 2^k times.
    coarse None or 0, or coarse >= resolution, is the dense grid (extract_mesh)."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"--resolution must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] (grid cells per "
                         f"axis; {MAX_RESOLUTION} takes ~13 GB), got {resolution}")
    if coarse is None or coarse == 0 or coarse >= resolution:
        return
    try:
        _levels(resolution, coarse)
    except ValueError:
        fits = [resolution >> k for k in range(1, 10) if resolution >> k >= 2 and (resolution >> k) << k == resolution]
        raise ValueError(f"--coarse must be 0 or at least --resolution (the dense grid), or a grid that --resolution "
                         f"{resolution} is a power of two times ({', '.join(map(str, fits)) or 'none'}), got {coarse}"
                         ) from None


def extract_mesh(field: Field, resolution: int = 256, coarse: int | None = 32, threshold: float = THRESHOLD,
                 batch_size: int = DEFAULT_BATCH) -> Extraction:
    """Coarse-to-fine extraction from `coarse` (None or coarse >= resolution: the dense grid)."""
    if coarse is None or coarse >= resolution:
        return extract_dense(field, resolution, threshold, batch_size)
    return extract_coarse_to_fine(field, resolution, coarse, threshold, batch_size)
