"""An object as a source lists it (ObjectSpec), its id made from file and folder names (the grammar of
pipeline.schema.layout), and the source's extras as the JSON text that travels with it (module docstring of
pipeline.sources)."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.schema.layout import is_id_char  # the id grammar is part of the store's contract (a reader checks it)


@dataclass(frozen=True)
class ObjectSpec:
    """One object as a source lists it, before a split is assigned."""

    object_id: str
    category: str
    source: str
    extras: str = ""
    """JSON object of source-provided inputs beyond the mesh file (pipeline.sources, module docstring); "" for none"""


class SourceError(ValueError):
    """A manifest source that cannot be read (missing root, bad pattern, failed download)."""


_ID_RUNS = re.compile("\0+")


def make_object_id(*parts: str) -> str:
    """A file-name-safe object id from its parts (category, relative path...), joined by '-'.

    Each part is put in Unicode NFC first (macOS spells file names decomposed, Linux as written: one id for
    both); runs of other characters become one '_', and '_' is stripped from the ends of each part. An ASCII
    name gives the same id as before Unicode letters were kept."""
    out = []
    for p in parts:
        if p:
            kept = "".join(c if is_id_char(c) else "\0" for c in unicodedata.normalize("NFC", p))
            out.append(_ID_RUNS.sub("_", kept).strip("_"))
    return "-".join(out)


def suffix_colliding_ids(specs: list[ObjectSpec]) -> list[ObjectSpec]:
    """Files of one source whose ids are equal but whose suffixes differ (`part.obj` and `part.stl`: a robot
    package's visual and collision meshes side by side) get their lower-case suffix appended, `cat-part_obj`
    and `cat-part_stl`; every other id is left as it is. Ids still equal after this are refused by the manifest."""
    suffixes: dict[str, set[str]] = {}
    for s in specs:
        suffixes.setdefault(s.object_id, set()).add(Path(s.source).suffix.lower())
    return [replace(s, object_id=f"{s.object_id}_{Path(s.source).suffix.lower().lstrip('.')}")
            if len(suffixes[s.object_id]) > 1 else s for s in specs]


def encode_extras(extras: dict[str, Any]) -> str:
    """The canonical JSON text of a source's extras (sorted keys, so equal extras hash equally)."""
    return json.dumps(extras, sort_keys=True) if extras else ""


def decode_extras(extras: str) -> dict[str, Any]:
    return json.loads(extras) if extras else {}
