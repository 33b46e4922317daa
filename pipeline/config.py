"""The preprocess stage's one config object, with the paper's defaults (SPEC.md, "Per-object training data")."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pipeline.stages.render_views import ViewSampling

# Bump when a change to the code changes what is written for the same inputs: objects are then redone.
CODE_VERSION = "pipeline-4"


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

    def digest(self) -> str:
        """Hash of everything that changes an object's arrays (not shard_size, which only groups them)."""
        d = self.to_dict()
        d.pop("shard_size")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> PreprocessConfig:
        """Build from a manifest's [params] table (views given as a [params.views] sub-table)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown preprocess parameter(s) {unknown}; known: {sorted(known)}")
        kw = dict(params)
        if "views" in kw:
            vkw = dict(kw["views"])
            vknown = {f.name for f in fields(ViewSampling)}
            bad = sorted(set(vkw) - vknown)
            if bad:
                raise ValueError(f"unknown view parameter(s) {bad}; known: {sorted(vknown)}")
            for k in ("azimuth_deg", "elevation_deg", "distance_ratio"):
                if k in vkw:
                    vkw[k] = tuple(vkw[k])
            kw["views"] = ViewSampling(**vkw)
        for k in ("jitter_sigmas", "jitter_weights", "reference_splits"):
            if k in kw:
                kw[k] = tuple(kw[k])
        cfg = cls(**kw)
        cfg.check()
        return cfg

    def with_overrides(self, **changes: Any) -> PreprocessConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        if self.n_surface < 1 or self.n_uniform < 0:
            raise ValueError("n_surface must be >= 1 and n_uniform >= 0")
        if len(self.jitter_sigmas) != len(self.jitter_weights) or min(self.jitter_sigmas) < 0:
            raise ValueError("jitter_sigmas and jitter_weights must have the same length, sigmas >= 0")
        if self.views.up_axis not in ("x", "y", "z"):
            raise ValueError(f"views.up_axis must be x, y or z, not {self.views.up_axis!r}")
        from pipeline.stages.distances import DISTANCE_BACKENDS

        if self.distance_backend not in DISTANCE_BACKENDS:
            raise ValueError(f"distance_backend must be one of {DISTANCE_BACKENDS}")
