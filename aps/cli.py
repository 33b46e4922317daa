"""Entry point of the `aps` console script: registers each stage's command and turns failures into one line."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from common.errors import first_line

# command -> (module, function). A command's module is imported when that command runs, not at start-up: the
# stages' modules import what their commands need (pipeline.cli alone is 0.2 s), and `aps reconstruct` needs none
COMMANDS = {"preprocess": ("pipeline.cli", "preprocess"), "train": ("trainer.cli", "train"),
            "eval": ("evaluation.cli", "evaluate"), "compare": ("evaluation.cli", "compare"),
            "reconstruct": ("reconstruct.cli", "reconstruct"), "export": ("inference.cli", "export")}

_app = typer.Typer(
    name="aps",
    help="Single-view 3D reconstruction of industrial products with adaptive points sampling.\n\n"
    "Stages: preprocess (meshes -> zarr shards), train (shards -> checkpoints), "
    "eval (checkpoint + shards -> meshes, metrics, pictures, report.html); compare (eval runs side by side); "
    "reconstruct (checkpoint + photos -> meshes, previews, reconstruct.html); export (a run -> the network alone).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@_app.callback()
def _commands() -> None:
    # a group even when one command is registered (typer would otherwise make that command the whole program)
    pass


def _register(names=tuple(COMMANDS)) -> typer.Typer:
    """The app with these commands registered (those not yet), in COMMANDS' order."""
    registered = {info.name for info in _app.registered_commands}
    for name in COMMANDS:
        if name in names and name not in registered:
            module, function = COMMANDS[name]
            _app.command(name, no_args_is_help=True)(getattr(importlib.import_module(module), function))
    return _app


def __getattr__(name: str):
    """`from aps.cli import app`: the app with every command (tests and tools invoke it by command name)."""
    if name == "app":
        return _register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the CLI; any uncaught error becomes `aps: error: <reason>` and exit status 1 (APS_DEBUG=1: traceback)."""
    logging.basicConfig(level=os.environ.get("APS_LOG_LEVEL", "INFO"), datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("matplotlib", "PIL"):  # "generated new fontManager" in the middle of a training is not for people
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # only the command asked for is imported; help, no command or a misspelt one: all of them
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    app = _register((command,) if command else tuple(COMMANDS))
    code = 0
    try:
        _run(app)
    except SystemExit as done:
        if command not in EXIT_WITHOUT_TEARDOWN:
            raise
        code = done.code
    if command in EXIT_WITHOUT_TEARDOWN:
        _exit_without_teardown(code)


# Commands whose process ends without the interpreter's teardown. When `aps reconstruct` returns, every file it
# wrote is closed (written atomically: fsync'ed, renamed) and it leaves no thread or child process behind;
# unloading torch, open3d and the rest module by module took 1.0-1.2 s, more than a photo's reconstruction.
EXIT_WITHOUT_TEARDOWN = {"reconstruct"}


def plain_help(command) -> None:
    """Help as people read it, on the click command typer builds: no `<bool>` beside an on/off flag (it takes no
    value), and each help paragraph one line that the terminal wraps (source lines broken at 120 columns made
    ragged help at any other width). Indented lines stay as they are."""
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    if hasattr(command, "get_help_option"):  # --help is made when help is asked for, not kept in params
        made = command.get_help_option

        def get_help_option(ctx, made=made):
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option
    if getattr(command, "help", None):
        command.help = reflow(command.help)


def reflow(text: str) -> str:
    """Join the lines of each paragraph (paragraphs: separated by a blank line; indented lines kept apart)."""
    paragraphs = []
    for paragraph in text.strip().split("\n\n"):
        lines = paragraph.splitlines()
        joined: list[str] = []
        for line in lines:
            if joined and not line.startswith(" ") and not joined[-1].startswith(" "):
                joined[-1] = f"{joined[-1].rstrip()} {line.strip()}"
            else:
                joined.append(line.rstrip())
        paragraphs.append("\n".join(joined))
    return "\n\n".join(paragraphs)


def _run(app: typer.Typer) -> None:
    try:
        command = typer.main.get_command(app)
        plain_help(command)
        command(prog_name="aps")
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


def _exit_without_teardown(code: int | str | None) -> None:
    """End the process with the status sys.exit(code) gives, once the logs and the standard streams are flushed,
    but without running atexit handlers or unloading modules (os._exit)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
