"""The paper's ablation (Table 2), the fixed-s sweep (Fig. 6) and the training-speed claim, as real runs.

Why a separate orchestrator: every number must come from the same code a user runs, so this module trains
and evaluates only through the public commands (`aps preprocess`, `aps train`, `aps eval`, started as
subprocesses with argument lists) and then reads what they wrote (the runs' metrics.csv, the evals'
metrics.csv and meshes). It holds no training or evaluation code of its own; it only decides which runs to
make, skips the ones already finished (so an interrupted ablation resumes), and aggregates:

- table2.md|csv: one row per variant, each metric as mean ± sample std over seeds, where one seed's value is
  the mean over the test objects (as `aps eval --compare`); table2_runs.md|csv: one row per (variant, seed).
- learning_curves.png: validation IoU against epoch, one line per variant (mean over seeds, seeds faint),
  and s against epoch for the label modes that have one.
- speed.md|csv: epochs (and training seconds) for fpn+binary and fpn+adaptive to first reach 95% of
  fpn+binary's final validation IoU, per seed.
- sweep.md|csv and sweep.png: fpn with s fixed at each sweep value (paper Fig. 6), metrics and pictures of
  the same test objects from the same view.

Run: `python -m evaluation.ablation --manifest manifests/industrial-parts.toml --data data/industrial-parts
--out reports/ablation [--full]` (`make ablation`). docs/RESULTS.md has the measured results.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import typer

from common.atomic import atomic_write, atomic_write_text
from evaluation.metrics import METRIC_NAMES
from evaluation.report import compare_table, label, load_runs, markdown, read_metrics_csv, write_table

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the repository root: `python -m aps` runs from here


@dataclass(frozen=True)
class Variant:
    """One training variant of the ablation: its name in the tables and its `aps train` options."""

    name: str
    train_args: tuple[str, ...]

    @property
    def slug(self) -> str:
        """Folder name: the variant name with only letters, digits, '.', '-' (fpn+fixed(s=0.5) -> fpn-fixed-s0.5)."""
        out = self.name.replace("+", "-").replace("(s=", "-s").replace(")", "")
        return "".join(c for c in out if c.isalnum() or c in ".-")


def fixed(s: float) -> Variant:
    """fpn with the label v(d, s) at a constant s (paper Table 2's v(d, 0.5) and Fig. 6's sweep)."""
    return Variant(f"fpn+fixed(s={s:g})", ("--extractor", "fpn", "--labels", "fixed", "--s-fixed", f"{s:g}"))


# The paper's Table 2 columns plus the multilevel extractor (the 4 ResNet maps without the FPN).
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("global+binary", ("--extractor", "global", "--labels", "binary")),
    Variant("multilevel+binary", ("--extractor", "multilevel", "--labels", "binary")),
    Variant("fpn+binary", ("--extractor", "fpn", "--labels", "binary")),
    fixed(0.5),
    Variant("fpn+adaptive", ("--extractor", "fpn", "--labels", "adaptive")),
)}
SPEED_BASE, SPEED_TEST = "fpn+binary", "fpn+adaptive"  # the training-speed claim compares these two
SPEED_FRACTION = 0.95


@dataclass
class Plan:
    """Everything that decides the ablation's numbers; saved as OUT/plan.json and checked on a rerun."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1)
    sweep: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed s values; trained with the first seed
    train_preset: str = "cpu-demo"
    epochs: int = 10
    train_set: tuple[str, ...] = ("data.repeats=4",)  # `--set` assignments for every training run
    device: str = "cpu"
    threads: int = 2
    eval_resolution: int = 64
    eval_coarse: int = 16
    eval_limit: int | None = 16  # first N test objects (split order); None: every test object
    eval_view: int = 0
    silhouette_views: int = 4
    sweep_objects: int = 5  # test objects (the first of the split) pictured in sweep.png
    sweep_limit: int | None = 5  # test objects evaluated per sweep run (None: all)

    def runs(self) -> list[tuple[Variant, int]]:
        """(variant, seed) pairs in the order they run, most telling first, so that a cut-short ablation
        (it resumes where it stopped) has the most to show: every variant at the first seed (one complete
        Table 2), the training-speed pair (fpn+binary, fpn+adaptive) at the other seeds, the fixed-s sweep at
        the first seed, then the other variants at the other seeds."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
        first, *rest = self.seeds
        order = [(VARIANTS[v], first) for v in self.variants]
        order += [(VARIANTS[v], seed) for seed in rest for v in (SPEED_BASE, SPEED_TEST) if v in self.variants]
        order += [(fixed(s), first) for s in self.sweep]
        order += [(VARIANTS[v], seed) for seed in rest for v in self.variants]
        unique: list[tuple[Variant, int]] = []
        for item in order:
            if item not in unique:
                unique.append(item)
        return unique


CPU_PLAN = Plan()
# The paper's settings (Section 5.2): its preset (ResNet-18 + FPN at 224 px, batches of 32 x 2048 points, Adam
# 1e-4, 50 epochs, s reconsidered every 10), each object seen once per view and epoch (24 repeats), 3 seeds,
# meshes at 256^3. Sized for one GPU, not for this CPU.
FULL_PLAN = Plan(seeds=(0, 1, 2), train_preset="paper", epochs=50, train_set=("data.repeats=24",),
                 device="auto", threads=8, eval_resolution=256, eval_coarse=32, eval_limit=None,
                 silhouette_views=8, sweep_limit=None)


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Layout:
    """Where everything of one ablation lives under OUT."""

    out: Path

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / "runs" / variant.slug / f"seed{seed}"

    def eval_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / "eval" / variant.slug / f"seed{seed}"

    def log_file(self, variant: Variant, seed: int, step: str) -> Path:
        return self.out / "logs" / f"{variant.slug}-seed{seed}-{step}.log"


def _aps(args: Sequence[str], log_path: Path, threads: int) -> int:
    """Run `python -m aps ARGS` from the repository root with its output in log_path -> exit status."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "aps", *args]
    with log_path.open("a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        return subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                              check=False).returncode


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.exists() else []
    return lines[-1].strip() if lines else "(no output)"


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """A run's metrics.csv (one row per epoch) with numbers as floats ('' -> nan, e.g. s of binary)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def ensure_store(data: Path, manifest: Path | None, threads: int, log_dir: Path) -> None:
    """Preprocess the dataset unless data/index.json exists.

    `aps preprocess` exits 1 when some objects fail (robosuite ships 2 empty STL files); the store is still
    complete with the other objects, which `open_store` checks, so that exit status is only logged.
    """
    from pipeline.schema import open_store

    if (data / "index.json").is_file():
        return
    if manifest is None:
        raise FileNotFoundError(f"{data}: no preprocessed store here (index.json missing); pass --manifest "
                                "to preprocess it first")
    log_path = log_dir / "preprocess.log"
    log.info("preprocessing %s -> %s (log: %s)", manifest, data, log_path)
    rc = _aps(["preprocess", "--manifest", str(manifest), "--out", str(data)], log_path, threads)
    store = open_store(data)  # raises with the reason when the store is incomplete
    if rc != 0:
        log.warning("aps preprocess exited %d (%s); the store is complete with %d objects", rc,
                    _last_line(log_path), len(store.object_ids))


def train_run(plan: Plan, data: Path, layout: Layout, variant: Variant, seed: int) -> None:
    """Train one (variant, seed) with `aps train`, resuming a cut-short run and skipping a finished one."""
    run_dir = layout.run_dir(variant, seed)
    if len(read_curve(run_dir)) >= plan.epochs:
        return
    args = ["train", "--data", str(data), "--out", str(run_dir), "--preset", plan.train_preset,
            "--epochs", str(plan.epochs), "--seed", str(seed), "--device", plan.device, "--quiet",
            *variant.train_args, "--set", f"threads={plan.threads}"]
    for assignment in plan.train_set:
        args += ["--set", assignment]
    if (run_dir / "last.ckpt").is_file():
        args.append("--resume")
    log_path = layout.log_file(variant, seed, "train")
    t0 = time.monotonic()
    rc = _aps(args, log_path, plan.threads)
    if rc != 0:
        raise RuntimeError(f"aps train of {variant.name} seed {seed} exited {rc}: {_last_line(log_path)} "
                           f"(log: {log_path})")
    log.info("trained %s seed %d in %.0f s: %s", variant.name, seed, time.monotonic() - t0, _last_line(log_path))


def eval_run(plan: Plan, data: Path, layout: Layout, variant: Variant, seed: int, limit: int | None) -> None:
    """Evaluate one trained run's last.ckpt on the test split with `aps eval` (skipped when eval.json exists).

    last.ckpt, not best.ckpt: every variant is compared after the same fixed budget (best.ckpt is chosen by
    validation F1, which the soft labels of fixed/adaptive shift, so it would not be a like-for-like pick).
    """
    out = layout.eval_dir(variant, seed)
    if (out / "eval.json").is_file():
        return
    args = ["eval", "--checkpoint", str(layout.run_dir(variant, seed) / "last.ckpt"), "--data", str(data),
            "--out", str(out), "--split", "test", "--view", str(plan.eval_view),
            "--resolution", str(plan.eval_resolution), "--coarse", str(plan.eval_coarse),
            "--silhouette-views", str(plan.silhouette_views), "--threads", str(plan.threads),
            "--device", "cuda" if plan.device.startswith("cuda") else "cpu"]
    if plan.device == "auto":
        import torch

        args[-1] = "cuda" if torch.cuda.is_available() else "cpu"
    if limit is not None:
        args += ["--limit", str(limit)]
    log_path = layout.log_file(variant, seed, "eval")
    t0 = time.monotonic()
    rc = _aps(args, log_path, plan.threads)
    if not (out / "eval.json").is_file():
        raise RuntimeError(f"aps eval of {variant.name} seed {seed} exited {rc} without finishing: "
                           f"{_last_line(log_path)} (log: {log_path})")
    if rc != 0:  # some objects failed: they are scored with the worst values, as docs/METRICS.md says
        log.warning("aps eval of %s seed %d exited %d: %s", variant.name, seed, rc, _last_line(log_path))
    log.info("evaluated %s seed %d in %.0f s", variant.name, seed, time.monotonic() - t0)


def _plan_dict(plan: Plan) -> dict:
    return json.loads(json.dumps(asdict(plan)))


def check_plan(plan: Plan, out: Path, data: Path) -> None:
    """Refuse to mix runs of another plan into OUT (a finished run is reused, so it must be the same)."""
    wanted = {"data": str(data.resolve()), "plan": _plan_dict(plan)}
    path = out / "plan.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        old, new = saved.get("plan", {}), wanted["plan"]
        # which runs to make, and how many threads make them, may change; what a run is may not
        free = ("variants", "seeds", "sweep", "threads")
        same_runs = {k: v for k, v in old.items() if k not in free} == {k: v for k, v in new.items() if k not in free}
        if saved.get("data") != wanted["data"] or not same_runs:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["data"]
            raise ValueError(f"{out}: holds an ablation with other settings ({', '.join(diff)}); use another "
                             "--out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=1))


def run_ablation(plan: Plan, data: Path, out: Path, manifest: Path | None = None) -> dict:
    """Make every run of the plan that is not finished yet, then write the tables and plots -> summary.

    A failing run is logged and skipped (its error is in summary['failed']); the tables are rewritten after
    every run, so an ablation that is stopped keeps tables of what finished.
    """
    data, out = Path(data).resolve(), Path(out).resolve()
    layout = Layout(out)
    ensure_store(data, manifest, plan.threads, out / "logs")
    check_plan(plan, out, data)
    failed: dict[str, str] = {}
    runs = plan.runs()
    started = time.monotonic()
    for i, (variant, seed) in enumerate(runs, 1):
        in_sweep = variant.name not in plan.variants
        log.info("[%d/%d] %s seed %d", i, len(runs), variant.name, seed)
        try:
            train_run(plan, data, layout, variant, seed)
            eval_run(plan, data, layout, variant, seed, plan.sweep_limit if in_sweep else plan.eval_limit)
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            log.error("%s", exc)
            failed[f"{variant.name} seed {seed}"] = str(exc)
        write_reports(plan, data, out)
    summary = write_reports(plan, data, out)
    summary["failed"] = failed
    summary["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


# -------------------------------------------------------------------------------------------- reporting


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, float | int) and not math.isnan(float(v))]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value); NaNs left out; (nan, nan) if none."""
    values = _finite(values)
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def object_mean(rows: Sequence[dict], metric: str) -> float:
    """Mean of a metric over an eval's objects (NaN values, e.g. ECD of an edge-free part, left out)."""
    values = _finite(r.get(metric) for r in rows)
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _eval_rows(layout: Layout, variant: Variant, seed: int, limit: int | None) -> list[dict] | None:
    """An eval's metrics.csv rows (the first `limit` objects, split order), or None when it has not finished."""
    if not (layout.eval_dir(variant, seed) / "eval.json").is_file():
        return None
    return read_metrics_csv(layout.eval_dir(variant, seed) / "metrics.csv")[:limit]


def _variant(name: str) -> Variant:
    return VARIANTS.get(name) or fixed(float(name.split("s=")[1].rstrip(")")))


def variant_table(layout: Layout, names: Sequence[str], seeds: Sequence[int],
                  limit: int | None = None) -> list[list[str]]:
    """Table 2 shape: variant x metric, 'mean ± std' over the seeds whose eval finished, plus how many
    (object, seed) pairs got no surface (scored with the worst values, docs/METRICS.md "Failures")."""
    table = [["variant", *[label(m) for m in METRIC_NAMES], "no surface", "seeds", "test objects"]]
    for name in names:
        per_seed = [r for s in seeds if (r := _eval_rows(layout, _variant(name), s, limit)) is not None]
        if not per_seed:
            table.append([name, *["not run"] * len(METRIC_NAMES), "", "0", "0"])
            continue
        cells = []
        for metric in METRIC_NAMES:
            mean, std = mean_std([object_mean(rows, metric) for rows in per_seed])
            cells.append(f"{_fmt(mean)} ± {_fmt(std)}" if len(per_seed) > 1 else _fmt(mean))
        # objects (summed over seeds) whose mesh is empty and so scored with the worst surface values
        no_surface = sum(str(r.get("status", "ok")) != "ok" for rows in per_seed for r in rows)
        table.append([name, *cells, str(no_surface), str(len(per_seed)),
                      "/".join(sorted({str(len(r)) for r in per_seed}))])
    return table


def failure_table(layout: Layout, names: Sequence[str], seeds: Sequence[int],
                  limit: int | None = None) -> list[list[str]]:
    """What drives the means of table2, pooled over the seeds' (object, seed) pairs: empty meshes (scored √3,
    0), meshes without a single edge point where the reference has edges (ECD = √3, docs/METRICS.md), and the
    medians of IoU and Chamfer-L1, which such worst values do not move."""
    import statistics

    table = [["variant", "(object, seed) pairs", "no surface", "ECD = √3: no predicted edge",
              "median IoU", "median Chamfer-L1"]]
    for name in names:
        rows = [r for s in seeds for r in _eval_rows(layout, _variant(name), s, limit) or []]
        if not rows:
            continue
        ok = [r for r in rows if str(r.get("status", "ok")) == "ok"]
        no_edge = sum(float(r.get("n_edge_pred") or 0) == 0 and float(r.get("n_edge_ref") or 0) > 0 for r in ok)
        table.append([name, str(len(rows)), str(len(rows) - len(ok)), str(no_edge),
                      _fmt(statistics.median(_finite(r.get("iou") for r in rows))),
                      _fmt(statistics.median(_finite(r.get("chamfer_l1") for r in rows)))])
    return table


def epochs_to_reach(curve: Sequence[dict[str, float]], target: float) -> tuple[int, float] | None:
    """First epoch whose val_iou >= target and the training seconds up to it (validation time excluded)."""
    seconds = 0.0
    for row in curve:
        seconds += row["seconds"]
        if row["val_iou"] >= target:
            return int(row["epoch"]), seconds
    return None


def speed_rows(layout: Layout, seeds: Sequence[int], reference: float = math.nan) -> list[dict[str, object]]:
    """Per seed: fpn+binary's final val IoU, the 95% target, and when each of the two variants reached it;
    `reference` (the all-inside val IoU) is carried along so the target can be judged against it."""
    rows = []
    for seed in seeds:
        base = read_curve(layout.run_dir(VARIANTS[SPEED_BASE], seed))
        test = read_curve(layout.run_dir(VARIANTS[SPEED_TEST], seed))
        if not base or not test:
            continue
        final = base[-1]["val_iou"]
        target = SPEED_FRACTION * final
        row: dict[str, object] = {"seed": seed, "epochs": len(base), "binary_final_val_iou": final,
                                  "adaptive_final_val_iou": test[-1]["val_iou"], "target_val_iou": target,
                                  "all_inside_val_iou": reference}
        for key, curve in (("binary", base), ("adaptive", test)):
            hit = epochs_to_reach(curve, target)
            row[f"{key}_epochs"] = hit[0] if hit else None
            row[f"{key}_seconds"] = round(hit[1], 1) if hit else None
            row[f"{key}_seconds_per_epoch"] = round(sum(r["seconds"] for r in curve) / len(curve), 2)
        rows.append(row)
    return rows


def speed_markdown(rows: Sequence[dict[str, object]]) -> str:
    def reached(row, key):
        if row[f"{key}_epochs"] is None:
            return f"not reached in {row['epochs']}"
        return f"{row[f'{key}_epochs']} ({row[f'{key}_seconds']:.0f} s)"

    table = [["seed", "fpn+binary final val IoU", f"target ({SPEED_FRACTION:.0%})", "fpn+binary: epochs (s)",
              "fpn+adaptive: epochs (s)", "fpn+adaptive final val IoU", "every point inside"]]
    for r in rows:
        table.append([str(r["seed"]), _fmt(r["binary_final_val_iou"]), _fmt(r["target_val_iou"]),
                      reached(r, "binary"), reached(r, "adaptive"), _fmt(r["adaptive_final_val_iou"]),
                      _fmt(r["all_inside_val_iou"])])
    return markdown(table)


def all_inside_val_iou(data: Path, split: str = "val", on: str = "stored") -> float:
    """The validation IoU of a network that calls every point inside: the inside fraction of the split's stored
    points (tp = inside, fp = outside, fn = 0), over all 10,000 points of each object (training validates on
    a fixed subset of them, so its value differs slightly). The stored points lie near the surface and about
    half are inside, so this trivial answer scores high; curves must be read against it. nan: no such split.
    on = "uniform" (training with data.val_on = uniform): over the uniform points only.
    """
    import numpy as np

    from pipeline.schema import N_UNIFORM, open_store

    store = open_store(data)
    n_uniform = int(store.params.get("n_uniform", N_UNIFORM))
    inside = [store.read(o, "inside")[-n_uniform:] if on == "uniform" else store.read(o, "inside")
              for o in store.split(split)]
    return float(np.concatenate(inside).mean()) if inside else math.nan


def plot_curves(layout: Layout, names: Sequence[str], seeds: Sequence[int], path: Path,
                reference: float = math.nan) -> bool:
    """learning_curves.png: val IoU (and s) against epoch, one colour per variant, with the all-inside IoU as a
    dashed reference line when given; False if no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: [c for s in seeds if (c := read_curve(layout.run_dir(VARIANTS[name], s)))] for name in names}
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
    from pipeline.schema import open_store

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


def _write_csv(rows: Sequence[dict[str, object]], path: Path) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_reports(plan: Plan, data: Path, out: Path) -> dict:
    """Write table2, table2_runs, learning_curves.png, speed, sweep from whatever has finished -> summary."""
    layout = Layout(out)
    summary: dict[str, object] = {"plan": _plan_dict(plan), "data": str(data)}
    write_table(variant_table(layout, plan.variants, plan.seeds), out / "table2")
    write_table(failure_table(layout, plan.variants, plan.seeds), out / "table2_failures")
    finished = [(f"{name} seed {s}", layout.eval_dir(VARIANTS[name], s)) for name in plan.variants
                for s in plan.seeds if (layout.eval_dir(VARIANTS[name], s) / "eval.json").is_file()]
    if finished:
        runs = load_runs([p for _, p in finished])
        write_table(compare_table([(n, rows) for (n, _), (_, rows) in zip(finished, runs, strict=True)]),
                    out / "table2_runs")
    summary["table2_runs"] = [n for n, _ in finished]
    from trainer.config import override, preset

    val_on = override(preset(plan.train_preset), list(plan.train_set)).data.val_on  # what `aps train` trained with
    reference = all_inside_val_iou(data, on=val_on)
    summary["all_inside_val_iou"] = reference
    summary["learning_curves"] = plot_curves(layout, plan.variants, plan.seeds, out / "learning_curves.png",
                                             reference)
    speed = speed_rows(layout, plan.seeds, reference) if {SPEED_BASE, SPEED_TEST} <= set(plan.variants) else []
    _write_csv(speed, out / "speed.csv")
    atomic_write_text(out / "speed.md", speed_markdown(speed))
    summary["speed"] = speed
    if plan.sweep:
        names = [fixed(s).name for s in plan.sweep]
        # the same objects for every s (the s=0.5 run of the variants was evaluated on more)
        write_table(variant_table(layout, names, plan.seeds[:1], plan.sweep_limit), out / "sweep")
        write_table(failure_table(layout, names, plan.seeds[:1], plan.sweep_limit), out / "sweep_failures")
        summary["sweep_objects"] = sweep_picture(plan, data, layout, out / "sweep.png")
    return summary


# ---------------------------------------------------------------------------------------------------- CLI


def main(
    data: Path = typer.Option(Path("data/industrial-parts"), "--data", help="preprocessed store"),
    out: Path = typer.Option(Path("reports/ablation"), "--out", help="output folder (runs, evals, tables, plots)"),
    manifest: Path = typer.Option(None, "--manifest", help="preprocess this manifest into --data if it is missing"),
    full: bool = typer.Option(False, "--full", help="the paper's settings (GPU): paper preset, 50 epochs, "
                                                    "24 repeats, 3 seeds, meshes at 256^3"),
    variants: list[str] = typer.Option([], "--variant", help="only these variants (repeatable); default: all"),
    seeds: list[int] = typer.Option([], "--seed", help="seeds (repeatable); default: the plan's"),
    sweep: list[float] = typer.Option([], "--sweep-s", help="fixed-s sweep values (repeatable); default: plan's"),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="skip the fixed-s sweep"),
    epochs: int = typer.Option(None, "--epochs", help="epochs per run (default: the plan's)"),
    preset: str = typer.Option(None, "--preset", help="`aps train` preset (default: cpu-demo, --full: paper)"),
    set_: list[str] = typer.Option([], "--set", help="`aps train --set` for every run, replacing the plan's"),
    resolution: int = typer.Option(None, "--resolution", help="eval grid cells per axis"),
    coarse: int = typer.Option(None, "--coarse", help="eval coarse grid (0: dense)"),
    limit: int = typer.Option(None, "--limit", help="evaluate only the first N test objects (0: all)"),
    sweep_limit: int = typer.Option(None, "--sweep-limit", help="the same for the sweep runs (0: all)"),
    silhouette_views: int = typer.Option(None, "--silhouette-views", help="views of the silhouette IoU"),
    sweep_objects: int = typer.Option(None, "--sweep-objects", help="test objects pictured in sweep.png"),
    device: str = typer.Option(None, "--device", help="training device (cpu plan: cpu, --full: auto)"),
    threads: int = typer.Option(None, "--threads", help="torch threads per run"),
) -> None:
    """The paper's ablation (Table 2), fixed-s sweep (Fig. 6) and training-speed claim; see docs/RESULTS.md."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = FULL_PLAN if full else CPU_PLAN
    changes = {"variants": tuple(variants) or None, "seeds": tuple(seeds) or None, "epochs": epochs,
               "sweep": () if no_sweep else (tuple(sweep) or None), "train_preset": preset,
               "train_set": tuple(set_) or None, "eval_resolution": resolution, "eval_coarse": coarse,
               "eval_limit": limit, "silhouette_views": silhouette_views, "sweep_objects": sweep_objects,
               "sweep_limit": sweep_limit, "device": device, "threads": threads}
    plan = replace(plan, **{k: v for k, v in changes.items() if v is not None})
    plan = replace(plan, eval_limit=plan.eval_limit or None, sweep_limit=plan.sweep_limit or None)  # 0: all
    if not plan.seeds:
        raise typer.BadParameter("need at least one seed")
    summary = run_ablation(plan, data, out, manifest)
    typer.echo((out / "table2.md").read_text())
    typer.echo((out / "speed.md").read_text())
    typer.echo(f"ablation done in {summary['seconds']:.0f} s; tables and plots in {out}")
    if summary["failed"]:
        typer.echo(f"{len(summary['failed'])} run(s) failed: " + "; ".join(summary["failed"]), err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
