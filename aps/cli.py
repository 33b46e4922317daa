"""Entry point of the `aps` console script: registers each stage's command and turns failures into one line."""

from __future__ import annotations

import logging
import os
import sys

import typer

from common.errors import first_line

app = typer.Typer(
    name="aps",
    help="Single-view 3D reconstruction of industrial products with adaptive points sampling.\n\n"
    "Stages: preprocess (meshes -> zarr shards), train (shards -> checkpoints), "
    "eval (checkpoint + shards -> meshes, metrics, pictures); compare (eval runs side by side).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from evaluation.cli import compare, evaluate
    from pipeline.cli import preprocess
    from reconstruct.cli import reconstruct
    from trainer.cli import train

    app.command("preprocess", no_args_is_help=True)(preprocess)
    app.command("train", no_args_is_help=True)(train)
    app.command("eval", no_args_is_help=True)(evaluate)
    app.command("compare", no_args_is_help=True)(compare)
    app.command("reconstruct", no_args_is_help=True)(reconstruct)


_register()


def main() -> None:
    """Run the CLI; any uncaught error becomes `aps: error: <reason>` and exit status 1 (APS_DEBUG=1: traceback)."""
    logging.basicConfig(level=os.environ.get("APS_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("aps: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a message
        if os.environ.get("APS_DEBUG"):
            raise
        reason = first_line(exc)
        print(f"aps: error: {reason}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
