"""What the keys of a manifest's [[sources]] table must hold: each source module declares its keys (SOURCE_KEYS,
type -> key -> Key) with these, and pipeline.sources.check_source checks a table against them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Key:
    """What one key of a [[sources]] table must hold: `what` is said in the error, `ok` tests a value."""

    what: str
    ok: Callable[[Any], bool]
    required: bool = False


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(_text(x) for x in v)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


TEXT = Key("a non-empty string", _text)
TEXTS = Key("a list of non-empty strings", _texts)
TEXT_OR_TEXTS = Key("a string or a list of strings", lambda v: _text(v) or (_texts(v) and v != []))
FLAG = Key("true or false", lambda v: isinstance(v, bool))


def needed(key: Key, purpose: str) -> Key:
    """The same key, required; `purpose` (what the value is for) is said after its type."""
    return replace(key, what=f"{key.what} ({purpose})", required=True)


def number_in(lo: float, hi: float, lo_open: bool = True, hi_open: bool = False, what: str = "") -> Key:
    """A number in the interval lo..hi (open or closed at each end), e.g. (0, 0.1)."""
    text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}{' ' + what if what else ''}"
    return Key(text, lambda v: _number(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi))
