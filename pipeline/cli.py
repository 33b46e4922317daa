"""`aps preprocess`: meshes (a manifest, or a plain folder) -> a zarr store of training and evaluation data."""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli_options import SCHEDULER, WORKERS
from common.cluster import Executor
from pipeline.manifest import folder_manifest, load_manifest


def _value(text: str):
    """A --set value as TOML would give it: an integer, a number, true/false, a comma list, else the text."""
    if "," in text:
        return [_value(part) for part in text.split(",") if part != ""]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def with_settings(params: dict, settings: list[str]) -> dict:
    """params with each `key.sub=value` of --set applied (a copy; the manifest's checks then judge the values)."""
    import copy

    out = copy.deepcopy(params)
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r}: expected key=value (e.g. views.n_views=12)")
        *parents, leaf = key.strip().split(".")
        table = out
        for name in parents:
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise typer.BadParameter(f"--set {item!r}: {name} is not a table of [params]")
        value = _value(text.strip())
        if isinstance(_default(key.strip()), tuple | list) and not isinstance(value, list):
            value = [value]  # --set reference_splits=test: a list of one
        table[leaf] = value
    return out


def _default(key: str):
    """The default of a dotted [params] key (None where there is no such key: the manifest's check says so)."""
    from pipeline.config import PreprocessConfig

    value = PreprocessConfig()
    for name in key.split("."):
        value = getattr(value, name, None)
    return value


def split_line(store: Path) -> str:
    """'split: 3 train, 1 val, 1 test' of the store, and what a missing split means for the next stages."""
    from pipeline.schema.read import open_store

    opened = open_store(store)
    counts = {name: len(opened.split(name)) for name in ("train", "val", "test")}
    line = "split: " + ", ".join(f"{n} {name}" for name, n in counts.items())
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        line += (f" (no {' and no '.join(empty)} object: {'aps eval needs test objects; ' if 'test' in empty else ''}"
                 "give the folder more meshes, or a manifest with a [split])")
    return line


def preprocess(
    manifest: Path = typer.Option(None, "--manifest", "-m", help="Dataset manifest (TOML), see manifests/README.md."),
    meshes: Path = typer.Option(None, "--meshes", help="A plain folder of meshes, one subfolder per category "
                                "(no manifest needed; split 80/10/10 by a hash of each object id, at least one "
                                "val and one test object from 3 objects on)."),
    out: Path = typer.Option(None, "--out", "-o", help="Store to write (default: data/<dataset name>)."),
    scheduler: str = SCHEDULER,
    workers: int = WORKERS,
    views: int = typer.Option(None, help="Rendered views per object (default 24)."),
    image_size: int = typer.Option(None, help="Rendered image side in pixels (default 137)."),
    shard_size: int = typer.Option(None, help="Objects per zarr shard (default 16)."),
    up_axis: str = typer.Option(None, "--up-axis", help="The meshes' up axis, x, y or z (default: the manifest's, "
                                "else y as ShapeNet; robot and CAD parts are often z): the views orbit about it."),
    settings: list[str] = typer.Option([], "--set", help="Any [params] key of a manifest, repeatable: --set "
                                       "n_reference=20000 --set views.n_views=12 --set reference_splits=test,val "
                                       "(manifests/README.md lists them)."),
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
    if up_axis is not None:
        settings = [f"views.up_axis={up_axis}", *settings]
    if settings:
        m.params = with_settings(m.params, settings)
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
    typer.echo(split_line(store))
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
