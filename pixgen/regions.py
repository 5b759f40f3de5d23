"""The region syntax of prompts, ``"a red house @left | a lake @bottom:0.5"``: named regions and
boxes ``@x0,y0,x1,y1`` in fractions of the image, read from a prompt part's end. A leaf (no torch,
no settings): the prompt plan (pixgen.loop.prompts) parses with it, and the settings' layers ask
`has_regions` of a prompt (a preset's `regions:` entries apply to a prompt with regions)."""

from __future__ import annotations

import difflib
import re

from pixgen.errors import PixgenError

_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in fractions of the image's width and height

# named regions, as boxes
REGIONS: dict[str, Box] = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "center": (0.25, 0.25, 0.75, 0.75),
    "centre": (0.25, 0.25, 0.75, 0.75),
    "top-left": (0.0, 0.0, 0.5, 0.5),
    "top-right": (0.5, 0.0, 1.0, 0.5),
    "bottom-left": (0.0, 0.5, 0.5, 1.0),
    "bottom-right": (0.5, 0.5, 1.0, 1.0),
}
# "text @region" at the end of a part, before its ":weight:stop" (region: no space, colon or @)
_AT_REGION = re.compile(r"^(?:(?P<text>.*\S)\s+)?@(?P<region>[^\s:@]+)\s*(?P<numbers>(:[^:]*){0,2})$", re.S)
_BOX_LIKE = re.compile(r"^[-+0-9.,eE]+$")


def is_number(s: str) -> bool:
    return bool(_NUMBER.match(s))


def pixel_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box in fractions -> whole pixels (x0, y0, x1, y1) of a width x height image, at least one
    pixel each way."""
    x0, y0 = round(box[0] * width), round(box[1] * height)
    return x0, y0, max(x0 + 1, round(box[2] * width)), max(y0 + 1, round(box[3] * height))


def parse_region(word: str, spec: str) -> Box | None:
    """The box of a region word (what follows "@"): a named region or ``x0,y0,x1,y1``. None when the
    word is neither and was not meant as one ("@home"); a PixgenError when it clearly was: a
    misspelt name (with the close name), or a box with the wrong count of numbers or out of 0-1,
    empty or inverted."""
    name = word.lower()
    if name in REGIONS:
        return REGIONS[name]
    if (_BOX_LIKE.match(word) and "," in word) or word.count(",") == 3:
        return _parse_box(word, spec)
    close = difflib.get_close_matches(name, REGIONS, n=1, cutoff=0.75)
    if close:
        raise PixgenError(f"prompt {spec.strip()!r}: unknown region @{word}; did you mean @{close[0]}?")
    return None


def _parse_box(word: str, spec: str) -> Box:
    parts = word.split(",")
    if len(parts) != 4 or not all(is_number(p) for p in parts):
        raise PixgenError(f"prompt {spec.strip()!r}: a region box is @x0,y0,x1,y1 (four numbers 0-1), got @{word}")
    x0, y0, x1, y1 = (float(p) for p in parts)
    if not all(0 <= v <= 1 for v in (x0, y0, x1, y1)):
        raise PixgenError(f"prompt {spec.strip()!r}: region box @{word} is outside 0-1 (fractions of the image)")
    if x1 <= x0 or y1 <= y0:
        raise PixgenError(f"prompt {spec.strip()!r}: region box @{word} is empty or inverted (needs x0 < x1, y0 < y1)")
    return (x0, y0, x1, y1)


def split_region(spec: str) -> tuple[str, Box | None, list[str]]:
    """``"a lake @bottom:0.5"`` -> ("a lake", bottom's box, ["0.5"]): the text, the region and the
    numbers after it; a part without a region is (spec, None, [])."""
    found = _AT_REGION.match(spec)
    numbers = found["numbers"].split(":")[1:] if found else []
    if not found or not all(is_number(n) for n in numbers):
        return spec, None, []
    box = parse_region(found["region"], spec)
    if box is None:
        return spec, None, []
    return (found["text"] or "").strip(), box, numbers


def in_order(regions) -> list[Box | None]:
    """The distinct regions of `regions` in one fixed order: None (the whole image) first, then
    the boxes by their coordinates (the order a step's cutouts are shared out in)."""
    return sorted(set(regions), key=lambda r: (r is not None, r or ()))


def has_regions(prompt: str) -> bool:
    """Whether any part of any story phrase of `prompt` says where it goes (``@left``...). A bad
    region is the PixgenError the prompt plan would raise."""
    return any(split_region(part)[1] is not None for phrase in str(prompt).split("^") for part in phrase.split("|"))
