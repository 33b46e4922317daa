"""`aps preprocess`: meshes (a manifest, or a plain folder) -> a zarr store of training and evaluation data."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cluster import Executor
from pipeline.manifest import folder_manifest, load_manifest


def preprocess(
    manifest: Path = typer.Option(None, "--manifest", "-m", help="Dataset manifest (TOML), see manifests/README.md."),
    meshes: Path = typer.Option(None, "--meshes", help="A plain folder of meshes, one subfolder per category "
                                "(no manifest needed; split 80/10/10 by a hash of each object id)."),
    out: Path = typer.Option(None, "--out", "-o", help="Store to write (default: data/<dataset name>)."),
    scheduler: str = typer.Option("local", help="'local' (a Dask LocalCluster sized to this machine), 'serial' "
                                  "(a plain loop), or the ADDRESS of a running Dask scheduler."),
    workers: int = typer.Option(None, help="Worker processes of the local cluster (default: one per core)."),
    views: int = typer.Option(None, help="Rendered views per object (default 24)."),
    image_size: int = typer.Option(None, help="Rendered image side in pixels (default 137)."),
    shard_size: int = typer.Option(None, help="Objects per zarr shard (default 16)."),
    replace_dataset: bool = typer.Option(False, "--replace-dataset", help="Let --out hold a store of another "
                                         "dataset: its objects are deleted, this one's written."),
) -> None:
    """Turn meshes into zarr shards: 9872 jittered surface points + 128 uniform points per object with their
    exact unsigned distances and inside flags, rendered views with cameras, and evaluation reference data.

    Incremental: objects already processed with the same inputs are skipped. A bad mesh fails alone (see
    STORE/runs.jsonl); the run goes on and exits with status 1 naming the failures.
    """
    from dataclasses import replace

    from tqdm import tqdm

    from common.progress import bar_options
    from pipeline.runner import run_preprocess
    from pipeline.stages.validate import validate_store

    if (manifest is None) == (meshes is None):
        raise typer.BadParameter("give exactly one of --manifest or --meshes")
    m = load_manifest(manifest) if manifest is not None else folder_manifest(meshes)
    config = m.config()
    if views is not None or image_size is not None:
        config = replace(config, views=replace(config.views, **{k: v for k, v in
                         {"n_views": views, "image_size": image_size}.items() if v is not None}))
    config = config.with_overrides(shard_size=shard_size)
    store = out or Path("data") / m.name
    typer.echo(f"preprocess: dataset {m.name!r} -> {store}")
    objects = m.objects()
    with tqdm(total=len(objects), desc="objects", unit="obj", **bar_options(total=len(objects))) as bar:
        summary = run_preprocess(m, store, config, progress=bar.update, replace_dataset=replace_dataset,
                                 executor=Executor(scheduler, workers))
        bar.update(bar.total - bar.n)
    typer.echo(summary.line())
    if summary.step_seconds and summary.done:
        steps = ", ".join(f"{k} {1000 * v / summary.done:.0f}" for k, v in summary.step_seconds.items())
        typer.echo(f"  ms per object by step: {steps}")
    problems = validate_store(store)
    for p in problems:
        typer.echo(f"  invalid: {p}", err=True)
    for o in summary.failed:
        typer.echo(f"  failed: {o.job.object_id}: {o.error}", err=True)
    if summary.failed or problems:
        typer.echo(f"preprocess: {len(summary.failed)} object(s) failed, {len(problems)} invalid; the others are "
                   f"written. Details in {store / 'runs.jsonl'}", err=True)
        raise typer.Exit(1)
