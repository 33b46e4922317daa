"""The preprocess stage's one config object, with the paper's defaults (docs/METHOD.md, "Per-object training data")."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pipeline.stages.distances import DISTANCE_BACKENDS
from pipeline.stages.load import DEFAULT_MAX_TRIANGLES
from pipeline.stages.render_views import ViewSampling

# Bump when a change to the code changes what is written for the same inputs: objects are then redone.
CODE_VERSION = "pipeline-5"
# The code version whose random draws (points, views) objects keep. Bump it only for a change meant to redraw them:
# a CODE_VERSION bump alone redoes every object with the same draws, so numbers measured on them stay comparable.
DRAWS_VERSION = "pipeline-4"
# Parameters that transform the draws without changing them (the reference box scales the same uniform draws)
NOT_IN_DRAWS = ("reference_padding",)
# Parameters that change no stored array, so not the content hash either: how objects are grouped, and which are
# refused (an object within the limit comes out the same whatever the limit)
NOT_IN_ARRAYS = ("shard_size", "max_triangles")

# What one object may cost, checked up front (an object over them would fail alone, with a MemoryError blamed
# on its mesh, or kill its worker). Points: 100x the paper's 9872 + 128, 10x OccNet's 100k reference points.
MAX_POINTS = 1_000_000
# Views: 3D-R2N2 renders 24; the renderer holds ~80 bytes per pixel of a view batch, so 2^26 pixels (24 views of
# 1672 px) is ~5 GB.
MAX_VIEWS, MAX_VIEW_PIXELS = 1000, 1 << 26
# Jitter: surface points are normalised into the unit cube and stored in [-0.6, 0.6]^3 (schema.POINT_HALF_RANGE).
# At sigma 0.05 (2.6 d*, d* = 5/256: docs/METHOD.md) ~2% of the points of a part filling the cube fall past that
# range and are clamped onto its boundary, and most points lie beyond d*, where the label v(d, s) is 0 anyway.
MAX_JITTER_SIGMA = 0.05


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of one preprocess run; every field can be set in a manifest's [params] table."""

    n_surface: int = 9872
    """jittered surface points per object (paper §5.1)"""
    n_uniform: int = 128
    """uniform points in the unit cube per object (paper §5.1)"""
    jitter_sigmas: tuple[float, ...] = (0.005, 0.02)
    """std devs of the isotropic Gaussian offsets (normalised units); d* = 5/256 ~ 0.0195 sits between them"""
    jitter_weights: tuple[float, ...] = (0.5, 0.5)
    """mixture weights of jitter_sigmas"""
    views: ViewSampling = field(default_factory=ViewSampling)
    """rendered views when the dataset ships none (3D-R2N2's count, size and camera ranges)"""
    n_reference: int = 100_000
    """evaluation reference points per object, on the surface and uniform in the cube (OccNet: 100k)"""
    reference_padding: float = 0.1
    """the reference uniform points fill the unit cube scaled by 1 + reference_padding: [-0.55, 0.55]^3 at
    OccNet's 0.1, so predicted volume outside the object's own box counts against IoU (docs/METRICS.md)"""
    reference_splits: tuple[str, ...] = ("test",)
    """splits whose objects get the evaluation reference arrays"""
    distance_backend: str = "libigl"
    """unsigned distance method: libigl (exact, float64), open3d (float32: off on CAD slivers) or pysdf"""
    shard_size: int = 16
    """objects per zarr shard (one file per array per shard)"""
    seed: int = 0
    """base seed; each object's generator is seeded from it and the object's content hash"""
    max_triangles: int = DEFAULT_MAX_TRIANGLES
    """a mesh with more triangles fails alone, checked from its header before it is read where the format has one
    (pipeline.stages.load.DEFAULT_MAX_TRIANGLES says why 10M)"""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, so the dict is what JSON stores

    def store_params(self) -> dict[str, Any]:
        """The parameters a store records (its root attributes): every field but max_triangles, which shapes no
        stored array, so a store rerun with a new limit keeps its params (and a training run's data digest)."""
        d = self.to_dict()
        d.pop("max_triangles")
        return d

    @property
    def reference_half(self) -> float:
        return reference_half(self.reference_padding)

    def digest(self, omit: tuple[str, ...] = ()) -> str:
        """Hash of everything that changes an object's arrays (not NOT_IN_ARRAYS: shard_size only groups them,
        max_triangles only refuses some), less the parameters in `omit`."""
        d = self.to_dict()
        for name in (*NOT_IN_ARRAYS, *omit):
            d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> PreprocessConfig:
        """Build from a manifest's [params] table (views given as a [params.views] sub-table); every value is
        checked (check), so a bad one fails the run before any object, naming the parameter."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown preprocess parameter(s) {unknown}; known: {sorted(known)}")
        kw = dict(params)
        if "views" in kw:
            if not isinstance(kw["views"], dict):
                raise ValueError(f"views must be a table ({{ n_views = 24, ... }}), got {kw['views']!r}")
            vkw = dict(kw["views"])
            vknown = {f.name for f in fields(ViewSampling)}
            bad = sorted(set(vkw) - vknown)
            if bad:
                raise ValueError(f"unknown view parameter(s) {bad}; known: {sorted(vknown)}")
            for k in ("azimuth_deg", "elevation_deg", "distance_ratio"):
                if isinstance(vkw.get(k), list):
                    vkw[k] = tuple(vkw[k])
            kw["views"] = ViewSampling(**vkw)
        for k in ("jitter_sigmas", "jitter_weights", "reference_splits"):
            if isinstance(kw.get(k), list):
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def with_overrides(self, **changes: Any) -> PreprocessConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        """Types and ranges of every parameter (integers are not booleans, lists have their lengths, names come
        from their known set); a one-line ValueError naming the parameter. Runs on every construction."""
        for name, lo in (("n_surface", 1), ("n_uniform", 0), ("n_reference", 0), ("shard_size", 1), ("seed", 0),
                         ("max_triangles", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        for name in ("n_surface", "n_uniform", "n_reference"):
            if getattr(self, name) > MAX_POINTS:
                raise ValueError(f"{name} must be at most {MAX_POINTS:,} points per object, got "
                                 f"{getattr(self, name):,}")
        sigmas, weights = self.jitter_sigmas, self.jitter_weights
        if not _numbers(sigmas) or not sigmas or min(sigmas) < 0:
            raise ValueError(f"jitter_sigmas must be a non-empty list of numbers >= 0, got {_shown(sigmas)!r}")
        if max(sigmas) > MAX_JITTER_SIGMA:
            raise ValueError(f"jitter_sigmas must be at most {MAX_JITTER_SIGMA} (normalised units: the object spans "
                             f"the unit cube and d* = 5/256; wider offsets end clamped on the box or far past d*, "
                             f"where the label is 0), got {_shown(sigmas)!r}")
        if not _numbers(weights) or len(weights) != len(sigmas) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"jitter_weights must be {len(sigmas)} number(s) >= 0 (one per jitter_sigmas) with a "
                             f"positive sum, got {_shown(weights)!r}")
        if not isinstance(self.views, ViewSampling):
            raise ValueError(f"views must be a table of view parameters, got {self.views!r}")
        self.views.check()
        views = self.views
        if views.n_views > MAX_VIEWS or views.n_views * views.image_size ** 2 > MAX_VIEW_PIXELS:
            raise ValueError(f"views must be at most {MAX_VIEWS} views and {MAX_VIEW_PIXELS:,} pixels per object "
                             f"(n_views x image_size^2), got {views.n_views} x {views.image_size}^2")
        splits = self.reference_splits
        if not isinstance(splits, tuple | list) or not all(s in SPLITS for s in splits):
            raise ValueError(f"reference_splits must be a list of split names from {list(SPLITS)}, "
                             f"got {_shown(splits)!r}")
        padding = self.reference_padding
        if not _numbers([padding]) or not 0 <= padding <= 1:
            raise ValueError(f"reference_padding must be a number in [0, 1] (OccNet: 0.1), got {padding!r}")
        if splits and self.n_reference < 1:
            raise ValueError(f"n_reference must be >= 1 while reference_splits is {list(splits)} (set "
                             "reference_splits = [] for no evaluation reference), got 0")
        if self.distance_backend not in DISTANCE_BACKENDS:
            raise ValueError(f"distance_backend must be one of {list(DISTANCE_BACKENDS)}, "
                             f"got {self.distance_backend!r}")


SPLITS = ("train", "val", "test")


def reference_half(padding: float) -> float:
    """Half the edge of the reference box [-h, h]^3 of the uniform reference points: the unit cube scaled by
    1 + padding (a store records its padding in params["reference_padding"])."""
    return 0.5 * (1.0 + float(padding))


def _shown(value: Any) -> Any:
    """A value as the manifest wrote it (from_dict turns its lists into tuples)."""
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(values: Any) -> bool:
    """A list or tuple of finite numbers (booleans are not numbers)."""
    return isinstance(values, tuple | list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
