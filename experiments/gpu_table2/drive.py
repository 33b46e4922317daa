"""Table 2 in one call of the GPU machine: the five variants trained side by side with `aps train`, each scored
on every test object as soon as its training ends, all of it under one time budget, then the few files that may
come back written into OUT.

Why side by side: one run of the paper's preset (batches of 32 at 224 px) keeps an H200 less than half busy (a
step of 32 took as long per sample as 2x that of 128, docs/TRAINING.md "Measured") and spends a second or more
of each epoch on the CPU and the disk (validation, two checkpoints, a plot); five processes fill those gaps with
each other's steps, and under a deadline every variant gets the same wall time instead of the last ones none.
Sequentially, the per-epoch overhead alone (50 epochs x 5 variants) would take most of the call.

Why a deadline and not only an epoch count: the call has 10 minutes and the machine's rate here is a
projection. At the trainings' deadline every training still running is stopped (SIGTERM to its process group);
its last.ckpt and metrics.csv are those of its last finished epoch (both are written atomically), and it is
scored like the others, its epochs counted in the tables. The same for the scoring at its deadline: the objects
scored so far stay in its metrics.csv.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common.atomic import atomic_write, atomic_write_text
from evaluation.report import markdown, read_metrics_csv
from experiments.ablation.plan import KNOWN_VARIANTS, VARIANTS, Layout, Plan, Variant, read_curve
from experiments.ablation.run import ROOT, aps_command, check_plan, train_args, write_reports
from experiments.gpu_table2.score import SCORE_FILE, strict_json
from experiments.gpu_table2.weights import FILE_LIMIT, export_bf16

log = logging.getLogger(__name__)

# Packages this toolkit installs that the GPU machine lacks and cannot install (no registry there); trimesh,
# zarr, numcodecs, donfig and google-crc32c travel as wheels (scripts/gpu_wheels.sh). The rehearsal makes these
# unimportable, so a path that needs one fails here first.
MISSING_THERE = ("open3d", "igl", "pysdf", "dask", "distributed", "rtree", "cascadio", "gmsh")

# What may come back from the GPU machine ($OUT): at most 8 files of at most 16 MiB, named in letters, digits,
# '.', '_' and '-'. Four are these; the rest are the exported networks' parts (two each).
TABLE_MD, TABLE_JSON, CURVES, ARCHIVE = "table2.md", "table2.json", "learning_curves.png", "gpu_table2.tar.gz"
OWN_FILES = (TABLE_MD, TABLE_JSON, CURVES, ARCHIVE)  # beside the networks' parts
MAX_FILES = 8


@dataclass
class Budget:
    """Seconds, counted from the start of the run."""

    total: float = 450.0
    """until the last file is in OUT (the call may last 600 s; the wheels and Python's start come before)"""
    scoring: float = 120.0
    """kept after the trainings' deadline for scoring (20 test objects at 256^3, ~3-5 s of CPU each)"""
    packing: float = 25.0
    """kept at the end for the tables, the figure, the archive (the networks are exported before)"""

    def deadlines(self, start: float) -> tuple[float, float]:
        """(the trainings' deadline, the scorings' deadline) as time.monotonic() values."""
        return start + self.total - self.scoring - self.packing, start + self.total - self.packing


@dataclass
class Settings:
    """One GPU Table 2: the plan of its runs (experiments.ablation's Plan: variants, preset, epochs, `--set`,
    device, threads, scoring grid), how many run at once, the time budget and the networks brought back."""

    plan: Plan
    n_samples: int = 100_000
    """points sampled on each predicted mesh for the surface metrics (OccNet: 100,000)"""
    parallel: int = 5
    """trainings and scorings running at once (each a process; together they share the one GPU)"""
    budget: Budget = field(default_factory=Budget)
    export: tuple[str, ...] = ("fpn+adaptive", "fpn+binary")
    """variants whose last.ckpt comes back as bf16 weights (two files each; at most two networks fit)"""


# The paper's settings (Section 5.2: ResNet-18 + FPN at 224 px, batches of 32 x 2048 points, Adam 1e-4, 50
# epochs, s reconsidered every 10) with each object drawn 12 times an epoch (the paper's 24 = every view once;
# half of it fits the budget at the rate projected below), one seed, meshes at 256^3 on every test object.
# Projected: ~1,900 samples/s for one run alone (the H200 step measured in docs/TRAINING.md), 350-700 each for
# five side by side: 50 x 12 x 94 = 56,400 samples in 80-160 s, plus ~1.5 s an epoch of validation, checkpoints
# and plot, ~240 s at worst against the ~300 s before the trainings' deadline.
# Beside the five, the quality study's gain schedule of s (experiments.ablation.plan.EXTRA_VARIANTS), six processes.
PAPER = Settings(plan=Plan(variants=(*VARIANTS, "fpn+adaptive-gain"), seeds=(0,), sweep=(), train_preset="paper",
                           epochs=50,
                           train_set=("data.repeats=12",), device="cuda", threads=2, eval_resolution=256,
                           eval_coarse=32, eval_limit=None, eval_view=0), parallel=6)
# The same script on this CPU in a few minutes: the tiny network, 2 epochs, 2 test objects at 32^3.
REHEARSAL = Settings(plan=replace(PAPER.plan, train_preset="cpu-test", epochs=2, train_set=("data.repeats=1",),
                                  device="cpu", threads=1, eval_resolution=32, eval_coarse=8, eval_limit=2),
                     n_samples=20_000, parallel=2, budget=Budget(total=420.0, scoring=150.0, packing=15.0))


def write_import_blocker(folder: str | Path) -> Path:
    """FOLDER/sitecustomize.py that makes MISSING_THERE unimportable in every Python started with FOLDER on
    PYTHONPATH (the rehearsal's stand-in for the GPU machine's missing packages) -> FOLDER."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ", ".join(repr(n) for n in MISSING_THERE)
    atomic_write_text(folder / "sitecustomize.py",
                      "# experiments.gpu_table2's rehearsal: the packages the GPU machine lacks cannot be imported\n"
                      f"import sys\n\nfor _name in ({names},):\n    sys.modules[_name] = None\n")
    return folder


@dataclass
class _Job:
    variant: Variant
    step: str  # "train" | "score"
    proc: subprocess.Popen
    log_path: Path
    started: float


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when the driver ends, however it ends (a driver
    killed by a timeout left 1000-epoch trainings running on a shared machine: their own session keeps them
    out of the driver's process group)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A subprocess in its own session (so a stop reaches its data-loader workers too) that dies with the driver,
    output in log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds; returns when the process has ended."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.exists() else []
    return lines[-1].strip()[:300] if lines else "(no output)"


class _Schedule:
    """The jobs of one GPU Table 2: which variant trains or scores now, what each has done, the deadlines."""

    def __init__(self, settings: Settings, data: Path, work: Path, start: float):
        self.settings, self.data, self.layout = settings, data, Layout(work)
        self.plan = settings.plan
        self.train_deadline, self.score_deadline = settings.budget.deadlines(start)
        self.to_train = [KNOWN_VARIANTS[name] for name in self.plan.variants]
        self.to_score: list[Variant] = []
        self.running: list[_Job] = []
        self.record: dict[str, dict[str, object]] = {v.name: {"training": "waiting", "scoring": "waiting"}
                                                     for v in self.to_train}
        self.seed = self.plan.seeds[0]

    # -- what each job is
    def _train_command(self, variant: Variant) -> tuple[list[str], dict[str, str]]:
        return aps_command(train_args(self.plan, self.data, self.layout, variant, self.seed), self.plan.threads)

    def _score_command(self, variant: Variant) -> tuple[list[str], dict[str, str]]:
        plan = self.plan
        workers = max(1, (os.cpu_count() or 2) // self.settings.parallel)
        args = ["score", "--checkpoint", str(self.layout.run_dir(variant, self.seed) / "last.ckpt"),
                "--data", str(self.data), "--out", str(self.layout.eval_dir(variant, self.seed)),
                "--resolution", str(plan.eval_resolution), "--coarse", str(plan.eval_coarse or 0),
                "--view", str(plan.eval_view), "--samples", str(self.settings.n_samples),
                "--workers", str(workers), "--device", plan.device]
        if plan.eval_limit is not None:
            args += ["--limit", str(plan.eval_limit)]
        return aps_command(args, plan.threads, module="experiments.gpu_table2")

    def _scored(self, variant: Variant) -> dict:
        path = self.layout.eval_dir(variant, self.seed) / SCORE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- the loop
    def _launch(self, variant: Variant, step: str) -> None:
        command, env = self._train_command(variant) if step == "train" else self._score_command(variant)
        log_path = self.layout.log_file(variant, self.seed, step)
        self.running.append(_Job(variant, step, _start(command, env, log_path), log_path, time.monotonic()))
        self.record[variant.name]["training" if step == "train" else "scoring"] = "running"
        log.info("%s: %s started", variant.name, "training" if step == "train" else "scoring")

    def _trained(self, job: _Job, rc: int | None, stopped: bool) -> None:
        run_dir = self.layout.run_dir(job.variant, self.seed)
        curve = read_curve(run_dir)
        entry = self.record[job.variant.name]
        entry.update(epochs=len(curve), training_seconds=round(time.monotonic() - job.started, 1))
        if stopped:
            entry["training"] = f"stopped at the time limit after {len(curve)} of {self.plan.epochs} epochs"
        elif rc == 0:
            entry["training"] = "finished"
        else:
            entry["training"] = f"failed (exit {rc}): {_last_line(job.log_path)}"
        if (run_dir / "last.ckpt").is_file():
            self.to_score.append(job.variant)
        else:
            entry["scoring"] = "not run: no checkpoint"
        log.info("%s: training %s", job.variant.name, entry["training"])

    def _scored_job(self, job: _Job, rc: int | None, stopped: bool) -> None:
        entry, scored = self.record[job.variant.name], self._scored(job.variant)
        entry.update(objects_scored=scored.get("objects_scored", 0), objects=scored.get("objects"),
                     scored_epoch=scored.get("epoch"), scoring_seconds=round(time.monotonic() - job.started, 1))
        if stopped:
            entry["scoring"] = (f"stopped at the time limit after {entry['objects_scored']} of "
                                f"{entry['objects']} objects")
        elif rc == 0:
            entry["scoring"] = "finished"
        else:
            entry["scoring"] = f"failed (exit {rc}): {_last_line(job.log_path)}"
        log.info("%s: scoring %s", job.variant.name, entry["scoring"])

    def _finish(self, job: _Job, rc: int | None, stopped: bool) -> None:
        self.running.remove(job)
        (self._trained if job.step == "train" else self._scored_job)(job, rc, stopped)

    def training_over(self) -> bool:
        return not self.to_train and not any(j.step == "train" for j in self.running)

    def step(self) -> bool:
        """One turn: reap ended jobs, apply the deadlines, start what may start -> False when all is done."""
        for job in list(self.running):
            rc = job.proc.poll()
            if rc is not None:
                self._finish(job, rc, stopped=False)
        now = time.monotonic()
        if now >= self.train_deadline:
            for job in [j for j in self.running if j.step == "train"]:
                _stop(job.proc)
                self._finish(job, job.proc.returncode, stopped=True)
            for variant in self.to_train:
                self.record[variant.name].update(training="not started: no time left", scoring="not run")
            self.to_train = []
        if now >= self.score_deadline:
            for job in [j for j in self.running if j.step == "score"]:
                _stop(job.proc)
                self._finish(job, job.proc.returncode, stopped=True)
            for variant in self.to_score:
                self.record[variant.name]["scoring"] = "not started: no time left"
            self.to_score = []
        while len(self.running) < self.settings.parallel and (self.to_score or self.to_train):
            if self.to_score:  # a trained variant first: its numbers are what the call is for
                variant = self.to_score.pop(0)
                if self._scored(variant).get("complete"):
                    self._scored_job(_Job(variant, "score", None, Path(), time.monotonic()), 0, False)
                    continue
                self._launch(variant, "score")
            else:
                variant = self.to_train.pop(0)
                if len(read_curve(self.layout.run_dir(variant, self.seed))) >= self.plan.epochs:
                    self._trained(_Job(variant, "train", None, Path(), time.monotonic()), 0, False)
                    continue
                self._launch(variant, "train")
        return bool(self.running or self.to_train or self.to_score)

    def stop_all(self) -> None:
        for job in list(self.running):
            _stop(job.proc)
            self._finish(job, job.proc.returncode, stopped=True)


def _machine() -> dict[str, object]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": gpu, "cpus": os.cpu_count()}


def _read_table(path: Path) -> list[list[str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _runs_table(schedule: _Schedule) -> list[list[str]]:
    table = [["variant", "training", "epochs", "training s", "samples/s (mean)", "final val IoU", "final s",
              "scoring", "test objects scored"]]
    for name, entry in schedule.record.items():
        curve = read_curve(schedule.layout.run_dir(KNOWN_VARIANTS[name], schedule.seed))
        rate = sum(r["samples_per_s"] for r in curve) / len(curve) if curve else math.nan
        last = curve[-1] if curve else {}
        s = last.get("s", math.nan)
        table.append([name, str(entry.get("training")), f"{len(curve)}/{schedule.plan.epochs}",
                      str(entry.get("training_seconds", "")), f"{rate:.0f}" if curve else "",
                      f"{last['val_iou']:.3f}" if curve else "", "binary" if curve and math.isnan(s) else
                      (f"{s:.3f}" if curve else ""), str(entry.get("scoring")),
                      f"{entry.get('objects_scored', 0)}/{entry.get('objects', '?')}"])
    return table


def write_bundle(schedule: _Schedule, out: Path, seconds: float, final: bool) -> list[str]:
    """Tables, figure and archive into OUT (the networks were exported before) -> the files OUT holds.

    Each piece is written on its own: one that fails is logged and the others still come back.
    """
    settings, work, layout, plan = schedule.settings, schedule.layout.out, schedule.layout, schedule.plan
    summary: dict[str, object] = {}
    try:
        summary = write_reports(plan, schedule.data, work)
    except Exception as exc:  # noqa: BLE001 - the tables must not cost the rest
        log.error("tables: %s", exc)
    if (work / CURVES).is_file():
        shutil.copyfile(work / CURVES, out / CURVES)
    objects = {}
    for name in plan.variants:
        path = layout.eval_dir(KNOWN_VARIANTS[name], schedule.seed) / "metrics.csv"
        if path.is_file():
            objects[name] = read_metrics_csv(path)
    record = {
        "what": "Table 2 of the paper on the GPU machine (scripts/gpu_table2.sh); docs/TRAINING.md",
        "final": final, "seconds": round(seconds, 1), "machine": _machine(),
        "settings": {"plan": asdict(plan), "n_samples": settings.n_samples, "parallel": settings.parallel,
                     "budget": asdict(settings.budget), "export": list(settings.export), "data": str(schedule.data)},
        "runs": schedule.record, "runs_table": _runs_table(schedule),
        "table2": _read_table(work / "table2.csv"), "table2_failures": _read_table(work / "table2_failures.csv"),
        "speed": summary.get("speed", []), "all_inside_val_iou": summary.get("all_inside_val_iou"),
        "objects": objects,
        "curves": {name: read_curve(layout.run_dir(KNOWN_VARIANTS[name], schedule.seed)) for name in plan.variants},
    }
    atomic_write_text(out / TABLE_JSON, json.dumps(strict_json(record), indent=1, allow_nan=False))
    atomic_write_text(out / TABLE_MD, _markdown(schedule, record, work))
    _archive(work, out / ARCHIVE)
    return check_returnable(out)


def _markdown(schedule: _Schedule, record: dict, work: Path) -> str:
    plan, settings, machine = schedule.plan, schedule.settings, record["machine"]

    def section(title: str, name: str) -> list[str]:
        path = work / name
        return [f"## {title}", "", path.read_text() if path.is_file() else "(not written)", ""]

    reference = record["all_inside_val_iou"]
    lines = [f"# Table 2 on {machine['gpu'] or 'the CPU (rehearsal)'}" + ("" if record["final"] else " (so far)"),
             "",
             f"- store `{schedule.data}`; preset `{plan.train_preset}`, {plan.epochs} epochs planned, "
             f"`--set {' '.join(plan.train_set)}`, seed {schedule.seed}, {settings.parallel} processes at once",
             f"- scoring: view {plan.eval_view}, {plan.eval_resolution}^3 grid (coarse {plan.eval_coarse}), "
             f"{settings.n_samples} points on each mesh, last.ckpt of each run",
             f"- python {machine['python']}, torch {machine['torch']} (CUDA {machine['cuda']}), {machine['cpus']} CPUs;"
             f" {record['seconds']:.0f} s of a {settings.budget.total:.0f} s budget",
             "", "## The runs", "", markdown(record["runs_table"]), ""]
    lines += section("Table 2 (test split; mean over the test objects)", "table2.md")
    lines += section("What drives the means", "table2_failures.md")
    lines += section("Training speed: epochs to 95% of fpn+binary's final validation IoU", "speed.md")
    if isinstance(reference, float):
        lines += [f"Validation IoU of calling every point inside: {reference:.3f} (read the curves against it).", ""]
    lines += [f"Per-object rows: {TABLE_JSON} (objects) and {ARCHIVE} (eval/*/seed*/metrics.csv, the runs' "
              "metrics.csv, config.json, curves.png and logs).", ""]
    return "\n".join(lines)


def _archive(work: Path, path: Path) -> None:
    """OUT/gpu_table2.tar.gz: everything small under WORK (no checkpoint, no TensorBoard log)."""
    wanted = [p for p in sorted(work.rglob("*")) if p.is_file() and p.suffix in (".csv", ".json", ".md", ".png", ".log")
              and "tensorboard" not in p.parts and not p.name.startswith(".")]

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for p in wanted:
                tar.add(p, arcname=str(Path("gpu_table2") / p.relative_to(work)))

    atomic_write(path, write)


def check_returnable(out: Path) -> list[str]:
    """The files in OUT, checked against what the GPU machine returns (<= 8 plain files at the top, <= 16 MiB
    each, plain names); a breach is logged as an error, naming the file (it would not come back)."""
    import re

    names = sorted(p.name for p in out.iterdir())
    for p in sorted(out.iterdir()):
        if not p.is_file() or p.stat().st_size > FILE_LIMIT or not re.fullmatch(r"[A-Za-z0-9._-]+", p.name):
            log.error("%s: would not come back from the GPU machine (a folder, over 16 MiB or an odd name)", p)
    if len(names) > MAX_FILES:
        log.error("%s: %d files, over the %d that come back", out, len(names), MAX_FILES)
    return names


def _export(schedule: _Schedule, out: Path) -> None:
    """The chosen variants' last.ckpt as bf16 parts in OUT, as many networks as fit beside OWN_FILES."""
    free = MAX_FILES - len(OWN_FILES)
    for name in schedule.settings.export:
        variant = KNOWN_VARIANTS.get(name)
        ckpt = schedule.layout.run_dir(variant, schedule.seed) / "last.ckpt" if variant else None
        if ckpt is None or not ckpt.is_file():
            log.warning("export: %s has no last.ckpt; not exported", name)
            continue
        try:
            paths = export_bf16(ckpt, out, variant.slug)
        except Exception as exc:  # noqa: BLE001 - the tables matter more than the weights
            log.error("export of %s: %s", name, exc)
            continue
        if len(paths) > free:
            for p in paths:
                p.unlink()
            log.warning("export: %s needs %d files, %d left of the %d that come back; not exported", name,
                        len(paths), free, MAX_FILES)
            continue
        free -= len(paths)
        schedule.record[name]["exported"] = [p.name for p in paths]
        log.info("exported %s: %s", name, ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in paths))


def _clear_own_files(out: Path) -> None:
    """A rerun into the same OUT starts without the files an earlier run left there (only ours)."""
    for p in out.iterdir():
        if p.is_file() and (p.name in OWN_FILES or ".bf16-" in p.name):
            p.unlink()


def run_gpu_table2(settings: Settings, data: str | Path, work: str | Path, out: str | Path) -> dict:
    """Train, score, tabulate and export under settings.budget; WORK holds the runs, OUT the files to bring
    back -> the record of every variant (also in OUT/table2.json)."""
    start = time.monotonic()
    data, work, out = Path(data).resolve(), Path(work).resolve(), Path(out).resolve()
    if settings.plan.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but torch sees no GPU here; on the CPU use --rehearse")
    if len(settings.plan.seeds) != 1:
        raise ValueError("one seed per call: the budget has room for one")
    check_plan(settings.plan, work, data)
    out.mkdir(parents=True, exist_ok=True)
    _clear_own_files(out)
    handler = logging.FileHandler(work / "driver.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    schedule = _Schedule(settings, data, work, start)
    log.info("trainings' deadline in %.0f s, scorings' in %.0f s", schedule.train_deadline - start,
             schedule.score_deadline - start)
    exported = False
    try:
        while schedule.step():
            if not exported and schedule.training_over():
                exported = True
                _export(schedule, out)
                write_bundle(schedule, out, time.monotonic() - start, final=False)
            time.sleep(0.5)
    finally:
        schedule.stop_all()
        if not exported:
            _export(schedule, out)
        files = write_bundle(schedule, out, time.monotonic() - start, final=True)
        logging.getLogger().removeHandler(handler)
        handler.close()
    log.info("done in %.0f s; OUT holds %s", time.monotonic() - start, ", ".join(files))
    return schedule.record
