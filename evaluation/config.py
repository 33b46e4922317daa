"""The eval stage's configuration: what `aps eval` does per object, with the paper's defaults (a 256^3 grid,
meshes at occupancy 0.5). Every field has a one-line docstring (the string literal under it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluation import metrics
from evaluation.mesh_page import PAGE_FACES, check_page_faces
from inference.extract_mesh import DEFAULT_BATCH, check_grid
from inference.mesh_io import check_formats


@dataclass
class EvalConfig:
    """What `aps eval` does per object; defaults follow the paper (256^3 grid, threshold 0.5)."""

    split: str = "test"
    """which split's objects to evaluate"""
    view: int = 0
    """index of the stored view used as the single input image"""
    resolution: int = 256
    """grid cells per axis of the extraction (paper: 256^3)"""
    coarse: int | None = 32
    """first grid of the coarse-to-fine extraction; None: dense grid"""
    level: float = 0.5
    """occupancy level of the mesh and of the IoU (`aps eval --level`; auto gives a checkpoint's own:
    inference.predictor.label_level, 0.5 unless it learnt a soft label)"""
    batch_size: int = DEFAULT_BATCH
    """points per field call (bounds memory)"""
    formats: tuple[str, ...] = ("ply",)
    """mesh files to write, among MESH_FORMATS"""
    original_units: bool = False
    """also write meshes mapped back with the stored scale and center (source units)"""
    silhouette_views: int = 8
    """stored views (evenly spaced) compared by silhouette IoU"""
    n_samples: int = metrics.N_SURFACE_SAMPLES
    """points sampled on the predicted mesh"""
    tau: float = metrics.FSCORE_TAU
    """F-score distance threshold, normalised units (the `fscore` column, 1%)"""
    tau_2: float = metrics.FSCORE_TAU_2
    """the second F-score's threshold (the `fscore_2pct` column, 2%)"""
    pictures: bool = True
    """draw a picture strip per object (input | prediction | ground truth) into pictures/ and report.md"""
    picture_scale: int = 2
    """pictures are rendered at this multiple of the stored image size"""
    page_faces: int = PAGE_FACES
    """faces of each mesh in report.html (decimated; metrics always use the full mesh). With pictures only"""
    faces: int | None = None
    """write each mesh file decimated to at most this many faces (evaluation.mesh_page.decimate); None: the full
    mesh. Metrics, pictures and the page always use the full mesh"""
    limit: int | None = None
    """evaluate only the first N objects of the split (after objects and per_category)"""
    objects: tuple[str, ...] = ()
    """evaluate only these object ids (of the split)"""
    per_category: int | None = None
    """the first N objects of each category (so a short run covers them all)"""
    seed: int = 0
    """seed of the surface sampling"""
    extra: dict[str, str] = field(default_factory=dict)
    """free-form settings echoed into the report"""

    def __post_init__(self):
        """Refuse values no object can be evaluated with, naming the `aps eval` option, before anything is
        loaded or written (0 would divide by zero, 3000 allocate 101 GiB, in every object)."""
        check_formats(self.formats)
        check_grid(self.resolution, self.coarse)
        check_page_faces(self.page_faces)
        if self.faces is not None:
            check_page_faces(self.faces, "--faces")
        at_least = {"--view": (self.view, 0), "--points-per-query": (self.batch_size, 1),
                    "--silhouette-views": (self.silhouette_views, 1), "--limit": (self.limit, 1),
                    "--per-category": (self.per_category, 1), "n_samples": (self.n_samples, 1),
                    "picture_scale": (self.picture_scale, 1)}
        for name, (value, least) in at_least.items():
            if value is not None and not (isinstance(value, int) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not (isinstance(self.level, int | float) and 0 < self.level < 1):
            raise ValueError(f"--level must lie in (0, 1) (an occupancy probability), got {self.level!r}")
        for name, tau in (("tau", self.tau), ("tau_2", self.tau_2)):
            if not 0 < tau < 1:
                raise ValueError(f"{name} must lie in (0, 1) (a distance in normalised units), got {tau!r}")
