"""Every preprocess parameter is checked once, when the manifest is loaded, naming the parameter and the value,
instead of failing every object later (or the run with a TypeError)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pipeline.config import PreprocessConfig
from pipeline.manifest import ManifestError, load_manifest

SOURCE = '[[sources]]\ntype = "folder"\nroot = "nowhere"\n'


def load_params(tmp_path, params: str):
    path = tmp_path / "m.toml"
    path.write_text(f'name = "x"\n[params]\n{params}\n{SOURCE}')
    return load_manifest(path)


@pytest.mark.parametrize("params, error", [
    ('shard_size = "many"', "shard_size must be an integer >= 1, got 'many'"),
    ("shard_size = 0", "shard_size must be an integer >= 1, got 0"),
    ("n_surface = 0", "n_surface must be an integer >= 1, got 0"),
    ("n_surface = true", "n_surface must be an integer >= 1, got True"),
    ("n_uniform = -1", "n_uniform must be an integer >= 0, got -1"),
    ("n_uniform = 12.5", "n_uniform must be an integer >= 0, got 12.5"),
    ("n_reference = -5", "n_reference must be an integer >= 0, got -5"),
    ("n_reference = 0", "n_reference must be >= 1 while reference_splits is ['test'] (set reference_splits = [] "
                        "for no evaluation reference), got 0"),
    ("seed = -1", "seed must be an integer >= 0, got -1"),
    ('seed = "0"', "seed must be an integer >= 0, got '0'"),
    ("jitter_sigmas = [-0.01, 0.02]", "jitter_sigmas must be a non-empty list of numbers >= 0, got [-0.01, 0.02]"),
    ("jitter_sigmas = []\njitter_weights = []", "jitter_sigmas must be a non-empty list of numbers >= 0, got []"),
    ("jitter_sigmas = 0.01", "jitter_sigmas must be a non-empty list of numbers >= 0, got 0.01"),
    ("jitter_sigmas = [nan, 0.02]", "jitter_sigmas must be a non-empty list of numbers >= 0, got [nan, 0.02]"),
    ("jitter_weights = [1.0]", "jitter_weights must be 2 number(s) >= 0 (one per jitter_sigmas) with a positive sum, "
                               "got [1.0]"),
    ("jitter_weights = [0, 0]", "jitter_weights must be 2 number(s) >= 0 (one per jitter_sigmas) with a positive sum, "
                                "got [0, 0]"),
    ("jitter_weights = [-1, 2]", "jitter_weights must be 2 number(s) >= 0"),
    ('jitter_weights = ["a", "b"]', "jitter_weights must be 2 number(s) >= 0"),
    ('reference_splits = ["tst"]', "reference_splits must be a list of split names from ['train', 'val', 'test'], "
                                   "got ['tst']"),
    ('reference_splits = "test"', "reference_splits must be a list of split names from ['train', 'val', 'test'], "
                                  "got 'test'"),
    ('distance_backend = "exact"', "distance_backend must be one of ['libigl', 'open3d', 'pysdf'], got 'exact'"),
    ("views = 24", "views must be a table ({ n_views = 24, ... }), got 24"),
    ("views = { n_views = 0 }", "views.n_views must be an integer >= 1, got 0"),
    ("views = { n_views = 2.5 }", "views.n_views must be an integer >= 1, got 2.5"),
    ('views = { n_views = "24" }', "views.n_views must be an integer >= 1, got '24'"),
    ("views = { image_size = 4 }", "views.image_size must be an integer in [16, 4096], got 4"),
    ("views = { image_size = 100000 }", "views.image_size must be an integer in [16, 4096], got 100000"),
    ("views = { azimuth_deg = 90 }", "views.azimuth_deg must be [low, high], two degrees with low <= high, got 90"),
    ("views = { azimuth_deg = [0] }", "views.azimuth_deg must be [low, high], two degrees with low <= high, got [0]"),
    ("views = { elevation_deg = [30, 25] }", "views.elevation_deg must be [low, high], two degrees in [-90, 90] with "
                                             "low <= high, got [30, 25]"),
    ("views = { elevation_deg = [0, 100] }", "views.elevation_deg must be [low, high], two degrees in [-90, 90]"),
    ("views = { distance_ratio = [0, 1] }", "views.distance_ratio must be [low, high], two ratios > 0 with low"),
    ("views = { distance_ratio = [0.5, inf] }", "views.distance_ratio must be [low, high], two ratios > 0"),
    ('views = { up_axis = "w" }', "views.up_axis must be x, y or z, got 'w'"),
])
def test_bad_parameters_fail_at_load_naming_the_parameter(tmp_path, params, error):
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(tmp_path / 'm.toml'))}: \[params\]: {re.escape(error)}"):
        load_params(tmp_path, params)


def test_edge_values_that_make_sense_load(tmp_path):
    cfg = load_params(tmp_path, "n_uniform = 0\nn_reference = 0\nreference_splits = []\njitter_sigmas = [0.0, 0.02]\n"
                                "jitter_weights = [0, 1]\nshard_size = 1\nseed = 0\n"
                                'views = { n_views = 1, image_size = 16, elevation_deg = [30, 30], up_axis = "x", '
                                "azimuth_deg = [-180, 180], distance_ratio = [1, 1] }").config()
    assert (cfg.n_uniform, cfg.n_reference, cfg.reference_splits, cfg.jitter_weights) == (0, 0, (), (0, 1))
    assert (cfg.views.n_views, cfg.views.image_size, cfg.views.elevation_deg) == (1, 16, (30, 30))


def test_overrides_and_replaced_views_are_checked_too():
    cfg = PreprocessConfig()
    assert cfg.with_overrides(shard_size=3).shard_size == 3
    with pytest.raises(ValueError, match="shard_size must be an integer >= 1, got 0"):
        cfg.with_overrides(shard_size=0)
    with pytest.raises(ValueError, match="views.n_views must be an integer >= 1, got 0"):
        replace(cfg, views=replace(cfg.views, n_views=0))  # what `aps preprocess --views 0` builds


@pytest.mark.parametrize("params, error", [
    ("jitter_sigmas = [5.0, 20.0]", "jitter_sigmas must be at most 0.05 (normalised units: the object spans the unit "
                                    "cube and d* = 5/256; wider offsets end clamped on the box or far past d*, where "
                                    "the label is 0), got [5.0, 20.0]"),
    ("jitter_sigmas = [0.005, 0.2]", "jitter_sigmas must be at most 0.05"),
    ("n_surface = 1_000_000_000", "n_surface must be at most 1,000,000 points per object, got 1,000,000,000"),
    ("n_uniform = 1_000_001", "n_uniform must be at most 1,000,000 points per object, got 1,000,001"),
    ("n_reference = 1_000_000_000", "n_reference must be at most 1,000,000 points per object, got 1,000,000,000"),
    ("views = { n_views = 100000 }", "views must be at most 1000 views and 67,108,864 pixels per object "
                                     "(n_views x image_size^2), got 100000 x 137^2"),
    ("views = { n_views = 24, image_size = 4096 }", "views must be at most 1000 views and 67,108,864 pixels per "
                                                    "object (n_views x image_size^2), got 24 x 4096^2"),
    ("max_triangles = 0", "max_triangles must be an integer >= 1, got 0"),
    ('max_triangles = "20M"', "max_triangles must be an integer >= 1, got '20M'"),
])
def test_parameters_beyond_what_one_object_can_use_are_refused(tmp_path, params, error):
    """jitter_sigmas = [5, 20] was accepted (99.97% of the surface points ended clamped on the box); a billion
    points or 100k views per object were accepted and every object then failed with a MemoryError."""
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(tmp_path / 'm.toml'))}: \[params\]: {re.escape(error)}"):
        load_params(tmp_path, params)


def test_the_largest_allowed_values_load(tmp_path):
    cfg = load_params(tmp_path, "jitter_sigmas = [0.05]\njitter_weights = [1]\nn_surface = 1_000_000\n"
                                "n_reference = 1_000_000\nmax_triangles = 50_000_000\n"
                                "views = { n_views = 1000, image_size = 259 }").config()
    assert (cfg.jitter_sigmas, cfg.n_surface, cfg.max_triangles, cfg.views.n_views) == ((0.05,), 10**6, 5 * 10**7, 1000)
    assert "max_triangles" not in cfg.store_params() and cfg.digest() == cfg.with_overrides(max_triangles=7).digest()
