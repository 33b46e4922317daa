"""Eval throughput and where its time goes: seconds per object by step, objects/s with 1 and 2 Dask workers,
core-seconds per object, and what a ShapeNet-13 test split (8,762 objects) would take on bigger machines.

    PYTHONPATH=. python benchmarks/bench_eval.py [--checkpoint runs/industrial-demo/last.ckpt]
        [--data data/industrial-demo] [--repeat 4] [--workers 1 2] [--resolution 256] [--pictures] [--levers]

The field is the trained network of --checkpoint (`make preprocess train` leaves the demo's). Each object of the
split is evaluated --repeat times (the demo's test split holds 2; every repetition is a whole evaluation) on a
LocalCluster of N one-core workers, the CPU path of `aps eval`. The repeat is even so that 2 workers can share the
objects evenly: a run of thousands has no tail, a run of 6 objects of two sizes on 2 workers always has one. Each
worker first evaluates one object untimed: the first object of a process pays one-off costs (oneDNN kernels,
open3d, lazy imports) that a long run spreads over thousands. --levers measures, on one object, each speed lever
of the eval against what it replaced.
Figures come from one run on this machine (noisy when shared): the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from evaluation.config import EvalConfig  # noqa: E402
from evaluation.executors import PREDICT_THREADS, EvalExecutor, eval_local_cluster, run_objects  # noqa: E402
from evaluation.fields import CPU_BATCH, CheckpointFields  # noqa: E402
from evaluation.object_eval import STEPS, EvalJob, evaluate_one, predict_object  # noqa: E402
from pipeline.schema import open_store  # noqa: E402

SHAPENET_13_TEST = 8762
# Client-side steps of the GPU path (network='client'): the rest of predict_object runs on the GPU
CLIENT_CPU_STEPS = ("read", "grid", "marching_cubes")
GPU_STEPS = ("encode", "queries", "iou_queries")
SCORE_STEPS = ("read", "sampling", "nearest", "ecd", "silhouettes", "write", "pictures", "record")


def _warm(job: EvalJob, object_id: str) -> float:
    """Run on every worker before timing: one whole object, untimed by the benchmark."""
    t0 = time.perf_counter()
    evaluate_one(open_store(job.store_path), job, object_id)
    return time.perf_counter() - t0


def throughput(job: EvalJob, object_ids: list[str], workers: int) -> tuple[float, list]:
    """(wall seconds, results) of `object_ids` on a fresh LocalCluster of `workers` one-core processes."""
    from dask.distributed import Client

    cluster = eval_local_cluster(workers)  # the cluster `aps eval` starts
    try:
        with Client(cluster) as client:
            warm = client.run(_warm, replace(job, neighbour_workers=1), object_ids[0])
            print(f"  warm-up object per worker: {', '.join(f'{s:.1f} s' for s in warm.values())}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        results = list(run_objects(job, open_store(job.store_path), object_ids,
                                   EvalExecutor(cluster.scheduler_address, network="workers")))
        wall = time.perf_counter() - t0
        print(f"  this process (client, scheduler, nannies) used {time.process_time() - cpu0:.1f} CPU-s of the "
              f"{wall:.1f} s")
        return wall, results
    finally:
        cluster.close()


def client_thread_speedup(store, fields: CheckpointFields, config: EvalConfig, object_id: str, threads: int = 2
                          ) -> float:
    """How much faster the GPU path's CPU half (grid bookkeeping, marching cubes) runs in `threads` threads of one
    process, as network='client' runs it: one object's queries are recorded once, then its extraction is
    replayed (the field answering from the record, as a fast device would) 2 x threads times, in a loop and
    in a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    from evaluation.object_eval import read_view
    from inference.extract_mesh import extract_mesh

    field = fields(read_view(store, object_id, config.view))
    answers = []
    extract_mesh(lambda p: answers.append(field(p)) or answers[-1], config.resolution, config.coarse)

    def replay(_):
        it = iter(answers)
        return extract_mesh(lambda p: next(it), config.resolution, config.coarse)

    replay(0)
    t0 = time.perf_counter()
    for k in range(2 * threads):
        replay(k)
    loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(replay, range(2 * threads)))
    return loop / (time.perf_counter() - t0)


def per_step(results) -> dict[str, float]:
    steps = {s: float(np.mean([r.timings.get(s, 0.0) for r in results])) for s in STEPS}
    return {s: v for s, v in steps.items() if v > 0}


def levers(store, fields: CheckpointFields, config: EvalConfig, object_id: str) -> None:
    """Each lever against what it replaced, on one object (the same inputs, values compared)."""
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    import inference.extract_mesh as extract
    from evaluation import metrics

    print(f"\nlevers, on {object_id} (one core):")
    for batch in (65536, 16384, 4096, 2048):
        f = replace(fields, batch_points=batch)
        f.predictor()
        p = predict_object(store, object_id, f, config)
        q = p.timings["queries"] + p.timings["iou_queries"]
        print(f"  decoder batch {batch:6d} points: queries {q:6.2f} s ({(p.n_queries + 100_000) / q / 1e3:.0f}k "
              f"points/s){'   <- was the default' if batch == 65536 else ''}"
              f"{'   <- now the default on a CPU' if batch == fields.batch_points else ''}")
    ref = store.load(object_id, ["ref_surface_points"])["ref_surface_points"]
    samples, _ = metrics.sample_mesh(p.vertices, p.faces, config.n_samples, config.seed)
    t0 = time.perf_counter()
    (d1, _), (d2, _) = cKDTree(ref).query(samples, workers=1), cKDTree(samples).query(ref, workers=1)
    before = time.perf_counter() - t0
    t0 = time.perf_counter()
    now = metrics.chamfer_l1(samples, ref, workers=1)
    after = time.perf_counter() - t0
    print(f"  nearest neighbours both ways (Chamfer-L1, normal consistency, F-score): plain cKDTree queries "
          f"(before) {before:.2f} s; sliding-midpoint trees, leaves of {metrics.LEAF_SIZE}, in leaf order (now) "
          f"{after:.2f} s ({before / after:.1f}x; "
          f"Chamfer-L1 identical: {now == 0.5 * (float(d1.mean()) + float(d2.mean()))})")

    grids = {}
    original = extract._marching_cubes
    extract._marching_cubes = lambda v, r, t: (grids.setdefault("values", v.copy()), original(v, r, t))[1]
    try:
        extract.extract_mesh(fields(_view(store, object_id, config)), config.resolution, config.coarse)
    finally:
        extract._marching_cubes = original
    values = grids["values"]
    t0 = time.perf_counter()
    v_full, f_full, _, _ = marching_cubes(np.pad(values, 1), level=0.5, gradient_direction="ascent",
                                          allow_degenerate=False)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_box, f_box = original(values, config.resolution, 0.5)
    box = time.perf_counter() - t0
    v_full = ((v_full - 1.0) * extract.grid_spacing(config.resolution) - extract.BOX_HALF).astype(np.float32)
    print(f"  marching cubes over the whole {config.resolution + 3}^3 grid (before): {full:.2f} s; over the box of "
          f"the surface (now): {box:.2f} s ({full / box:.1f}x; same faces: {np.array_equal(f_full, f_box)}, "
          f"vertices within {np.abs(v_full - v_box).max():.1e})")


# ---- the CPU rest of an object (everything but the network's queries), this tree against an earlier commit's ----
CPU_REST_BASELINE = "efc8e35"  # main before the CPU-rest levers of issue 24 (metrics, extract_mesh)
CPU_REST_FILES = ("evaluation/metrics.py", "inference/extract_mesh.py")


class _Replay:
    """A field that answers from a record of the network's answers, in order, whatever the batches; it keeps the
    points asked when `keep` (to compare two extractions' queries)."""

    def __init__(self, answers: np.ndarray, keep: bool = False):
        self.answers, self.at, self.asked = answers, 0, [] if keep else None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if self.asked is not None:
            self.asked.append(points.copy())
        start, self.at = self.at, self.at + len(points)
        return self.answers[start:self.at]


def _baseline_modules(baseline: str, tmp: str) -> tuple:
    """(metrics, extract_mesh) of `baseline`: a checkout folder, or a commit of this repository exported to tmp."""
    import importlib.util
    import subprocess

    root = Path(baseline)
    if not root.is_dir():
        repo = Path(__file__).resolve().parents[1]
        archive = subprocess.run(["git", "-C", str(repo), "archive", baseline, *CPU_REST_FILES], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        root = Path(tmp)
    modules = []
    for relative in CPU_REST_FILES:
        name = "baseline_" + Path(relative).stem
        spec = importlib.util.spec_from_file_location(name, root / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return tuple(modules)


def _cpu_rest(metrics, extract, answers, ref, cameras, config, keep=False) -> tuple[dict, object, dict, list]:
    """One object's CPU rest with these metrics and extract_mesh modules, the network replayed from `answers`:
    (seconds by step, the extraction, the surface scores, the points asked)."""
    from pipeline.cameras import silhouettes

    field = _Replay(answers, keep)
    t = {}
    mesh = extract.extract_mesh(field, config.resolution, config.coarse, extract.THRESHOLD, config.batch_size)
    t["grid"] = mesh.seconds - mesh.query_seconds - mesh.marching_seconds
    t["marching_cubes"] = mesh.marching_seconds
    scores = metrics.surface_scores(mesh.vertices, mesh.faces, ref["ref_surface_points"], ref["ref_surface_normals"],
                                    config.n_samples, config.tau, config.seed, workers=1, timings=t,
                                    tau_2=config.tau_2)
    t0 = time.perf_counter()
    silhouettes(mesh.vertices, mesh.faces, *cameras)
    t["silhouettes"] = time.perf_counter() - t0
    return t, mesh, scores, field.asked


def _same_scores(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def cpu_rest_levers(store, fields: CheckpointFields, config: EvalConfig, object_ids: list[str], baseline: str,
                    repeat: int = 5) -> None:
    """Everything an object costs besides the network's queries (grid bookkeeping, marching cubes, surface
    sampling, the KD-trees, ECD, silhouettes), `baseline`'s code and this tree's side by side in this process,
    alternating, on the network's recorded answers, as an eval worker runs (one core, its malloc thresholds):
    the best of `repeat` runs per step (the least disturbed by the machine's other work; the median's total is
    printed too), and whether the queries, the mesh and every score are the same."""
    from common.threads import keep_freed_memory, pin_library_threads
    from evaluation import metrics
    from evaluation.executors import EVAL_WORKER_MALLOC
    from evaluation.object_eval import _silhouette_views, read_view
    from inference import extract_mesh as extract

    pin_library_threads(1)
    keep_freed_memory(int(EVAL_WORKER_MALLOC["MALLOC_MMAP_THRESHOLD_"]))
    steps = ("grid", "marching_cubes", "sampling", "nearest", "ecd", "silhouettes")
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"before": _baseline_modules(baseline, tmp), "now": (metrics, extract)}
        print(f"\nthe CPU rest of an object (the network replayed from a record), {baseline} (before) against this "
              f"tree (now), one core, best of {repeat}; load average {os.getloadavg()[0]:.2f}")
        totals = {side: 0.0 for side in sides}
        for object_id in object_ids:
            view = read_view(store, object_id, config.view)
            field = fields(view)
            recorded = []
            extract.extract_mesh(lambda p, f=field, r=recorded: r.append(f(p)) or r[-1], config.resolution,
                                 config.coarse, extract.THRESHOLD, config.batch_size)
            answers = np.concatenate(recorded)
            ref = store.load(object_id, ["ref_surface_points", "ref_surface_normals"])
            K, Rt = store.read(object_id, "K"), store.read(object_id, "Rt")
            views = _silhouette_views(len(K), config.silhouette_views)
            cameras = (K[views], Rt[views], *view.image.shape[:2])
            runs = {side: [] for side in sides}
            first = {side: _cpu_rest(*modules, answers, ref, cameras, config, keep=True)
                     for side, modules in sides.items()}  # untimed: warms both, and gives what is compared
            for k in range(repeat):
                for side in (("before", "now") if k % 2 == 0 else ("now", "before")):
                    runs[side].append(_cpu_rest(*sides[side], answers, ref, cameras, config)[0])
            (_, mesh_b, scores_b, asked_b), (_, mesh_n, scores_n, asked_n) = first["before"], first["now"]
            same_queries = len(asked_b) > 0 and np.array_equal(np.concatenate(asked_b), np.concatenate(asked_n))
            same_mesh = np.array_equal(mesh_b.vertices, mesh_n.vertices) and np.array_equal(mesh_b.faces,
                                                                                              mesh_n.faces)
            print(f"  {object_id}: {mesh_n.n_queries:,} queries, {len(mesh_n.faces):,} faces; same queries in the "
                  f"same order: {same_queries}; same mesh: {same_mesh}; every score the same: "
                  f"{_same_scores(scores_b, scores_n)} (Chamfer-L1 {scores_n['chamfer_l1']:.6f})")
            print(f"    {'step':16s} {'before':>8s} {'now':>8s} {'gain':>6s}")
            for step in (*steps, "total"):
                each = {side: [sum(r[s] for s in steps) if step == "total" else r[step] for r in runs[side]]
                        for side in sides}
                best = {side: min(each[side]) for side in sides}
                print(f"    {step:16s} {best['before']:8.3f} {best['now']:8.3f} {best['before'] / best['now']:5.2f}x")
                if step == "total":
                    median = {side: float(np.median(each[side])) for side in sides}
                    print(f"    {'total (median)':16s} {median['before']:8.3f} {median['now']:8.3f} "
                          f"{median['before'] / median['now']:5.2f}x")
                    for side in sides:
                        totals[side] += best[side] / len(object_ids)
        print(f"  mean per object: {totals['before']:.3f} s before, {totals['now']:.3f} s now "
              f"({totals['before'] / totals['now']:.2f}x); load average after {os.getloadavg()[0]:.2f}")


def _view(store, object_id, config):
    from evaluation.object_eval import read_view

    return read_view(store, object_id, config.view)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/industrial-demo/last.ckpt")
    ap.add_argument("--data", default="data/industrial-demo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeat", type=int, default=4, help="evaluations of each object of the split per run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--coarse", type=int, default=32)
    ap.add_argument("--batch", type=int, default=CPU_BATCH, help="decoder points per call")
    ap.add_argument("--pictures", action="store_true", help="draw the pictures too (off: the goal's setting)")
    ap.add_argument("--levers", action="store_true", help="also measure each speed lever on one object")
    ap.add_argument("--cpu-rest", action="store_true",
                    help="only the CPU rest of each object (no throughput runs): --levers-baseline's and this tree's")
    ap.add_argument("--levers-baseline", default=CPU_REST_BASELINE,
                    help="the commit of this repository, or a checkout folder, whose CPU rest --levers and --cpu-rest "
                    "compare with this tree's")
    ap.add_argument("--gpu-points-per-s", type=float, default=20e6,
                    help="ASSUMED decoder points/s of one H200 for the projection (not measured here)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier commit: its `aps eval` and this tree's (fp32, bf16) side by side, "
                    "by step (benchmarks/eval_trees.py), instead of the throughput runs")
    ap.add_argument("--keep", type=Path, default=None, help="with --baseline: keep the eval folders here")
    args = ap.parse_args()
    if args.baseline:
        from eval_trees import compare

        compare(args.baseline, Path(args.checkpoint), Path(args.data), max(1, args.repeat // 2),
                ["--split", args.split, "--resolution", str(args.resolution), "--coarse", str(args.coarse)],
                args.keep)
        return

    import torch

    torch.set_num_threads(1)
    store = open_store(args.data)
    ids = store.split(args.split)
    config = EvalConfig(split=args.split, resolution=args.resolution, coarse=args.coarse, pictures=args.pictures)
    fields = CheckpointFields(args.checkpoint, threads=1, batch_points=args.batch)
    fields.predictor()
    if args.cpu_rest:
        cpu_rest_levers(store, fields, config, ids, args.levers_baseline)
        return
    print(f"checkpoint {args.checkpoint}, store {args.data}: {len(ids)} {args.split} objects x {args.repeat}; "
          f"{args.resolution}^3 coarse-to-fine from {args.coarse}^3; decoder batch {args.batch}; "
          f"pictures {'on' if args.pictures else 'off'}; "
          f"{os.cpu_count()} cores; load average before {os.getloadavg()[0]:.2f}")
    rates, walls, results_by_w = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            job = EvalJob(str(store.path), f"{tmp}/w{w}", config, fields)
            wall, results = throughput(job, ids * args.repeat, w)
            failed = [r for r in results if r.failed]
            rates[w], walls[w], results_by_w[w] = len(results) / wall, wall, results
            print(f"{w} worker(s): {len(results)} objects in {wall:.1f} s = {rates[w]:.3f} objects/s, "
                  f"{w * wall / len(results):.2f} core-s per object ({len(failed)} failed)")
    base = results_by_w[args.workers[0]]
    steps = per_step(base)
    queries = float(np.mean([r.row["n_queries"] for r in base]))
    print(f"\nseconds per object by step, each worker on one core ({queries:,.0f} extraction queries + 100,000 IoU "
          "queries per object on average):")
    print(f"  {'step':15s} " + " ".join(f"{f'{w} worker(s)':>12s}" for w in args.workers))
    by_w = {w: per_step(results_by_w[w]) for w in args.workers}
    for s in steps:
        print(f"  {s:15s} " + " ".join(f"{by_w[w].get(s, 0.0):12.3f}" for w in args.workers))
    work = sum(steps.values())
    print(f"  {'total':15s} " + " ".join(f"{sum(by_w[w].values()):12.3f}" for w in args.workers))
    print(f"  of which the network (encode, queries, iou_queries): {sum(steps.get(s, 0.0) for s in GPU_STEPS):.3f}")
    if 1 in rates and 2 in rates:
        # where the ratio goes: each object slower when both cores work (shared caches and memory, the host), and
        # the end of the run, when one worker has finished and the other has not
        work1, work2 = (sum(r.row["seconds"] for r in results_by_w[w]) for w in (1, 2))
        print(f"\nspeed-up 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (goal >= 1.8x); an object takes "
              f"{work2 / work1:.2f}x its 1-worker seconds on 2 busy cores, and the 2 workers were busy "
              f"{work2 / (2 * walls[2]):.0%} of the wall time")

    n = SHAPENET_13_TEST
    efficiency = rates[2] / rates[1] / 2 if 1 in rates and 2 in rates else 1.0
    cpu_node = 16 / work * efficiency
    print(f"\nprojection for {n:,} objects (this machine's per-core speed, {efficiency:.0%} per-worker efficiency "
          "as measured from 1 to 2 workers):")
    print(f"  16-core node, 16 CPU workers: {cpu_node:.2f} objects/s -> {n / cpu_node / 3600:.1f} h")
    client_cpu = sum(steps.get(s, 0.0) for s in CLIENT_CPU_STEPS if s != "read") + steps.get("read", 0.0) / 2
    gpu = (queries + 100_000) / args.gpu_points_per_s
    score = sum(steps.get(s, 0.0) for s in SCORE_STEPS if s != "read") + steps.get("read", 0.0) / 2
    threads = client_thread_speedup(store, fields, config, ids[-1])
    client_rate, worker_rate = threads / (client_cpu + gpu), 15 / score * efficiency
    rate = min(client_rate, worker_rate)
    print(f"  H200 + 16 cores (network='client': this process predicts, 15 workers score): the client "
          f"{client_cpu:.2f} s CPU (grid, marching cubes) + {gpu:.3f} s GPU per object (ASSUMED "
          f"{args.gpu_points_per_s / 1e6:.0f}M points/s), {threads:.2f}x in 2 threads (measured here; "
          f"{PREDICT_THREADS} run there) = {client_rate:.2f} objects/s; the workers {score:.2f} s per object "
          f"each = {worker_rate:.2f} objects/s -> {rate:.2f} objects/s, {n / rate / 3600:.1f} h "
          f"({'client' if client_rate < worker_rate else 'workers'}-bound)")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.levers:
        levers(store, fields, config, ids[0])
        cpu_rest_levers(store, fields, config, ids, args.levers_baseline)


if __name__ == "__main__":
    main()
