"""`aps reconstruct`: photos of objects -> one mesh, one preview and one metadata file per photo.

The files and the loop: which photos (a file, or a folder's visible files), the checkpoint and the training
store's framing, one photo's failure reported in one line while the others go on; the work is the pure
functions of the rooms below (photos, framing, reconstruction, preview).
"""

from __future__ import annotations

import glob
from pathlib import Path

import typer

from common import cli_options as shared
from common.errors import first_line

PREVIEW_SUFFIX = ".preview.png"


def _inputs(path: Path, out: Path) -> list[Path]:
    """The photos to reconstruct: the file itself, or every visible regular file of the folder (sorted; files
    that are not images fail one by one, with their name). A folder cannot be its own --out: the next run
    would read the meshes, previews and .json files written there as photos (a subfolder is fine: only the
    folder's files are read)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image or folder")
    if out.resolve() == path.resolve():
        raise ValueError(f"{out}: --out is the folder of the photos; the meshes, previews and .json files written "
                         f"there would be read as photos by the next run: give --out another folder (e.g. "
                         f"{path / 'meshes'})")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path}: the folder holds no files")
    return files


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--box must be four integers x0,y0,x1,y1 (photo pixels), got {text!r}") from None
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise ValueError(f"--box {text}: needs 0 <= x0 < x1 and 0 <= y0 < y1 (photo pixels, end-exclusive)")
    return x0, y0, x1, y1


def _mask_for(folder: Path, photo: Path) -> Path:
    """The mask of a photo in a --mask folder: the file named like the photo (<stem>.png, or any <stem>.*)."""
    found = sorted(p for p in folder.glob(f"{glob.escape(photo.stem)}.*") if p.is_file())
    if not found:
        raise FileNotFoundError(f"{photo}: no mask {photo.stem}.png (or {photo.stem}.*) in {folder}")
    png = [p for p in found if p.suffix.lower() == ".png"]
    return (png or found)[0]


def reconstruct(
    source: Path = typer.Argument(..., metavar="IMAGE_OR_FOLDER",
                                  help="A photo (PNG/JPEG/..., RGB on a plain background or an RGBA cut-out) "
                                  "or a folder of them."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help=shared.CHECKPOINT_HELP),
    out: Path = typer.Option(..., "--out", help="Output folder: <stem>.<format>, <stem>.json, <stem>.preview.png, "
                             "reconstruct.html."),
    formats: list[str] = shared.FORMATS,
    size_text: str = typer.Option(None, "--size", show_default="the normalised frame, largest side about 1",
                                  help="Real size of the object's largest dimension with its unit: 120mm, 12cm, "
                                  "0.12m or 4.7in (a bare number is mm). PLY, OBJ and STL are written in that unit, "
                                  "GLB in metres (glTF's unit); the .json beside each mesh says which."),
    resolution: int = shared.RESOLUTION,
    coarse: int = shared.COARSE,
    data: Path = typer.Option(None, "--data", help="The training store: measure the framing (fill, camera "
                              "distance, view size) on its views (default: the store named in the checkpoint, "
                              "where it exists; else the demo store's figures)."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write <stem>.preview.png (for a photo that "
                                 "failed too: what the mask found, and why)."),
    mask: Path = typer.Option(None, "--mask", help="The object's mask instead of finding it: an image of the "
                              "photo's size (white or opaque = object; a cut-out works); for a folder of photos, "
                              "a folder of masks named like them (<stem>.png)."),
    box: str = typer.Option(None, "--box", help="x0,y0,x1,y1: the object lies in this box of the photo (pixels); "
                            "GrabCut finds it there."),
    page: bool = typer.Option(True, "--page/--no-page", help="Write reconstruct.html: every photo of this call and "
                              "its mesh in a 3D view, one offline file."),
    page_faces: int = shared.PAGE_FACES,
    faces: int = shared.FACES,
    device: str = shared.DEVICE,
    threads: int = shared.THREADS,
    precision: str = typer.Option("fp32", help="The network's arithmetic: fp32 (float32, the default: the same "
                                  "mesh on every machine) | auto (bf16 where the hardware has it and a timed decoder "
                                  "call is faster: it moves the 0.5-level slightly, docs/EVALUATION.md) | bf16."),
) -> None:
    """Reconstruct a 3D mesh from each photo, with no camera pose needed.

    Finds the object (alpha channel, or the background colour seen at the border), frames it as the training
    views were framed, predicts the occupancy through a canonical camera and meshes it at 0.5 (coarse to
    fine). The mesh's frame is the photo's: x right, y up, z towards the viewer, centred on the object.
    Writes OUT/<stem>.ply (or --format), OUT/<stem>.json (what was used), OUT/<stem>.preview.png
    (photo | mask | network input | mesh) and OUT/reconstruct.html (this call's photos and meshes on one offline
    page, each mesh in a 3D view). Images above 50 megapixels are refused from their header (JPEGs
    are decoded at 1/2, 1/4 or 1/8 scale to fit). A file that fails does not stop the others; the command
    exits with status 1 at the end, naming them.
    """
    import json
    import sys

    import torch
    from tqdm import tqdm

    from common.atomic import atomic_write_text
    from common.cluster import default_workers
    from common.out_folder import check_out_folder
    from common.progress import bar_options
    from evaluation.mesh_page import check_page_faces, decimate
    from evaluation.render import save_png
    from inference.extract_mesh import check_grid
    from inference.mesh_io import check_formats, vertex_normals, write_mesh
    from inference.predictor import load_predictor
    from pipeline.schema.read import open_store
    from reconstruct.framing import Framing, remembered_framing
    from reconstruct.page import failed_item, page_item, write_reconstruct_page
    from reconstruct.photos import read_photo
    from reconstruct.preview import failure_preview
    from reconstruct.preview import preview as draw_preview
    from reconstruct.reconstruction import (
        RECONSTRUCT_VERSION,
        check_mesh,
        mask_warnings,
        metadata,
        parse_size,
        reconstruct_image,
        scale_to_size,
    )
    from reconstruct.segmentation import object_from_mask

    # every option is checked before anything is loaded or written
    check_formats(formats)
    size = parse_size(size_text) if size_text is not None else None
    check_grid(resolution, coarse)
    check_page_faces(page_faces)
    if faces is not None:
        check_page_faces(faces, "--faces")
    box_px = _box(box) if box else None
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {threads}")
    device = shared.resolve_device(device)
    files = _inputs(source, out)
    if mask is not None and not (mask.is_file() if source.is_file() else mask.is_dir()):
        raise FileNotFoundError(f"{mask}: --mask must be {'an image' if source.is_file() else 'a folder of masks'} "
                                f"for {source}")
    check_out_folder(out, "reconstruct")  # not a training run, an eval report or a store
    torch.set_num_threads(threads or default_workers())
    predictor = load_predictor(checkpoint, device=device, precision=precision)
    if data is None and predictor.data and Path(predictor.data, "index.json").is_file():
        data = Path(predictor.data)  # the training store named in the checkpoint, where it is still there
    framing = remembered_framing(open_store(data)) if data is not None else Framing()  # measured once a store
    out.mkdir(parents=True, exist_ok=True)

    failures: list[tuple[str, str]] = []
    items = []
    seen: dict[str, Path] = {}
    for path in tqdm(files, desc="reconstruct", unit="image", disable=len(files) < 2,
                     **bar_options(total=len(files))):
        image = result = None
        try:
            if path.stem in seen:
                raise ValueError(f"{path}: same name as {seen[path.stem].name}; its outputs would overwrite them")
            seen[path.stem] = path
            image, reduced = read_photo(path)
            found = None
            if mask is not None:
                mask_file = mask if mask.is_file() else _mask_for(mask, path)
                found = object_from_mask(image, read_photo(mask_file)[0], str(path), str(mask_file))
            result = reconstruct_image(predictor, image, framing, resolution, coarse or None, name=str(path),
                                       found=found, box=box_px)
            check_mesh(result, resolution, str(path))
            notes = mask_warnings(result)
            # the files at --faces, if asked; the preview and the page draw the full mesh (the page its own cut)
            file_v, file_f = (result.vertices, result.faces) if faces is None else \
                decimate(result.vertices, result.faces, faces)
            normals = vertex_normals(file_v, file_f)  # once for every format: --size scales uniformly
            for fmt in formats:
                vertices = file_v if size is None else scale_to_size(file_v, size.value_in(size.unit_of(fmt)))
                write_mesh(vertices, file_f, out / f"{path.stem}.{fmt}", normals)
            if preview:
                save_png(draw_preview(image, result), out / f"{path.stem}{PREVIEW_SUFFIX}")
            if page:
                items.append(page_item(path, image, result, page_faces, f"{path.stem}.{formats[0]}", notes))
            info = {"image": str(path), "checkpoint": str(predictor.path), "precision": predictor.precision,
                    "resolution": resolution,
                    "decoded_scale": 1 / reduced,  # < 1: a JPEG above MAX_PIXELS; pixel figures are of it
                    "coarse": coarse or None, "seconds": round(result.seconds, 3),
                    "size": None if size is None else size.value, "size_unit": None if size is None else size.unit,
                    "units": {fmt: "normalised" if size is None else size.unit_of(fmt) for fmt in formats},
                    "formats": list(formats), "faces_written": int(len(file_f)),
                    "version": RECONSTRUCT_VERSION, "warnings": notes,
                    **metadata(result, framing)}
            atomic_write_text(out / f"{path.stem}.json", json.dumps(info, indent=1, allow_nan=False) + "\n")
            tqdm.write(f"{path.name}: {result.seconds:.1f} s, {len(file_f)} faces -> "
                       f"{out / f'{path.stem}.{formats[0]}'}")
            for note in notes:
                tqdm.write(f"warning: {path.name}: {note} (see {path.stem}{PREVIEW_SUFFIX})", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one photo's failure is reported and the others go on
            reason = first_line(exc)
            reason = reason if str(path) in reason else f"{path}: {reason}"
            failures.append((path.name, reason))
            items.append(failed_item(path, reason))
            tqdm.write(f"error: {reason}", file=sys.stderr)
            if preview and image is not None:  # what the mask found, or the photo and why nothing was
                picture = draw_preview(image, result) if result is not None else failure_preview(image, reason)
                save_png(picture, out / f"{path.stem}{PREVIEW_SUFFIX}")
    if page and items:
        settings = {"checkpoint": str(predictor.path), "precision": predictor.precision, "resolution": resolution,
                    "coarse": coarse or None, "size": None if size is None else str(size)}
        page_path, page_bytes = write_reconstruct_page(out, items, settings, page_faces)
        typer.echo(f"wrote {page_path} ({page_bytes / 1e6:.1f} MB, meshes at <= {page_faces} faces)")
    typer.echo(f"{len(files) - len(failures)} of {len(files)} images reconstructed into {out}")
    if failures:
        names = ", ".join(name for name, _ in failures)
        raise RuntimeError(f"{len(failures)} of {len(files)} images failed: {names}")
