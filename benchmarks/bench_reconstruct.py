"""`aps reconstruct` side by side: a baseline tree of the code and this one, start-up and per-image seconds.

    git archive <commit> | tar -x -C /tmp/recon-base     # the baseline: e.g. the commit before a change
    PYTHONPATH=. python benchmarks/bench_reconstruct.py --baseline /tmp/recon-base [--checkpoint CKPT] [--images 8]

Photos: views of the store's test parts rendered at 3x and pasted on a noisy 800 x 600 beige background, saved
as JPEG (the recipe of docs/RECONSTRUCT.md's README picture), made once in a temporary folder. Each tree runs
the real command (`python -m aps reconstruct`, a fresh process, PYTHONPATH and working folder = the tree) on
1 photo and on --images photos, the trees taking turns, --repeat times; the fastest run of each is kept.
per image = (T_N - T_1) / (N - 1), start-up = T_1 - per image (interpreter, imports, checkpoint, framing,
everything paid once). Then checks that both trees wrote the same files with the same bytes (a .json's
"seconds" aside) and prints the load average before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_photos(store_path: str, folder: Path, count: int) -> list[Path]:
    """`count` JPEG photos: views 0, 1, ... of each test part in turn, rendered at 3x (411 px) and pasted at row
    90, column 330 of an 800 x 600 beige background with noise sigma 8 (seeded), quality 92."""
    from PIL import Image

    from evaluation.render import load_source_mesh
    from pipeline.cameras import render_mesh, scale_intrinsics
    from pipeline.schema import open_store
    from tests.reconstruct.photos import photo_from_render

    store = open_store(store_path)
    ids = store.split("test")
    photos = []
    for n in range(count):
        object_id, view = ids[n % len(ids)], n // len(ids)
        o = store.load(object_id, ["K", "Rt", "scale", "center"])
        vertices, faces = load_source_mesh(store.info(object_id), float(o["scale"]), o["center"])
        view %= len(o["K"])
        rgba = render_mesh(vertices, faces, scale_intrinsics(o["K"][view], 3), o["Rt"][view], 411, 411)
        path = folder / f"{object_id}-v{view}.jpg"
        Image.fromarray(photo_from_render(rgba, 600, 800, (90, 330), seed=n)).save(path, quality=92)
        photos.append(path)
    return photos


def run(tree: Path, photos: Path, out: Path, args, extra: list[str]) -> float:
    """Wall seconds of `aps reconstruct PHOTOS [EXTRA]` with the code of `tree`, in a fresh process."""
    command = [sys.executable, "-m", "aps", "reconstruct", str(photos), "--checkpoint", str(args.checkpoint),
               "--out", str(out), "--data", str(args.data), "--threads", str(args.threads), *extra]
    env = {**os.environ, "PYTHONPATH": str(tree), "APS_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{tree}: aps reconstruct failed:\n{done.stderr[-2000:]}")
    return seconds


def differences(a: Path, b: Path) -> list[str]:
    """The files of two output folders that differ (a .json compared without its "seconds")."""
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    wrong = []
    for name in names:
        if not (a / name).is_file() or not (b / name).is_file():
            wrong.append(f"{name} (only one tree wrote it)")
        elif name.endswith(".json"):
            one, two = (json.loads((d / name).read_text()) for d in (a, b))
            one.pop("seconds"), two.pop("seconds")
            if one != two:
                wrong.append(name)
        elif (a / name).read_bytes() != (b / name).read_bytes():
            wrong.append(name)
    return wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="a tree of the code to compare with")
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "runs/industrial-demo/last.ckpt")
    ap.add_argument("--data", type=Path, default=ROOT / "data/industrial-demo")
    ap.add_argument("--images", type=int, default=8, help="photos of the longer run (at least 2)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each tree and size; the fastest is kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--options", default="", help="more options for this tree's command only, e.g. '--precision fp32'")
    args = ap.parse_args()
    args.checkpoint, args.data, baseline = args.checkpoint.resolve(), args.data.resolve(), args.baseline.resolve()
    if args.images < 2 or not (baseline / "aps" / "cli.py").is_file():
        sys.exit("--images must be at least 2 and --baseline a tree of this code (it holds aps/cli.py)")
    trees = {"baseline": baseline, "this tree": ROOT}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-reconstruct-") as tmp:
        tmp = Path(tmp)
        one, many = tmp / "one", tmp / "many"
        one.mkdir(), many.mkdir()
        photos = make_photos(str(args.data), many, args.images)
        (one / photos[0].name).write_bytes(photos[0].read_bytes())
        best = {(tree, n): float("inf") for tree in trees for n in (1, args.images)}
        for r in range(args.repeat):
            for name, tree in trees.items():
                for n, folder in ((1, one), (args.images, many)):
                    extra = args.options.split() if tree == ROOT else []
                    seconds = run(tree, folder, tmp / f"out-{name}-{n}-{r}", args, extra)
                    best[name, n] = min(best[name, n], seconds)
        wrong = differences(tmp / f"out-baseline-{args.images}-0", tmp / f"out-this tree-{args.images}-0")
    load_after = os.getloadavg()

    print(f"`aps reconstruct`, {args.checkpoint.name} of {args.checkpoint.parent}, framing of {args.data}; "
          f"--threads {args.threads}, best of {args.repeat}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print(f"baseline: {baseline}; this tree: {ROOT} {args.options}")
    rows = {}
    for name in trees:
        t1, tn = best[name, 1], best[name, args.images]
        per_image = (tn - t1) / (args.images - 1)
        rows[name] = (t1, tn, per_image, t1 - per_image)
    print(f"{'':12s} {'1 image s':>10s} {f'{args.images} images s':>12s} {'per image s':>12s} {'start-up s':>11s}")
    for name, row in rows.items():
        print(f"{name:12s} " + " ".join(f"{v:>{w}.2f}" for v, w in zip(row, (10, 12, 12, 11), strict=True)))
    old, new = rows["baseline"], rows["this tree"]
    print(f"{'ratio':12s} " + " ".join(f"{o / n:>{w}.2f}x" for o, n, w in zip(old, new, (9, 11, 11, 10), strict=True)))
    print("outputs: the same files, byte for byte (.json but its seconds)" if not wrong else
          f"outputs DIFFER: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
