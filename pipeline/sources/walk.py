"""Walking a dataset's folders: what the folder, step_folder, ShapeNet and IM-NET sources share (so no source
imports another for it).

A source root is untrusted: a category may be a symlink to `/`, a folder may not be listable (`/proc/1/cwd`), a
file may be a FIFO or a link to `/dev/zero`. The walk never follows a symlinked folder out of the root (a
symlinked category inside it is followed, symlinked folders below a category never, as pathlib's rglob did),
leaves out folders it cannot list with one warning naming them, takes only regular files, and lists a file it
cannot inspect so that it fails alone, named, when it is read.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Collection
from pathlib import Path

from pipeline.sources.spec import ObjectSpec, make_object_id

log = logging.getLogger(__name__)


def resolve_root(root: str, manifest_dir: Path) -> Path:
    """A manifest's root: `~` expanded, relative paths taken from the manifest's folder."""
    path = Path(root).expanduser()
    return path if path.is_absolute() else (manifest_dir / path).resolve()


class FolderWalk:
    """One walk of a source root; what it left out is logged once by report()."""

    def __init__(self, root: Path):
        self.root = root
        self.real_root = os.path.realpath(root)
        self.outside: list[str] = []
        self.unlisted: list[str] = []

    def entries(self, folder: Path | str) -> list[os.DirEntry]:
        """The entries of a folder, sorted by name; none (and noted) when it cannot be listed."""
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.unlisted.append(f"{folder} ({exc.strerror or exc})")
            return []

    def categories(self) -> list[Path]:
        """The root's category folders (not hidden): real folders, and symlinks to folders inside the root."""
        out = []
        for entry in self.entries(self.root):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not target.startswith(self.real_root.rstrip(os.sep) + os.sep):
                        self.outside.append(f"{entry.path} -> {target}")
                        continue
                    if os.path.isdir(target):
                        out.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    out.append(Path(entry.path))
            except OSError as exc:
                self.unlisted.append(f"{entry.path} ({exc.strerror or exc})")
        return out

    def loose_files(self, suffixes: Collection[str]) -> list[str]:
        """Names of files with one of `suffixes` directly in the root."""
        return [e.name for e in self.entries(self.root) if Path(e.name).suffix.lower() in suffixes and _file(e)]

    def files(self, folder: Path, suffixes: Collection[str]) -> list[Path]:
        """Regular files (or symlinks to them) with one of `suffixes` anywhere below `folder`, sorted; symlinked
        folders are not entered. A file whose type cannot be read is kept: reading it fails it, named."""
        found, stack = [], [folder]
        while stack:
            for entry in self.entries(stack.pop()):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif Path(entry.name).suffix.lower() in suffixes and _file(entry):
                    found.append(Path(entry.path))
        return sorted(found)

    def report(self) -> None:
        """One warning per kind of folder left out, naming the first few."""
        for items, what in ((self.outside, "symlinked folder(s) that lead out of the source root, not followed"),
                            (self.unlisted, "folder(s) that cannot be listed")):
            if items:
                more = f" and {len(items) - 3} more" if len(items) > 3 else ""
                log.warning("%s: left out %d %s: %s%s", self.root, len(items), what, "; ".join(items[:3]), more)


def _file(entry: os.DirEntry) -> bool:
    """A regular file, following a symlink (a FIFO, a device or a dangling or looping link is not one); True
    where the kernel refuses to say, so the file is listed and fails alone when it is read."""
    try:
        return entry.is_file()
    except PermissionError:
        return True
    except OSError:
        return False


def walk_categories(root: Path, suffixes: Collection[str], wanted: set[str], extras: str = "") -> list[ObjectSpec]:
    """Files with one of `suffixes` under root/<category>/**, as objects `<category>-<relative path>` (FolderWalk
    says what is followed and what is left out, and logs it).

    Category names are compared and stored in Unicode NFC, so a folder named on macOS (decomposed) is the
    category a manifest or a Linux copy spells."""
    walk = FolderWalk(root)
    wanted = {unicodedata.normalize("NFC", w) for w in wanted}
    specs = []
    for cat_dir in walk.categories():
        category = unicodedata.normalize("NFC", cat_dir.name)
        if wanted and category not in wanted:
            continue
        for path in walk.files(cat_dir, suffixes):
            rel = path.relative_to(cat_dir).with_suffix("")
            specs.append(ObjectSpec(make_object_id(category, *rel.parts), category, str(path), extras))
    walk.report()
    return specs
