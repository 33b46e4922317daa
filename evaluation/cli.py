"""`aps eval`: checkpoint + preprocessed store -> meshes, metrics.csv, tables, pictures, report.md."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    runs: list[Path] = typer.Argument(None, metavar="[RUN_DIR_OR_CSV]...",
                                      help="With --compare: eval output folders or their metrics.csv files."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Checkpoint of `aps train` or its run folder."),
    data: Path = typer.Option(None, "--data", help="Preprocessed store (the output of `aps preprocess`)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    split: str = typer.Option("test", help="Split whose objects are evaluated."),
    view: int = typer.Option(0, help="Index of the stored view used as the single input image."),
    resolution: int = typer.Option(256, help="Grid cells per axis of the mesh extraction (paper: 256)."),
    coarse: int = typer.Option(32, help="First grid of the coarse-to-fine extraction; 0 for the dense grid."),
    formats: list[str] = typer.Option(["ply"], "--format", help="ply, obj, glb or stl (repeatable)."),
    original_units: bool = typer.Option(False, "--original-units",
                                        help="Also write meshes in source units (p*scale+center)."),
    silhouette_views: int = typer.Option(8, help="Stored views compared by silhouette IoU."),
    batch_size: int = typer.Option(1 << 16, help="Points per network query (bounds memory)."),
    limit: int = typer.Option(None, help="Evaluate only the first N objects of the split."),
    objects: list[str] = typer.Option([], "--object", help="Evaluate only this object id (repeatable)."),
    per_category: int = typer.Option(None, "--per-category",
                                     help="Evaluate the first N objects of each category of the split."),
    device: str = typer.Option("cpu", help="Torch device of the predictor."),
    threads: int = typer.Option(2, help="Torch CPU threads."),
    compare: bool = typer.Option(False, "--compare",
                                 help="Lay several eval runs side by side (rows = runs, columns = metrics)."),
) -> None:
    """Reconstruct every object of a split from one view, mesh it at 0.5, score it and draw it.

    Writes OUT/meshes/<object_id>.ply (normalised frame), OUT/metrics.csv (one row per object),
    OUT/table1.md|csv (metric x category), OUT/pictures/*.png and OUT/report.md.
    With --compare RUN_DIR RUN_DIR ...: writes OUT/compare.md|csv (Table 2 shape) from earlier eval runs.
    """
    from evaluation.report import compare_table, load_runs, markdown, write_table

    if compare:
        if not runs:
            raise ValueError("--compare needs eval output folders or metrics.csv files to compare")
        table = compare_table(load_runs(runs))
        out.mkdir(parents=True, exist_ok=True)
        write_table(table, out / "compare")
        typer.echo(markdown(table))
        return
    if runs:
        raise ValueError(f"unexpected arguments {[str(r) for r in runs]} (folders to compare need --compare)")
    if checkpoint is None or data is None:
        raise ValueError("aps eval needs --checkpoint and --data (or --compare RUN_DIR ...)")
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint or run folder")

    import torch

    from evaluation.config import EvalConfig
    from evaluation.runner import evaluate_store
    from inference.predictor import load_predictor
    from pipeline.schema import open_store

    torch.set_num_threads(threads)
    config = EvalConfig(split=split, view=view, resolution=resolution, coarse=coarse or None,
                        batch_size=batch_size, formats=tuple(formats), original_units=original_units,
                        silhouette_views=silhouette_views, limit=limit, objects=tuple(objects),
                        per_category=per_category, extra={"checkpoint": str(checkpoint)})
    store = open_store(data)
    predictor = load_predictor(str(checkpoint), device=device)
    rows = evaluate_store(store, lambda v: predictor.field(v.image, v.K, v.Rt), out, config)
    failed = [r for r in rows if str(r.get("status")).startswith("error")]
    typer.echo((out / "table1.md").read_text())
    typer.echo(f"wrote {out / 'metrics.csv'} and {out / 'report.md'} ({len(rows)} objects)")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} objects failed with an error, first "
                           f"{failed[0]['object_id']}: {failed[0]['status']}")
