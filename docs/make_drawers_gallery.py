"""Regenerate the README's drawer gallery on the offline shapes models.

.venv/bin/python docs/make_drawers_gallery.py   # writes docs/gallery/drawers.png and tile.png
.venv/bin/python docs/make_drawers_gallery.py --tile-only

Uncurated: one row per drawer, the 10 held-out prompts (in the order of `world.HELD_OUT`) at
seed 0, every image kept, failures included; then one seamless tile shown 2x2.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen import api  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402

OUT = Path(__file__).resolve().parent / "gallery"
MAKES = ("gallery/drawers.png", "gallery/tile.png")  # the README images this script writes
# `--preset shapes --drawer X` and nothing else: every drawer starts from the prior's best sample,
# with the preset's own settings for that drawer (issue 29; BENCHMARKS.md, "Drawers from the prior start").
ROWS = {"pixel": {"drawer": "pixel"}, "fft": {"drawer": "fft"}, "lines": {"drawer": "lines"}}
TILE = ("a yellow circle on a black background", {"drawer": "fft", "tile": True, "init": "tokens", "iterations": 100})
SEED = 0


def draw(tmp: Path, prompt: str, extra: dict) -> np.ndarray:
    overrides = dict(prompt=prompt, seed=SEED, output_dir=str(tmp), gif=False, save_every=0, threads=1)
    overrides.update(extra)
    image = Image.open(api.generate(load_settings(preset="shapes", overrides=overrides)).image).convert("RGB")
    return np.asarray(image)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-drawers-gallery-"))
    if "--tile-only" not in sys.argv:
        rows_image(tmp)
    tile = draw(tmp, *TILE)
    tiled = Image.fromarray(np.tile(tile, (2, 2, 1)))
    tiled.resize((tiled.width * 2, tiled.height * 2), Image.NEAREST).save(OUT / "tile.png", optimize=True)
    print(f"tile: {TILE}")


def rows_image(tmp: Path) -> None:
    """One row per drawer: the held-out prompts at seed 0."""
    rows = []
    for name, extra in ROWS.items():
        row = [np.pad(draw(tmp, c.caption(0), extra), ((2, 2), (2, 2), (0, 0)), constant_values=255)
               for c in world.HELD_OUT]  # fmt: skip
        rows.append(np.concatenate(row, 1))
        print(f"{name}: {extra}")
    grid = Image.fromarray(np.concatenate(rows, 0))
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(OUT / "drawers.png", optimize=True)


if __name__ == "__main__":
    main()
