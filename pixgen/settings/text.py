"""Settings as typed on a command line or in YAML: sizes ("256x192"), comma lists, pairs, and the
flag, default and placeholder each setting shows in the help."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pixgen.errors import PixgenError
from pixgen.settings.fields import FIELDS


def parse_size(text: str) -> list[int]:
    """``"256x192"`` -> [256, 192]; ``"256"`` -> [256, 256]."""
    m = re.fullmatch(r"\s*(-?\d+)\s*(?:[xX,]\s*(-?\d+))?\s*", str(text))
    if not m:
        raise PixgenError(f"size: expected WIDTHxHEIGHT such as 256x256, got {text!r}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) is not None else w
    return [w, h]


def _parse_pair(text: str, key: str) -> list[float]:
    try:
        pair = [float(p) for p in str(text).split(",")]
    except ValueError:
        pair = []
    if len(pair) != 2:
        raise PixgenError(f"setting {key!r} ({flag_of(key)}) expects X,Y numbers such as 2,-1, got {text!r}")
    return pair


def from_text(key: str, value: Any) -> Any:
    """A setting's value as given in text (a flag, --set, YAML) in its declared form:
    size "256x192", csv "a,b", pair "2,-1", or one string for a list."""
    form = FIELDS[key].metadata["text"] if key in FIELDS else None
    if form == "size" and isinstance(value, str | int) and not isinstance(value, bool):
        return parse_size(str(value))
    if not isinstance(value, str):
        return value
    if form == "csv":
        return [v.strip() for v in value.split(",") if v.strip()]
    if form == "pair":
        return _parse_pair(value, key)
    if form == "one":
        return [value]
    return value


def flag_of(key: str) -> str:
    """The long CLI flag of a setting."""
    return FIELDS[key].metadata["flag"] or "--" + key.replace("_", "-")


def default_text(key: str) -> str | None:
    """A setting's default as it would be typed on the command line (256x256, 0.1, a,b,c; gif or
    no-gif for a switch), for the help; None when there is none (None or an empty list)."""
    f = FIELDS[key]
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is None or value == []:
        return None
    if isinstance(value, bool):
        return flag_of(key)[2:] if value else "no-" + flag_of(key)[2:]
    if isinstance(value, float):
        return f"{value:g}"
    if not isinstance(value, list):
        return str(value)
    parts = [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
    return {"size": "x", "one": " "}.get(f.metadata["text"], ",").join(parts)


def metavar_of(key: str) -> str | None:
    """The placeholder of a setting's value in the help: its declared metavar, else its choices
    as [a|b|c]; None leaves the type's own (<int>, <float>...)."""
    meta = FIELDS[key].metadata
    if meta["metavar"] or not meta["choices"]:
        return meta["metavar"]
    return "[" + "|".join(meta["choices"]) + "]"
