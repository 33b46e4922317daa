"""Pictures of the same test parts from several stored views: the ground truth beside each run's mesh, so a
blob, a lost bore or a wrong depth shows from the sides the input view hides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import trimesh

from evaluation.render import GT_COLOR, PRED_COLOR, compose_strip, load_source_mesh, save_png
from pipeline.cameras import render_mesh, scale_intrinsics
from pipeline.schema.read import open_store

VIEWS = (0, 6, 12, 18)
"""stored views drawn: 0 is the input view of `aps eval`, the others 90, 180 and 270 degrees of azimuth on"""


def _mesh(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    mesh = trimesh.load(path, process=False, force="mesh")
    if len(mesh.faces) == 0:
        return None
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)


def views_figure(data: Path, runs: Mapping[str, Path], object_id: str, out: Path,
                 views: Sequence[int] = VIEWS, scale: int = 2) -> Path:
    """out (PNG): one row per stored view, columns input image | ground truth | each run's mesh (its eval folder's
    meshes/<object_id>.ply, in the normalised frame), every tile of a row from that view's camera."""
    store = open_store(data)
    arrays = store.load(object_id, ["images", "K", "Rt", "scale", "center"])
    gt = load_source_mesh(store.info(object_id), float(arrays["scale"]), arrays["center"])
    meshes = {label: _mesh(folder / "meshes" / f"{object_id}.ply") for label, folder in runs.items()}
    rows = []
    for v in views:
        image = arrays["images"][v]
        h, w = image.shape[:2]
        K, Rt = scale_intrinsics(np.asarray(arrays["K"][v], np.float64), scale), np.asarray(arrays["Rt"][v])
        tiles, labels = [image], [f"view {v}{' (input)' if v == 0 else ''}"]
        if gt is not None:
            tiles.append(render_mesh(*gt, K, Rt, h * scale, w * scale, GT_COLOR))
            labels.append("ground truth")
        for label, mesh in meshes.items():
            empty = np.zeros((h * scale, w * scale, 4), np.uint8)
            tiles.append(empty if mesh is None else render_mesh(*mesh, K, Rt, h * scale, w * scale, PRED_COLOR))
            labels.append(label if mesh is not None else f"{label} (no surface)")
        rows.append(compose_strip(tiles, labels, tile=h * scale))
    width = max(r.shape[1] for r in rows)
    picture = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                              for r in rows])
    save_png(picture, out)
    return out


PICTURED = ("arm_link-iiwa-link_7", "gripper_part-panda_gripper-finger", "arm_link-tiago-head-head_1")
"""test parts drawn from four views for every stage: an arm link with a flange, a thin gripper finger, a head"""


def stage_pictures(runs: Mapping[str, tuple[Path, Path]], out: Path, objects: Sequence[str] = PICTURED,
                   scale: int = 1) -> list[Path]:
    """OUT/views-<object>-<store>.png for each pictured object: runs = {label: (eval folder, store)}, those whose
    eval has finished drawn side by side, one picture per store: the stored cameras differ between stores
    preprocessed with other params (a store of more uniform points drew its views after them), and each run is
    shown from the views of its own store, its input first. A store that holds none of `objects` has its test
    parts pictured."""
    by_store: dict[Path, dict[str, Path]] = {}
    for label, (folder, store) in runs.items():
        if (folder / "eval.json").is_file():
            by_store.setdefault(store, {})[label] = folder
    written = []
    for store, evals in by_store.items():
        opened = open_store(store)
        held = [o for o in objects if o in set(opened.object_ids)]
        if not held:  # another dataset (the demo's): its test parts
            held = [o for o in opened.object_ids if opened.info(o)["split"] == "test"][:len(objects)]
        written += [views_figure(store, evals, o, out / f"views-{o}-{store.name}.png", scale=scale) for o in held]
    return written


def curves_figure(curves: Mapping[str, list[dict]], path: Path) -> bool:
    """Validation IoU and the learning rate against wall minutes (elapsed_s), one line per run: what a budget
    buys, on the x axis users plan with. False if no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return False
    fig, (ax_iou, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    for i, (name, rows) in enumerate(curves.items()):
        minutes = [float(r["elapsed_s"]) / 60 for r in rows]
        ax_iou.plot(minutes, [float(r["val_iou"]) for r in rows], color=f"C{i}", lw=1.5, label=name)
        ax_lr.plot(minutes, [float(r["lr"]) for r in rows], color=f"C{i}", lw=1.5, label=name)
    ax_iou.set(xlabel="wall minutes", ylabel="validation IoU", title="validation IoU (each run's val_on points)")
    ax_lr.set(xlabel="wall minutes", ylabel="learning rate", title="decoder learning rate", yscale="log")
    return save_panels(fig, (ax_iou, ax_lr), path)


def save_panels(fig, axes, path: Path) -> bool:
    """Grid and legend on each panel, then the figure written atomically to path (PNG) and closed."""
    import matplotlib.pyplot as plt

    from common.atomic import atomic_write

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, fig.savefig)
    plt.close(fig)
    return True
