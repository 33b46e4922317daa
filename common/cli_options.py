"""The options several `aps` commands share, defined once: the same name means the same thing with the same
default everywhere (tests/test_cli_vocabulary.py compares the commands' options against each other).

Each constant is a typer option a command uses as a parameter's default; typer reads it and does not change it,
so one object serves every command.
"""

from __future__ import annotations

import typer

DEVICE = typer.Option("auto", "--device", help="Torch device of the network: auto (cuda where a GPU is visible, "
                      "else cpu) | cpu | cuda | cuda:N.")
THREADS = typer.Option(None, "--threads", show_default="one per core",
                       help="Torch CPU threads of the process that runs the network (aps eval's CPU Dask workers "
                       "use 1 each).")
WORKERS = typer.Option(None, "--workers", show_default="one per core",
                       help="Worker processes of the local Dask cluster (--scheduler local).")
SCHEDULER = typer.Option("local", "--scheduler", help="'local' (a Dask LocalCluster sized to this machine), "
                         "'serial' (a plain loop), or the ADDRESS of a running Dask scheduler (its workers must see "
                         "the command's input and output folders).")
RESOLUTION = typer.Option(256, "--resolution", help="Grid cells per axis of the mesh extraction, 8 to 1024 (paper: "
                          "256; 128 asks ~4x fewer queries for a coarser mesh).")
COARSE = typer.Option(32, "--coarse", help="First grid of the coarse-to-fine extraction (--resolution must be it "
                      "times a power of two); 0 for the dense grid.")
FORMATS = typer.Option(["ply"], "--format", help="ply, obj, glb or stl (repeatable).")
PAGE_FACES = typer.Option(3000, "--page-faces", help="Faces of each mesh in the command's HTML page (decimated for "
                          "the page only; ~0.1 MB per object at 3000).")
FACES = typer.Option(None, "--faces", show_default="the full mesh",
                     help="Write each mesh decimated to at most N faces (quadric error decimation, at least 100); the "
                     "metrics, pictures and page always use the full mesh.")
CHECKPOINT_HELP = "Checkpoint of `aps train`, or its run folder (then its best.ckpt; the log says which file)."


def resolve_device(name: str) -> str:
    """auto -> 'cuda' where torch sees a GPU, else 'cpu'; a CUDA device asked for on a machine without one is
    refused in one line (not deep inside torch)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"{name!r} asked for, but torch sees no CUDA GPU on this machine (auto picks "
                                 "the CPU)", param_hint="--device")
    return name
