"""How a setting is declared: `setting()` (a dataclass field with its help, flag, choices, range,
text form and help panel), the help panels in their order, and the bounds drawers share.

A leaf: it imports nothing of pixgen, so pixgen.settings and the drawers (pixgen.drawers, which
declare their own settings) both declare through it without importing each other.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

MAX_SIDE = 8192  # the longest side of an image, in pixels
MAX_STEPS = 1_000_000  # iterations, and every "every N steps" setting
FLOAT32_TINY = 1.1754943508222875e-38  # float32's smallest normal number: below it, float32 maths round to 0

# The help panels of `pixgen generate --help`, in the order they are shown; each setting names its
# own. Options that are not settings (--preset, --json...) pick one in pixgen.cli.options.
PROMPTS = "Prompts"
SIZE = "Size and steps"
DRAWER = "Drawer"
MODELS = "Models"
CUTOUTS = "Cutouts and augmentation"
OPTIMISER = "Optimiser"
REGULARISERS = "Regularisers"
INIT = "Init"
VIDEO = "Video and zoom"
OUTPUT = "Output"
PERFORMANCE = "Performance"
PANELS = (PROMPTS, SIZE, DRAWER, MODELS, CUTOUTS, OPTIMISER, REGULARISERS, INIT, VIDEO, OUTPUT, PERFORMANCE)


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    lo: float | None = None,
    hi: float | None = None,
    open_lo: bool = False,
    open_hi: bool = False,
    max_items: int | None = None,
    text: str | None = None,
    panel: str | None = None,
    cli: bool = True,
    infinite: bool = False,
    float32: bool = False,
) -> Any:
    """A Settings field with its metadata: `help`, the CLI `flag` (default --name-with-dashes)
    and `short` alias, `choices`, the range `lo`..`hi` (exclusive where `open_*`), `max_items`,
    the longest a list may be, `text`, the form a string value is read in (size, csv, pair, one)
    from flags, YAML or --set, and `panel`, the section of PANELS its flag is listed under in the help.
    A number is finite (NaN never is a value): `infinite` lets it be +-inf; `float32`, used in float32
    maths, refuses a value that rounds to 0 there (nonzero, below FLOAT32_TINY in magnitude)."""
    meta = dict(help=help, flag=flag, short=short, metavar=metavar, choices=choices, lo=lo, hi=hi)
    meta.update(open_lo=open_lo, open_hi=open_hi, max_items=max_items, text=text, panel=panel, cli=cli)
    meta.update(infinite=infinite, float32=float32)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
