"""Preprocess throughput and storage, side by side in one run on the same files: `aps preprocess` with the
default LocalCluster, with 1 worker and serial, against a plain loop that does the same work the plainest way.

    python benchmarks/bench_preprocess.py [--manifest manifests/industrial-parts.toml | --meshes DIR]
    python benchmarks/bench_preprocess.py --cluster 1 2      # also on an existing cluster: `dask scheduler` plus
                                                             # `dask worker --nworkers N --nthreads 1`, N = 1, 2
    python benchmarks/bench_preprocess.py --repeat 3 --skip serial   # 3 interleaved rounds, ratios of medians
    python benchmarks/bench_preprocess.py --store data/industrial-parts     # bytes per object of a store only
    python benchmarks/bench_preprocess.py --manifest manifests/industrial-cad.toml --every 10   # every 10th object

Prints objects/s of each run (cluster start-up and the test split's reference data included), the ratios,
core-milliseconds per object by step and by split (CPU time of the processes doing the work, all their
threads), and kB stored per object by split. Figures come from one run each on this machine (noisy when
shared): compare the ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from common.cluster import default_workers  # noqa: E402
from pipeline import schema  # noqa: E402
from pipeline.manifest import Manifest, folder_manifest, load_manifest  # noqa: E402
from pipeline.runner import PreprocessSummary, run_preprocess  # noqa: E402

N_SURFACE, N_UNIFORM, N_REFERENCE, N_VIEWS, IMAGE_SIZE = 9872, 128, 100_000, 24, 137


def plain_loop(objects: list[tuple[str, str, str, str]], out: Path) -> tuple[int, float, float]:
    """The baseline: what a researcher writes in an afternoon, one file after the other, libraries at their
    defaults (libigl and open3d use every core they find). Same work per object as `aps preprocess`: trimesh
    load, unit-cube normalisation, 9872 jittered surface + 128 uniform points, libigl's exact distances and
    winding number, 24 open3d ray-cast views of 137 px, 100k surface + 100k uniform reference points with
    inside flags for test objects, one np.savez_compressed file. A catalogue part is built by the library call
    preprocess makes and tessellated with build123d's `tessellate` at its defaults (which meshes on every core).
    Returns (objects done, wall s, CPU s)."""
    import igl
    import open3d as o3d
    import trimesh

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start, cpu = time.perf_counter(), time.process_time()
    done = 0
    from pipeline.sources.catalogue import is_catalogue_source

    for object_id, path, extras, split in objects:
        try:
            if is_catalogue_source(path):
                v, f = plain_catalogue_part(extras)
            else:
                mesh = trimesh.load(path, force="mesh", process=False)
                v = np.asarray(mesh.vertices, np.float64)
                f = np.asarray(mesh.faces, np.int64)
            if len(f) == 0:
                continue
        except Exception:  # noqa: BLE001 - the plain loop skips what it cannot read, like aps fails it
            continue
        lo, hi = v[f].reshape(-1, 3).min(0), v[f].reshape(-1, 3).max(0)
        v = (v - (lo + hi) / 2) / (hi - lo).max()
        mesh = trimesh.Trimesh(v, f, process=False)
        surface, _ = trimesh.sample.sample_surface(mesh, N_SURFACE, seed=int(rng.integers(1 << 31)))
        sigma = rng.choice([0.005, 0.02], size=N_SURFACE)
        points = np.concatenate([surface + rng.standard_normal((N_SURFACE, 3)) * sigma[:, None],
                                 rng.uniform(-0.5, 0.5, (N_UNIFORM, 3))])
        udf = np.sqrt(igl.point_mesh_squared_distance(points, v, f)[0])
        inside = np.abs(igl.fast_winding_number(v, f, points)) >= 0.5
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
        focal = IMAGE_SIZE * 35 / 32
        K = o3d.core.Tensor([[focal, 0, IMAGE_SIZE / 2], [0, focal, IMAGE_SIZE / 2], [0, 0, 1]], o3d.core.float64)
        images = np.zeros((N_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 4), np.uint8)
        for k in range(N_VIEWS):
            az, el = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(25, 30))
            eye = 2.2 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
                K, o3d.core.Tensor(_look_at(eye)), IMAGE_SIZE, IMAGE_SIZE)
            hit = scene.cast_rays(rays)
            normals = hit["primitive_normals"].numpy()
            mask = np.isfinite(hit["t_hit"].numpy())
            shade = 0.3 + 0.7 * np.abs((normals * rays.numpy()[..., 3:]).sum(-1))
            images[k, ..., :3] = (np.clip(shade, 0, 1) * 200 * mask)[..., None].astype(np.uint8)
            images[k, ..., 3] = mask * 255
        arrays = {"points": points.astype(np.float32), "udf": udf.astype(np.float32), "inside": inside,
                  "images": images}
        if split == "test":
            ref_surface, _ = trimesh.sample.sample_surface(mesh, N_REFERENCE, seed=int(rng.integers(1 << 31)))
            ref_uniform = rng.uniform(-0.55, 0.55, (N_REFERENCE, 3))  # the padded reference box
            arrays.update(ref_surface=ref_surface.astype(np.float32), ref_uniform=ref_uniform.astype(np.float32),
                          ref_inside=np.abs(igl.fast_winding_number(v, f, ref_uniform)) >= 0.5)
        np.savez_compressed(out / f"{object_id}.npz", **arrays)
        done += 1
    return done, time.perf_counter() - start, time.process_time() - cpu


@dataclasses.dataclass
class SubsetManifest(Manifest):
    """A manifest's objects restricted to `keep` (ids), every one with the split it had."""

    keep: frozenset[str] = frozenset()

    def _listing(self):
        objects, refused = super()._listing()
        return [o for o in objects if o[0].object_id in self.keep], [r for r in refused if r[0].object_id in self.keep]


def every_kth(manifest: Manifest, k: int) -> Manifest:
    """Every k-th object of each category (in id order), keeping their splits (a 'lists' split naming them)."""
    by_category: dict[str, list] = {}
    for spec, split in sorted(manifest.objects(), key=lambda o: o[0].object_id):
        by_category.setdefault(spec.category, []).append((spec, split))
    kept = [o for members in by_category.values() for o in members[::k]]
    fields = {f.name: getattr(manifest, f.name) for f in dataclasses.fields(manifest) if f.init}
    fields["split"] = {"method": "lists", **{name: [spec.object_id for spec, split in kept if split == name]
                                             for name in ("val", "test")}}
    return SubsetManifest(**fields, keep=frozenset(spec.object_id for spec, _ in kept))


def plain_catalogue_part(extras: str) -> tuple[np.ndarray, np.ndarray]:
    """A catalogue part as a plain script makes it: the library builds it, build123d tessellates it at 1/1000 of
    its longest side, trimesh welds the faces."""
    import json

    import trimesh

    from pipeline.sources.catalogue import build_part

    call = json.loads(extras)["catalogue"]
    part = build_part(call["class"], call["args"])
    size = part.bounding_box().size
    points, triangles = part.tessellate(1e-3 * max(size.X, size.Y, size.Z), np.radians(12.0))
    mesh = trimesh.Trimesh(np.array([tuple(p) for p in points]), np.array(triangles))  # process=True welds
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def _look_at(eye: np.ndarray) -> np.ndarray:
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z])
    T[:3, 3] = -T[:3, :3] @ eye
    return T


def timed_run(manifest: Manifest, store: Path, **kw) -> tuple[PreprocessSummary, float]:
    start = time.perf_counter()
    summary = run_preprocess(manifest, store, **kw)
    return summary, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_existing_cluster(manifest: Manifest, store: Path, n_workers: int) -> tuple[PreprocessSummary, float, float]:
    """Start `dask scheduler` and `dask worker --nworkers N --nthreads 1` as a user would, run on it; returns the
    summary, the wall seconds of the run (workers already up, as on a real cluster) and their start-up."""
    from dask.distributed import Client

    dask_cli = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        start = time.perf_counter()
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", str(n_workers), "--nthreads", "1",
                                       "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        for _ in range(100):  # the scheduler takes a moment to listen
            try:
                with Client(address, timeout=2) as client:
                    client.wait_for_workers(n_workers, timeout=60)
                break
            except OSError:
                time.sleep(0.2)
        up = time.perf_counter() - start
        summary, wall = timed_run(manifest, store, scheduler=address)
        return summary, wall, up
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="manifests/industrial-parts.toml")
    ap.add_argument("--meshes", help="a plain folder of meshes (one subfolder per category) instead of a manifest")
    ap.add_argument("--cluster", type=int, nargs="*", default=[], help="also run on an existing cluster with "
                    "these numbers of `dask worker` processes")
    ap.add_argument("--skip", nargs="*", default=[], choices=["serial", "one", "baseline"])
    ap.add_argument("--store", help="only report the bytes per object of this existing store")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the runs, interleaved; ratios of the medians")
    ap.add_argument("--every", type=int, default=1, help="only every k-th object of each category (k = 10: a tenth "
                    "of a large dataset, its categories and splits in proportion)")
    args = ap.parse_args()
    if args.store:
        report_storage(Path(args.store))
        return
    manifest = folder_manifest(args.meshes) if args.meshes else load_manifest(args.manifest)
    if args.every > 1:
        manifest = every_kth(manifest, args.every)
    objects = [(spec.object_id, spec.source, spec.extras, split) for spec, split in manifest.objects()]
    load = os.getloadavg()[0]
    print(f"dataset {manifest.name}: {len(objects)} objects ({sum(s == 'test' for *_, s in objects)} test), "
          f"{os.cpu_count()} cores, load average {load:.2f} before the runs")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [("default", {"scheduler": "local"})]
        if "one" not in args.skip:
            runs.append(("1 worker", {"scheduler": "local", "workers": 1}))
        if "serial" not in args.skip:
            runs.append(("serial", {"scheduler": "serial"}))
        default_summary = None
        work: list[tuple[str, str, float, PreprocessSummary, int]] = []  # name, round tag, wall, summary, workers
        samples: dict[str, list[float]] = {}
        for round_ in range(args.repeat):  # interleaved, so a slow spell of a shared machine hits every run alike
            tag = f" (round {round_ + 1})" if args.repeat > 1 else ""
            for name, kw in runs:
                store = tmp / f"store-{name.replace(' ', '-')}"
                summary, wall = timed_run(manifest, store, **kw)
                samples.setdefault(name, []).append(summary.done / wall)
                n_workers = 1 if kw["scheduler"] == "serial" else kw.get("workers") or default_workers()
                work.append((name, tag, wall, summary, n_workers))
                print(f"aps {name:9s}: {summary.done} objects in {wall:5.1f} s = {samples[name][-1]:5.2f} objects/s "
                      f"({len(summary.failed)} failed){tag}")
                if default_summary is None:
                    default_summary = summary
                    report_storage(store)
                shutil.rmtree(store)
            if "baseline" not in args.skip:
                done, wall, cpu = plain_loop(objects, tmp / "plain")
                samples.setdefault("plain loop", []).append(done / wall)
                print(f"plain loop   : {done} objects in {wall:5.1f} s = {samples['plain loop'][-1]:5.2f} objects/s, "
                      f"{1000 * cpu / max(done, 1):.0f} core-ms an object{tag}")
                shutil.rmtree(tmp / "plain", ignore_errors=True)
        rates.update({name: float(np.median(values)) for name, values in samples.items()})
        if args.repeat > 1:
            print("medians over the rounds: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()) + " objects/s")
        for n in args.cluster:
            summary, wall, up = on_existing_cluster(manifest, tmp / f"cluster-{n}", n)
            rates[f"cluster {n}"] = summary.done / wall
            print(f"existing cluster, {n} `dask worker` process(es): {summary.done} objects in {wall:5.1f} s = "
                  f"{rates[f'cluster {n}']:5.2f} objects/s (workers took {up:.1f} s to start, not counted)")
            shutil.rmtree(tmp / f"cluster-{n}", ignore_errors=True)
    print("\nper run: core-ms an object (the objects' own steps), and the seconds of the run not covered by them on "
          "its workers (start-up, imports, shutdown, the last shard's tail):")
    for name, tag, wall, summary, n_workers in work:
        cpu = sum(summary.step_cpu.values())
        cost = cpu / max(summary.done, 1)
        if name == "serial":  # its libraries use every core: no per-worker share to subtract
            print(f"  {name:9s}: {1000 * cost:4.0f} core-ms (libraries multi-threaded), {wall:.1f} s{tag}")
            continue
        print(f"  {name:9s}: {1000 * cost:4.0f} core-ms, {n_workers} worker(s), outside the objects "
              f"{wall - cpu / n_workers:4.1f} s of {wall:.1f}{tag}")
    print("\nratios:")
    for a, b in (("default", "plain loop"), ("default", "1 worker"), ("serial", "plain loop"),
                 ("cluster 2", "cluster 1")):
        if a in rates and b in rates:
            print(f"  {a} / {b}: {rates[a] / rates[b]:.2f}x")
    if default_summary is not None:
        report_costs(default_summary)


def report_costs(summary: PreprocessSummary) -> None:
    n = max(summary.done, 1)
    total = sum(summary.step_cpu.values())
    print(f"\ncore-ms per object, default run (CPU time of the workers, all their threads): {1000 * total / n:.0f}")
    print("  by step: " + ", ".join(f"{step} {1000 * sec / n:.0f}" for step, sec in
                                    sorted(summary.step_cpu.items(), key=lambda kv: -kv[1])))
    print("  by split: " + ", ".join(f"{split} {1000 * sec / max(count, 1):.0f} ({count} objects)"
                                     for split, (count, sec) in sorted(summary.split_cpu.items())))


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def report_storage(store_path: Path) -> None:
    store = schema.open_store(store_path)
    per_split: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for shard, oids in store.shards().items():
        split = store.info(oids[0])["split"]
        counts[split] = counts.get(split, 0) + len(oids)
        for arr in (store_path / schema.SHARDS_DIR / shard).iterdir():
            if arr.is_dir():
                per_split.setdefault(split, {})
                per_split[split][arr.name] = per_split[split].get(arr.name, 0) + dir_bytes(arr)
    print("  kB stored per object (compressed, on disk):")
    for split, arrays in sorted(per_split.items()):
        n = counts[split]
        train_part = sum(v for k, v in arrays.items() if k in schema.TRAINING_ARRAYS and k != "images")
        ref_part = sum(v for k, v in arrays.items() if k.startswith("ref_"))
        images = arrays.get("images", 0)
        print(f"    {split:5s} ({n:3d} objects): points+udf+inside+camera {train_part / n / 1e3:6.1f} kB, "
              f"images {images / n / 1e3:6.1f} kB, total {(train_part + images) / n / 1e3:6.1f} kB"
              + (f", + evaluation reference {ref_part / n / 1e3:7.1f} kB" if ref_part else ""))
        detail = ", ".join(f"{k} {v / n / 1e3:.1f}" for k, v in sorted(arrays.items()) if not k.startswith("ref_"))
        print(f"      by array (kB): {detail}")


if __name__ == "__main__":
    main()
