"""`aps eval`: checkpoint + preprocessed store -> meshes, metrics.csv, tables, pictures, report.md, report.html; and
`aps compare`: earlier eval runs side by side (`aps eval --compare` is its alias, which scripts use).

The stage's modules are imported when a command runs, not here: aps/cli.py imports this module for every
`aps` call (`--help` included), and they pull in torch, zarr and scipy (seconds)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import typer

from common import cli_options as shared
from common.cluster import default_workers
from common.out_folder import check_out_folder


def evaluate(
    runs: list[Path] = typer.Argument(None, metavar="[RUN_DIR_OR_CSV]...",
                                      help="With --compare: eval output folders or their metrics.csv files."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help=shared.CHECKPOINT_HELP),
    data: Path = typer.Option(None, "--data", help="Preprocessed store (the output of `aps preprocess`)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    split: str = typer.Option("test", help="Split whose objects are evaluated."),
    view: int = typer.Option(0, help="Index of the stored view used as the single input image."),
    resolution: int = shared.RESOLUTION,
    coarse: int = shared.COARSE,
    level: str = typer.Option("auto", help="Occupancy level of the mesh and the IoU: auto (the checkpoint's own: "
                              "0.5, or for a network trained on a soft label v(d, s) the label's value half a voxel "
                              "outside the surface, docs/METHOD.md) or a number in (0, 1)."),
    formats: list[str] = shared.FORMATS,
    original_units: bool = typer.Option(False, "--original-units",
                                        help="Also write meshes in source units (p*scale+center)."),
    silhouette_views: int = typer.Option(8, help="Stored views compared by silhouette IoU."),
    pictures: bool = typer.Option(True, "--pictures/--no-pictures",
                                  help="Draw input | prediction | ground truth per object (pictures/, report.md) "
                                  "and put its meshes in report.html's 3D view."),
    page_faces: int = shared.PAGE_FACES,
    faces: int = shared.FACES,
    batch_size: int = typer.Option(None, "--points-per-query", show_default="4096 on a CPU, 262144 on a GPU",
                                   help="Points per network query (bounds memory)."),
    old_batch_size: int = typer.Option(None, "--batch-size", hidden=True,
                                       help="The former name of --points-per-query (aps train's --batch-size counts "
                                       "object-views)."),
    limit: int = typer.Option(None, help="Evaluate only the first N objects of the split."),
    objects: list[str] = typer.Option([], "--object", help="Evaluate only this object id (repeatable)."),
    per_category: int = typer.Option(None, "--per-category",
                                     help="Evaluate the first N objects of each category of the split."),
    scheduler: str = shared.SCHEDULER,
    workers: int = shared.WORKERS,
    device: str = shared.DEVICE,
    threads: int = shared.THREADS,
    precision: str = typer.Option("fp32", help="The network's arithmetic: fp32 (float32; the default, so that a "
                                  "checkpoint's metrics do not depend on the CPU) | auto (bf16 where the hardware "
                                  "has it and a timed decoder call is faster: 1.5-2x faster queries, meshes within "
                                  "IoU 0.005 and Chamfer 2% but rougher: docs/EVALUATION.md) | bf16."),
    compare: bool = typer.Option(False, "--compare",
                                 help="Lay several eval runs side by side (rows = runs, columns = metrics): the "
                                 "same as `aps compare RUN_DIR_OR_CSV... --out DIR`."),
) -> None:
    """Reconstruct every object of a split from one view, mesh it at its level (--level), score it and draw it.

    Writes OUT/meshes/<object_id>.ply (normalised frame), OUT/metrics.csv (one row per object),
    OUT/table1.md|csv (metric x category), OUT/pictures/*.png, OUT/report.md, OUT/report.html (one offline page:
    the table sortable, each object's meshes in a 3D view), OUT/page/<object_id>.json (its part of the page) and
    OUT/objects/<object_id>.json
    (each object's result as it finishes: a killed eval rerun with the same arguments skips the finished ones).
    With --compare RUN_DIR RUN_DIR ...: `aps compare` (writes OUT/compare.md|csv from earlier eval runs).
    """
    if compare:
        if not runs:
            raise ValueError("--compare needs eval output folders or metrics.csv files to compare")
        _write_comparison(runs, out)
        return
    if runs:
        raise ValueError(f"unexpected arguments {[str(r) for r in runs]} (folders to compare need --compare)")
    if checkpoint is None or data is None:
        raise ValueError("aps eval needs --checkpoint and --data (or --compare RUN_DIR ...)")
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint or run folder")

    from evaluation.config import EvalConfig
    from evaluation.executors import EvalExecutor
    from evaluation.fields import CPU_BATCH, GPU_BATCH, CheckpointFields
    from evaluation.results import file_sha256
    from evaluation.runner import evaluate_store
    from inference.predictor import resolve_checkpoint
    from pipeline.schema.read import open_store

    # every option is checked before anything is loaded or written (EvalConfig checks its own fields)
    if old_batch_size is not None:
        if batch_size is not None:
            raise ValueError("give --points-per-query alone (--batch-size is its former name)")
        logging.getLogger(__name__).warning("--batch-size is now --points-per-query (aps train's --batch-size "
                                            "counts object-views); using it as --points-per-query")
        batch_size = old_batch_size
    device = shared.resolve_device(device)
    gpu = device.startswith("cuda")
    batch_size = batch_size if batch_size is not None else (GPU_BATCH if gpu else CPU_BATCH)
    config = EvalConfig(split=split, view=view, resolution=resolution, coarse=coarse or None,
                        level=0.5 if level == "auto" else _level(level),
                        batch_size=batch_size, formats=tuple(formats), original_units=original_units,
                        silhouette_views=silhouette_views, pictures=pictures, page_faces=page_faces, faces=faces,
                        limit=limit,
                        objects=tuple(objects),
                        per_category=per_category, extra={"checkpoint": str(checkpoint)})
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    check_out_folder(out, "eval")
    store = open_store(data)
    _check_view(store, split, view)
    ckpt = resolve_checkpoint(checkpoint)
    sha256 = file_sha256(ckpt)
    fields = CheckpointFields(str(ckpt), device, threads or default_workers(), batch_size, sha256, precision)
    # CPU: every Dask worker loads its own network and evaluates whole objects on its one core
    executor = EvalExecutor(scheduler, workers, "client" if gpu or scheduler == "serial" else "workers")
    make_field = fields if executor.network == "client" else replace(fields, threads=1)
    # a bad checkpoint stops here, in one line, before any worker starts; auto is measured here, with the
    # threads the network will have, and every worker is given the answer
    predictor = make_field.predictor()
    make_field = replace(make_field, precision=predictor.precision)
    if level == "auto":  # the level of the very bytes every worker loads (sha256 above)
        config = replace(config, level=predictor.level)
    typer.echo(f"network: {make_field.precision} (--precision {precision}); meshes at occupancy {config.level:g} "
               f"(--level {level})")
    rows = evaluate_store(store, make_field, out, config, executor=executor,
                          field_id=f"checkpoint sha256 {sha256} in {make_field.precision}")
    failed = [r for r in rows if str(r.get("status")).startswith("error")]
    typer.echo((out / "table1.md").read_text())
    page = out / "report.html"
    typer.echo(f"wrote {out / 'metrics.csv'}, {out / 'report.md'} and {page} ({len(rows)} objects; the page "
               f"{page.stat().st_size / 1e6:.1f} MB, meshes at <= {config.page_faces} faces)")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} objects failed with an error, first "
                           f"{failed[0]['object_id']}: {failed[0]['status']}")


def _level(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--level must be auto or a number in (0, 1), got {text!r}") from None


def _check_view(store, split: str, view: int) -> None:
    """--view must be one of the stored views (the split's first object's count: every object has as many)."""
    object_ids = store.split(split)
    if object_ids:
        n_views = store.read(object_ids[0], "K").shape[0]
        if view >= n_views:
            raise ValueError(f"--view {view}: the objects of {store.path} have {n_views} views (0 to {n_views - 1})")


def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN_DIR_OR_CSV...",
                                      help="Eval output folders or their metrics.csv files."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
) -> None:
    """Lay several eval runs side by side (Table 2 shape: rows = runs, columns = metrics).

    Writes OUT/compare.md and OUT/compare.csv. `aps eval --compare RUN_DIR_OR_CSV... --out DIR` does the same.
    """
    _write_comparison(runs, out)


def _write_comparison(runs: list[Path], out: Path) -> None:
    from evaluation.report import compare_table, load_runs, markdown, write_table

    check_out_folder(out, "eval")  # an eval report's folder takes a comparison too
    table = compare_table(load_runs(runs))
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "compare")
    typer.echo(markdown(table))
