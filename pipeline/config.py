"""The preprocess stage's one config object, with the paper's defaults (docs/METHOD.md, "Per-object training data")."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pipeline.stages.render_views import ViewSampling

# Bump when a change to the code changes what is written for the same inputs: objects are then redone.
CODE_VERSION = "pipeline-5"
# The code version whose random draws (points, views) objects keep. Bump it only for a change meant to redraw them:
# a CODE_VERSION bump alone redoes every object with the same draws, so numbers measured on them stay comparable.
DRAWS_VERSION = "pipeline-4"
# Parameters that transform the draws without changing them (the reference box scales the same uniform draws)
NOT_IN_DRAWS = ("reference_padding",)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, so the dict is what JSON stores

    @property
    def reference_half(self) -> float:
        return reference_half(self.reference_padding)

    def digest(self, omit: tuple[str, ...] = ()) -> str:
        """Hash of everything that changes an object's arrays (not shard_size, which only groups them), less the
        parameters in `omit`."""
        d = self.to_dict()
        for name in ("shard_size", *omit):
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
        from pipeline.stages.distances import DISTANCE_BACKENDS

        for name, lo in (("n_surface", 1), ("n_uniform", 0), ("n_reference", 0), ("shard_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        sigmas, weights = self.jitter_sigmas, self.jitter_weights
        if not _numbers(sigmas) or not sigmas or min(sigmas) < 0:
            raise ValueError(f"jitter_sigmas must be a non-empty list of numbers >= 0, got {_shown(sigmas)!r}")
        if not _numbers(weights) or len(weights) != len(sigmas) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"jitter_weights must be {len(sigmas)} number(s) >= 0 (one per jitter_sigmas) with a "
                             f"positive sum, got {_shown(weights)!r}")
        if not isinstance(self.views, ViewSampling):
            raise ValueError(f"views must be a table of view parameters, got {self.views!r}")
        self.views.check()
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
