"""Dense vs coarse-to-fine mesh extraction at the paper's 256^3, and the cost of the metrics, per object.

    PYTHONPATH=. python benchmarks/bench_extract.py [--data STORE] [--checkpoint CKPT] [--limit N]

Field: a trained predictor when --checkpoint is given (its input view --view), else the true occupancy of
the object's source mesh (generalised winding number, clipped to [0, 1]: a smooth field like a network's).
The line printed first says which. Prints, per test object: queries and seconds of both extractions, their
ratio, whether the meshes agree (Chamfer between their vertices vs the grid spacing), and the seconds spent
in the metrics (surface metrics on 100k samples, IoU on the reference points, silhouettes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from evaluation import metrics
from inference.extract_mesh import THRESHOLD, extract_coarse_to_fine, extract_dense, grid_spacing
from pipeline.cameras import silhouettes
from pipeline.schema import open_store
from pipeline.stages.distances import winding_number
from pipeline.stages.load import load_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/industrial-demo")
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--view", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--coarse", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    store = open_store(args.data)
    predictor = None
    if args.checkpoint:
        from inference.predictor import load_predictor

        predictor = load_predictor(args.checkpoint)
        print(f"field: trained predictor {args.checkpoint}, input view {args.view}")
    else:
        print("field: true occupancy of the source mesh (clipped generalised winding number), no network")
    print(f"grid: {args.resolution}^3 cells, coarse-to-fine from {args.coarse}^3; {torch.get_num_threads()} threads")
    header = (f"{'object':40s} {'dense q':>10s} {'dense s':>8s} {'c2f q':>9s} {'c2f s':>7s} {'q ratio':>7s} "
              f"{'t ratio':>7s} {'chamfer/h':>9s} {'metrics s':>9s}")
    print(header)
    ids = store.split(args.split)[: args.limit]
    ratios = []
    for oid in ids:
        ref = store.load(oid, [*("ref_surface_points", "ref_surface_normals", "ref_uniform_points",
                                 "ref_uniform_inside"), "scale", "center"])
        if predictor is not None:
            field = predictor.field(store.read(oid, "images", args.view), store.read(oid, "K", args.view),
                                    store.read(oid, "Rt", args.view))
        else:
            v, f = load_mesh(store.info(oid)["source"])
            v = (v - ref["center"]) / float(ref["scale"])
            field = lambda p, v=v, f=f: np.clip(winding_number(v, f, p), 0, 1).astype(np.float32)  # noqa: E731
        dense = extract_dense(field, args.resolution)
        fine = extract_coarse_to_fine(field, args.resolution, args.coarse)
        agree = metrics.chamfer_l1(dense.vertices, fine.vertices) / grid_spacing(args.resolution) \
            if len(dense.vertices) and len(fine.vertices) else float("nan")
        t0 = time.perf_counter()
        metrics.surface_scores(fine.vertices, fine.faces, ref["ref_surface_points"], ref["ref_surface_normals"])
        metrics.volumetric_iou(field(ref["ref_uniform_points"]) > THRESHOLD, ref["ref_uniform_inside"])
        K, Rt = store.read(oid, "K"), store.read(oid, "Rt")
        views = np.linspace(0, len(K) - 1, 8).round().astype(int)
        masks = np.stack([store.read(oid, "images", int(i))[..., 3] > 0 for i in views])
        metrics.silhouette_iou(silhouettes(fine.vertices, fine.faces, K[views], Rt[views], *masks.shape[1:]), masks)
        t_metrics = time.perf_counter() - t0
        ratio = dense.n_queries / fine.n_queries
        ratios.append(ratio)
        print(f"{oid[:40]:40s} {dense.n_queries:10d} {dense.seconds:8.1f} {fine.n_queries:9d} {fine.seconds:7.1f} "
              f"{ratio:7.1f} {dense.seconds / fine.seconds:7.1f} {agree:9.2g} {t_metrics:9.1f}")
    if ratios:
        print(f"query ratio dense / coarse-to-fine: min {min(ratios):.1f}, mean {np.mean(ratios):.1f}")


if __name__ == "__main__":
    main()
