"""The ablation's figures: learning_curves.png (validation IoU and s against epoch per variant) and sweep.png
(paper Fig. 6: each test object rendered from the input camera at every fixed s, adaptive, ground truth).

Why apart from the tables: they need matplotlib, trimesh and the renderer, which the tables do not; they read
the runs' curves and the evals' meshes and make no run themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from common.atomic import atomic_write
from experiments.ablation.plan import KNOWN_VARIANTS, VARIANTS, Layout, Plan, fixed, read_curve


def plot_curves(layout: Layout, names: Sequence[str], seeds: Sequence[int], path: Path,
                reference: float = math.nan) -> bool:
    """learning_curves.png: val IoU (and s) against epoch, one colour per variant, with the all-inside IoU as a
    dashed reference line when given; False if no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: [c for s in seeds if (c := read_curve(layout.run_dir(KNOWN_VARIANTS[name], s)))] for name in names}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    fig, (ax_iou, ax_s) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    for i, (name, runs) in enumerate(curves.items()):
        color = f"C{i}"
        length = min(len(c) for c in runs)
        epochs = [c["epoch"] for c in runs[0][:length]]
        mean = [sum(c[e]["val_iou"] for c in runs) / len(runs) for e in range(length)]
        for c in runs if len(runs) > 1 else []:
            ax_iou.plot([r["epoch"] for r in c], [r["val_iou"] for r in c], color=color, alpha=0.25, lw=0.8)
        ax_iou.plot(epochs, mean, color=color, lw=2, label=f"{name} (n={len(runs)})")
        s_runs = [c for c in runs if not math.isnan(c[0]["s"])]
        if s_runs:
            ax_s.plot(epochs, [sum(c[e]["s"] for c in s_runs) / len(s_runs) for e in range(length)],
                      color=color, lw=2, label=name)
    if not math.isnan(reference):
        ax_iou.axhline(reference, color="k", ls="--", lw=1, label=f"every point inside ({reference:.3f})")
    ax_iou.set(xlabel="epoch", ylabel="validation IoU", title="validation IoU (mean over seeds; seeds faint)")
    ax_iou.grid(alpha=0.3)
    ax_iou.legend(fontsize=7)
    ax_s.set(xlabel="epoch", ylabel="s", title="s the epoch trained with", ylim=(0, 1))
    ax_s.grid(alpha=0.3)
    if ax_s.lines:
        ax_s.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return True


def _save_figure(fig, path: Path) -> None:
    atomic_write(path, fig.savefig)


def sweep_picture(plan: Plan, data: Path, layout: Layout, path: Path) -> list[str]:
    """sweep.png (paper Fig. 6): per test object, input | fpn at each fixed s | fpn+adaptive | ground truth,
    all rendered from the input camera; a run without a mesh for the object shows an empty tile.

    Returns the object ids pictured ([] when no sweep eval has finished).
    """
    import numpy as np
    import trimesh

    from evaluation.render import PRED_COLOR, compose_strip, load_source_mesh, render_points, save_png
    from pipeline.cameras import render_mesh
    from pipeline.schema.read import open_store

    seed = plan.seeds[0]
    columns = [(f"s={s:g}", fixed(s)) for s in plan.sweep]
    if "fpn+adaptive" in plan.variants:
        columns.append(("adaptive", VARIANTS["fpn+adaptive"]))
    done = [(title, v) for title, v in columns if (layout.eval_dir(v, seed) / "eval.json").is_file()]
    if not any(v.name.startswith("fpn+fixed") for _, v in done):
        return []
    store = open_store(data)
    object_ids = store.split("test")[: plan.sweep_objects]
    strips = []
    for oid in object_ids:
        image = store.read(oid, "images", plan.eval_view)
        K, Rt = store.read(oid, "K", plan.eval_view), store.read(oid, "Rt", plan.eval_view)
        height, width = image.shape[:2]
        tiles, labels = [image], [oid[:22]]
        for title, variant in done:
            mesh_path = layout.eval_dir(variant, seed) / "meshes" / f"{oid}.ply"
            if mesh_path.is_file():
                mesh = trimesh.load(mesh_path, process=False, force="mesh")
                tiles.append(render_mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), K, Rt, height, width,
                                         PRED_COLOR))
            else:
                tiles.append(np.zeros((height, width, 4), np.uint8))
            labels.append(title)
        ref = store.load(oid, ["scale", "center", "ref_surface_points", "ref_surface_normals"])
        gt = load_source_mesh(store.info(oid), float(ref["scale"]), ref["center"])
        tiles.append(render_mesh(*gt, K, Rt, height, width) if gt is not None else
                     render_points(ref["ref_surface_points"], K, Rt, height, width, ref["ref_surface_normals"]))
        labels.append("ground truth")
        strips.append(compose_strip(tiles, labels, tile=min(height, 128)))
    save_png(np.concatenate(strips, axis=0), path)
    return object_ids
