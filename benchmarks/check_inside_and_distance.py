"""How far the stored inside flags and distances can be trusted, on every mesh of a dataset.

    python benchmarks/check_inside_and_distance.py [--manifest manifests/industrial-parts.toml]

Per mesh: agreement of the generalised winding number (what the store uses) with ray parity (open3d's
occupancy test), split by watertight single-shell meshes (where parity is right) and the others (several
shells or holes); and the largest distance error of open3d and of pysdf against libigl's exact
point-triangle distance, on 10,000 points placed like the training points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.manifest import load_manifest  # noqa: E402
from pipeline.stages.distances import inside, udf  # noqa: E402
from pipeline.stages.load import MeshError, load_mesh  # noqa: E402
from pipeline.stages.normalize import normalize  # noqa: E402
from pipeline.stages.sample_points import jitter, sample_surface, uniform_points  # noqa: E402


def main() -> None:
    import igl
    import open3d as o3d
    import trimesh

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="manifests/industrial-parts.toml")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for spec, _ in load_manifest(args.manifest).objects():
        try:
            v, f = load_mesh(spec.source)
        except MeshError as exc:
            print(f"skip {spec.object_id}: {exc}")
            continue
        v, _, _ = normalize(v, f)
        s, _ = sample_surface(v, f, 9872, rng)
        pts = np.concatenate([jitter(s, (0.005, 0.02), (0.5, 0.5), rng), uniform_points(128, rng)])
        wn = inside(v, f, pts)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
        parity = scene.compute_occupancy(o3d.core.Tensor(pts.astype(np.float32))).numpy() > 0.5
        exact = np.sqrt(igl.point_mesh_squared_distance(pts, v, f)[0])
        mesh = trimesh.Trimesh(v, f)
        clean = bool(mesh.is_watertight and mesh.body_count == 1)
        rows.append((spec.object_id, clean, float(np.mean(wn == parity)),
                     float(np.abs(udf(v, f, pts) - exact).max()), float(np.abs(udf(v, f, pts, "pysdf") - exact).max())))
    print(f"{'object':60s} {'clean':5s} {'agree':>7s} {'open3d err':>11s} {'pysdf err':>10s}")
    for r in rows:
        print(f"{r[0]:60s} {str(r[1]):5s} {r[2]:7.4f} {r[3]:11.2e} {r[4]:10.2e}")
    for label, sel in (("watertight single-shell", True), ("multi-shell or open", False)):
        agree = [r[2] for r in rows if r[1] == sel]
        if agree:
            print(f"\n{label}: {len(agree)} meshes, winding number vs ray parity agreement "
                  f"mean {np.mean(agree):.4f}, min {np.min(agree):.4f}")
    o3d_err = np.array([r[3] for r in rows])
    sdf_err = np.array([r[4] for r in rows])
    print(f"open3d distance: max error {o3d_err.max():.2e} over {len(rows)} meshes")
    print(f"pysdf distance:  max error {sdf_err.max():.2e}; meshes with error > 1e-4: {(sdf_err > 1e-4).sum()}")


if __name__ == "__main__":
    main()
