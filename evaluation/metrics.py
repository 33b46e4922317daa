"""Reconstruction metrics in the normalised frame (OccNet's definitions: docs/METHOD.md, "Evaluation"; docs/METRICS.md).

All points are in the normalised frame (unit cube [-0.5, 0.5]^3, longest side 1) and all distances are
Euclidean (not squared) in that frame's units: a Chamfer-L1 of 0.01 is 1% of the object's longest side.
Neighbour queries use scipy.spatial.cKDTree; `workers` is its number of query threads (-1: every core; a
Dask worker that owns one core passes 1). It changes the speed, never a value.

A prediction with no surface (the field never reaches 0.5, or marching cubes gives no face) cannot be
sampled; its surface metrics take the worst values below and the status column says why. IoU is still
computed from the field, which is defined everywhere.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from common.timing import LapTimer

log = logging.getLogger(__name__)

N_SURFACE_SAMPLES = 100_000  # OccNet: 100k points sampled on the predicted mesh
FSCORE_TAU = 0.01  # F-score threshold, normalised units: 1% of the longest side (Tatarchenko et al. 2019)
FSCORE_TAU_2 = 0.02  # ... and the looser one of the second F-score column, 2%
EDGE_EPS = 0.01  # paper eq. 13: neighbourhood radius of the sharpness
EDGE_SHARPNESS = 0.1  # paper eq. 13: edge point if sigma(p) < 0.1

# Worst values for a prediction without surface (docs/METRICS.md, "Failures"). No two points of the unit
# cube are farther apart than its diagonal, so no prediction inside it has a larger Chamfer distance.
WORST_DISTANCE = math.sqrt(3.0)
WORST_SQUARED_DISTANCE = 3.0
WORST_NORMAL_CONSISTENCY = 0.0
WORST_FSCORE = 0.0

# The scores of a mesh without surface: no point of it can be sampled (a row's iou still comes from the field)
WORST_SURFACE_SCORES = {"chamfer_l1": WORST_DISTANCE, "ecd": WORST_DISTANCE,
                        "normal_consistency": WORST_NORMAL_CONSISTENCY, "fscore": WORST_FSCORE,
                        "fscore_2pct": WORST_FSCORE, "chamfer_l2": WORST_SQUARED_DISTANCE, "precision": 0.0,
                        "recall": 0.0}

METRIC_NAMES = ("iou", "chamfer_l1", "ecd", "normal_consistency", "fscore")  # metrics.csv's first columns, in order
# the order of the tables: IoU and the F-scores first, as in the tables people compare with (docs/METRICS.md)
TABLE_ORDER = ("iou", "fscore", "fscore_2pct", "chamfer_l1", "ecd", "normal_consistency")
HIGHER_IS_BETTER = {"iou": True, "chamfer_l1": False, "chamfer_l2": False, "ecd": False, "normal_consistency": True,
                    "fscore": True, "fscore_2pct": True, "silhouette_iou": True}


def _unit(normals: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(norm, 1e-12)


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, n: int = N_SURFACE_SAMPLES, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted samples on a triangle mesh.

    vertices (V, 3), faces (F, 3) -> points (n, 3) float32 and their unit face normals (n, 3) float32,
    same frame as the vertices. Degenerate faces (zero area) are never drawn.

    The draws and the arithmetic of trimesh.sample.sample_surface (and of trimesh's face normals), bit for bit,
    with the edge vectors and normals computed for the drawn faces only instead of all of them, and without
    building a trimesh.Trimesh (its array hashing and caches): half the time on a 256^3 mesh of 200-430k faces
    (benchmarks/bench_eval.py --levers; tests/evaluation/test_cpu_rest.py compares with trimesh).
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    # trimesh.triangles.cross and .area: the cross product of (v1 - v0, v2 - v1), area its norm / 2
    crosses = np.cross(v1 - v0, v2 - v1)
    weight_cum = np.cumsum(np.sqrt((crosses ** 2).sum(axis=1)) / 2.0)
    random = np.random.default_rng(seed).random
    face_index = np.searchsorted(weight_cum, random(n) * weight_cum[-1])
    lengths = random((n, 2, 1))  # two edge fractions; a pair past the diagonal folds back into the triangle
    lengths[lengths.sum(axis=1).reshape(-1) > 1.0] -= 1.0
    lengths = np.abs(lengths)
    origin = v0[face_index]
    points = (v1[face_index] - origin) * lengths[:, 0] + (v2[face_index] - origin) * lengths[:, 1] + origin
    # trimesh.util.unitize: a face whose cross product is below its zero tolerance gets a zero normal
    picked = crosses[face_index]
    norm = np.sqrt(np.dot(picked * picked, [1.0, 1.0, 1.0]))
    valid = norm > _TRIMESH_TOL_ZERO
    norm[valid] **= -1
    normals = np.where(valid[:, None], picked * norm.reshape((-1, 1)), 0.0)
    return points.astype(np.float32), _unit(normals).astype(np.float32)


_TRIMESH_TOL_ZERO = float(np.finfo(np.float64).resolution * 100)  # trimesh.util.TOL_ZERO


# Exact nearest neighbours either way; these only make them faster (benchmarks/bench_eval.py, docs/EVALUATION.md)
LEAF_SIZE = 64  # points per KD-tree leaf: scipy's 16 visits more nodes for the same distances (only between two
# equidistant neighbours could the index found differ); 48-96 are within 5% of each other on 100k surface
# samples, 32 10% slower, 16 30% slower (benchmarks/bench_eval.py --levers)
PAIRS_LEAF_SIZE = 32  # ... and of the trees whose close pairs give the edge points: 16-32 there, 64 is 20% slower


def _tree(points: np.ndarray, leafsize: int = LEAF_SIZE) -> cKDTree:
    """A KD-tree split at the sliding midpoint (balanced_tree=False) with each node's box left as the split made it
    (compact_nodes=False): built in half the time of scipy's default (median splits, boxes shrunk to the points),
    and on surface samples its nearest-neighbour queries run 1.5-2.4x faster (benchmarks/bench_eval.py --levers).
    Any tree gives the exact nearest neighbours; only the order in which nodes are visited changes."""
    return cKDTree(points, leafsize=leafsize, balanced_tree=False, compact_nodes=False)


def _query_in_tree_order(tree: cKDTree, queries: cKDTree, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """tree.query of every point of `queries`, asked in the leaf order of the queries' own tree: neighbouring
    questions then walk the same nodes while they are in cache (sampled points come in random order, ~2.5x
    slower). Each answer is independent of the order, so distances and indices are those of a plain query."""
    order = queries.indices
    distance, index = tree.query(queries.data[order], workers=workers)
    out_distance, out_index = np.empty_like(distance), np.empty_like(index)
    out_distance[order], out_index[order] = distance, index
    return out_distance, out_index


@dataclass
class _Nearest:
    """Nearest-neighbour distances and indices both ways between a predicted and a reference point set."""

    pred_to_ref: np.ndarray  # (P,) distance of each predicted point to the nearest reference point
    pred_to_ref_index: np.ndarray
    ref_to_pred: np.ndarray  # (R,) distance of each reference point to the nearest predicted point
    ref_to_pred_index: np.ndarray

    @classmethod
    def between(cls, pred: np.ndarray, ref: np.ndarray, workers: int = -1) -> _Nearest:
        pred_tree, ref_tree = _tree(pred), _tree(ref)
        d_pr, i_pr = _query_in_tree_order(ref_tree, pred_tree, workers)
        d_rp, i_rp = _query_in_tree_order(pred_tree, ref_tree, workers)
        return cls(d_pr, i_pr, d_rp, i_rp)

    def chamfer_l1(self) -> float:
        return 0.5 * (float(self.pred_to_ref.mean()) + float(self.ref_to_pred.mean()))

    def chamfer_l2(self) -> float:
        """½ (mean squared distance both ways): OccNet's Chamfer-L2 (docs/METRICS.md converts it to IM-NET's)."""
        return 0.5 * (float(np.square(self.pred_to_ref, dtype=np.float64).mean())
                      + float(np.square(self.ref_to_pred, dtype=np.float64).mean()))

    def normal_consistency(self, pred_normals: np.ndarray, ref_normals: np.ndarray) -> float:
        pn, rn = _unit(pred_normals), _unit(ref_normals)
        accuracy = np.abs(np.einsum("ij,ij->i", pn, rn[self.pred_to_ref_index])).mean()
        completeness = np.abs(np.einsum("ij,ij->i", rn, pn[self.ref_to_pred_index])).mean()
        return 0.5 * (float(accuracy) + float(completeness))

    def fscore(self, tau: float) -> tuple[float, float, float]:
        precision = float((self.pred_to_ref <= tau).mean())
        recall = float((self.ref_to_pred <= tau).mean())
        f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        return f, precision, recall


def chamfer_l1(pred: np.ndarray, ref: np.ndarray, workers: int = -1) -> float:
    """½ (mean_{p in pred} min_{q in ref} |p - q| + mean_{q in ref} min_{p in pred} |q - p|).

    pred (P, 3), ref (R, 3): points, normalised frame. Returns normalised units.
    """
    return _Nearest.between(pred, ref, workers).chamfer_l1()


def chamfer_l2(pred: np.ndarray, ref: np.ndarray, workers: int = -1) -> float:
    """chamfer_l1 with squared distances (OccNet's Chamfer-L2), squared normalised units."""
    return _Nearest.between(pred, ref, workers).chamfer_l2()


def normal_consistency(pred: np.ndarray, pred_normals: np.ndarray, ref: np.ndarray, ref_normals: np.ndarray
                       ) -> float:
    """Mean |n_p . n_q| of a point's normal and its nearest neighbour's in the other set, both ways averaged.

    Orientation-free (absolute value), in [0, 1]; 1 means every normal matches its neighbour's.
    """
    return _Nearest.between(pred, ref).normal_consistency(pred_normals, ref_normals)


def fscore(pred: np.ndarray, ref: np.ndarray, tau: float = FSCORE_TAU) -> tuple[float, float, float]:
    """F-score at distance tau: (F, precision, recall).

    precision = fraction of predicted points within tau of the reference, recall = fraction of reference
    points within tau of the prediction, F = 2PR / (P + R) (0 when both are 0).
    """
    return _Nearest.between(pred, ref).fscore(tau)


def _close_pairs(points: np.ndarray, normals: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of points within eps of each other, and |n_i . n_j| of each: (K, 2), (K,)."""
    points = np.asarray(points, np.float64)
    normals = _unit(np.asarray(normals, np.float64))
    pairs = _tree(points, PAIRS_LEAF_SIZE).query_pairs(eps, output_type="ndarray")
    return pairs, np.abs(np.einsum("ij,ij->i", normals[pairs[:, 0]], normals[pairs[:, 1]]))


def sharpness(points: np.ndarray, normals: np.ndarray, eps: float = EDGE_EPS) -> np.ndarray:
    """Paper eq. 13: sigma(p) = min over neighbours q within eps of |n_p . n_q|.

    points (N, 3), normals (N, 3) -> (N,) float in [0, 1]. A point with no neighbour within eps gets 1:
    nothing shows it to be on an edge.
    """
    sigma = np.ones(len(points))
    if len(points) < 2:
        return sigma
    pairs, dots = _close_pairs(points, normals, eps)
    if len(pairs):
        np.minimum.at(sigma, pairs[:, 0], dots)
        np.minimum.at(sigma, pairs[:, 1], dots)
    return sigma


def edge_points(points: np.ndarray, normals: np.ndarray, eps: float = EDGE_EPS,
                threshold: float = EDGE_SHARPNESS) -> np.ndarray:
    """Boolean (N,) mask of the edge points: sigma(p) < threshold (paper eq. 13, eps 0.01, threshold 0.1).

    sharpness(...) < threshold without the minimum per point: sigma(p) is below the threshold exactly when one of
    p's pairs is (a point without pairs has sigma 1), so the points of those pairs are marked directly; the same
    mask, without the unbuffered np.minimum.at over the ~0.5-1.3 million pairs of 100k surface samples.
    """
    if threshold > 1.0:  # sigma <= 1 everywhere
        return np.ones(len(points), bool)
    edges = np.zeros(len(points), bool)
    if len(points) < 2:
        return edges
    pairs, dots = _close_pairs(points, normals, eps)
    edges[pairs[dots < threshold].reshape(-1)] = True
    return edges


def edge_chamfer_distance(pred: np.ndarray, pred_normals: np.ndarray, ref: np.ndarray,
                          ref_normals: np.ndarray, eps: float = EDGE_EPS, threshold: float = EDGE_SHARPNESS,
                          workers: int = -1) -> tuple[float, int, int]:
    """ECD: Chamfer-L1 between the edge points of the two sets -> (ecd, n_pred_edges, n_ref_edges).

    The reference has no edge point (a smooth shape, e.g. rounded CAD parts at eps = 0.01): NaN, the metric
    is undefined for this object and left out of the means. The reference has edges but the prediction none:
    WORST_DISTANCE, every true edge was missed.
    """
    pred_edges = pred[edge_points(pred, pred_normals, eps, threshold)]
    ref_edges = ref[edge_points(ref, ref_normals, eps, threshold)]
    if len(ref_edges) == 0:
        return math.nan, len(pred_edges), 0
    if len(pred_edges) == 0:
        return WORST_DISTANCE, 0, len(ref_edges)
    return chamfer_l1(pred_edges, ref_edges, workers), len(pred_edges), len(ref_edges)


def volumetric_iou(pred_inside: np.ndarray, ref_inside: np.ndarray) -> float:
    """|pred ∩ ref| / |pred ∪ ref| over the same uniform points of the reference box (OccNet's IoU).

    pred_inside, ref_inside: (N,) bool. Both empty: 1 (the two agree that there is no volume).
    """
    pred_inside = np.asarray(pred_inside, bool)
    ref_inside = np.asarray(ref_inside, bool)
    if pred_inside.shape != ref_inside.shape:
        raise ValueError(f"IoU needs flags of the same points: {pred_inside.shape} vs {ref_inside.shape}")
    union = np.count_nonzero(pred_inside | ref_inside)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred_inside & ref_inside) / union


def silhouette_iou(pred_masks: np.ndarray, ref_masks: np.ndarray) -> float:
    """Mean over views of the pixel IoU of two silhouettes: a weight-free visual similarity (not DR-KFS).

    pred_masks, ref_masks: (V, H, W) bool, the same cameras. Views where both are empty are skipped;
    all empty: 1.
    """
    pred_masks = np.asarray(pred_masks, bool)
    ref_masks = np.asarray(ref_masks, bool)
    if pred_masks.shape != ref_masks.shape:
        raise ValueError(f"silhouettes of different shapes: {pred_masks.shape} and {ref_masks.shape}")
    inter = np.count_nonzero(pred_masks & ref_masks, axis=(1, 2))
    union = np.count_nonzero(pred_masks | ref_masks, axis=(1, 2))
    seen = union > 0
    if not seen.any():
        return 1.0
    return float(np.mean(inter[seen] / union[seen]))


def surface_scores(vertices: np.ndarray, faces: np.ndarray, ref_points: np.ndarray, ref_normals: np.ndarray,
                   n_samples: int = N_SURFACE_SAMPLES, tau: float = FSCORE_TAU, seed: int = 0,
                   workers: int = -1, timings: dict[str, float] | None = None,
                   tau_2: float = FSCORE_TAU_2) -> dict[str, float]:
    """Chamfer-L1 and -L2, ECD, normal consistency and the F-scores at tau and tau_2 of a predicted mesh against
    the reference surface.

    vertices (V, 3), faces (F, 3): the predicted mesh, normalised frame; ref_points, ref_normals (R, 3):
    points and unit normals on the true surface. A mesh without faces gets the worst values (see the top).
    Also returns precision, recall and the edge point counts, for the extra columns. `timings`, when given,
    receives the seconds of each step: sampling, nearest (the two KD-trees behind Chamfer-L1, normal
    consistency and F-score), ecd.
    """
    clock = LapTimer(timings)
    if len(faces) == 0:
        n_edge_ref = int(np.count_nonzero(edge_points(ref_points, ref_normals)))
        clock.lap("ecd")
        return {**WORST_SURFACE_SCORES, "n_edge_pred": 0, "n_edge_ref": n_edge_ref}
    pred, pred_normals = sample_mesh(vertices, faces, n_samples, seed)
    clock.lap("sampling")
    ref_points = np.asarray(ref_points, np.float32)
    nn = _Nearest.between(pred, ref_points, workers)
    f, precision, recall = nn.fscore(tau)
    f_2, _, _ = nn.fscore(tau_2)
    chamfer, consistency = nn.chamfer_l1(), nn.normal_consistency(pred_normals, ref_normals)
    clock.lap("nearest")
    ecd, n_edge_pred, n_edge_ref = edge_chamfer_distance(pred, pred_normals, ref_points, ref_normals,
                                                         workers=workers)
    clock.lap("ecd")
    return {"chamfer_l1": chamfer, "ecd": ecd, "normal_consistency": consistency, "fscore": f, "fscore_2pct": f_2,
            "chamfer_l2": nn.chamfer_l2(), "precision": precision, "recall": recall,
            "n_edge_pred": n_edge_pred, "n_edge_ref": n_edge_ref}
