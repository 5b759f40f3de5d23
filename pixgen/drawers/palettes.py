"""Named colour palettes for `--palette`, and reading a palette setting (a name or colours).
No torch: settings validation reads these."""

from __future__ import annotations

import re

from pixgen.errors import PixgenError

# The classic palettes, as their platforms or authors publish them.
NAMED = {
    # the original Game Boy's four greens, darkest first
    "gameboy": ["#0f380f", "#306230", "#8bac0f", "#9bbc0f"],
    # PICO-8's fixed 16 colours, in its own order
    "pico-8": [
        "#000000",
        "#1d2b53",
        "#7e2553",
        "#008751",
        "#ab5236",
        "#5f574f",
        "#c2c3c7",
        "#fff1e8",
        "#ff004d",
        "#ffa300",
        "#ffec27",
        "#00e436",
        "#29adff",
        "#83769c",
        "#ff77a8",
        "#ffccaa",
    ],  # fmt: skip
    # the Commodore 64's 16 colours (Philip Timmermann's "Pepto" measurement)
    "c64": [
        "#000000",
        "#ffffff",
        "#68372b",
        "#70a4b2",
        "#6f3d86",
        "#588d43",
        "#352879",
        "#b8c76f",
        "#6f4f25",
        "#433900",
        "#9a6759",
        "#444444",
        "#6c6c6c",
        "#9ad284",
        "#6c5eb5",
        "#959595",
    ],  # fmt: skip
}
for _n in (2, 4, 8, 16):  # evenly spaced grey ramps, black to white
    NAMED[f"grayscale-{_n}"] = ["#" + f"{round(255 * i / (_n - 1)):02x}" * 3 for i in range(_n)]


def parse_colour(text: str) -> tuple[float, float, float] | None:
    """``"#ff0000"`` or ``"f00"`` -> an RGB triple in [0, 1]; None if it is not a colour."""
    h = str(text).strip().lstrip("#")
    if len(h) == 3:
        h = "".join(ch * 2 for ch in h)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", h):
        return None
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))


def palette_colours(entries: list[str]) -> list[tuple[float, float, float]]:
    """A palette setting -> RGB triples in [0, 1]: colours, or one named palette (NAMED). A bad
    colour or an unknown name is a PixgenError naming the setting."""
    if len(entries) == 1 and str(entries[0]).strip().lower() in NAMED:
        entries = NAMED[str(entries[0]).strip().lower()]
    out = []
    for c in entries:
        rgb = parse_colour(c)
        if rgb is None and len(entries) == 1 and not str(c).strip().startswith("#"):
            names = ", ".join(NAMED)
            raise PixgenError(f"setting 'palette': unknown palette {c!r} (named: {names}; or colours #rrggbb,...)")
        if rgb is None:
            raise PixgenError(f"setting 'palette': bad colour {c!r} (use #rrggbb or #rgb)")
        out.append(rgb)
    return out
