"""Make the README's sweep grid and variations with the commands the README shows.

.venv/bin/python docs/make_sweeps.py      # writes docs/gallery/sweep_grid.png and docs/gallery/variations.png

Uncurated: `pixgen grid` on the shapes preset over seeds 0-3 and three drawers (grid.png as the
command writes it), then `pixgen vary` of the seed-0 vqgan cell at strength 0.8 (its prior start
redraws the last 80% of the code grid), the source first.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MAKES = ("gallery/sweep_grid.png", "gallery/variations.png")
OUT = Path(__file__).resolve().parent / "gallery"
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on a blue background"
GRID = ["grid", PROMPT, "--preset", "shapes", "--x", "seed=0..3", "--y", "drawer=vqgan,pixel,fft"]
VARY = ["vary", "SOURCE", "--strength", "0.8", "-n", "3"]


def pixgen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pixgen", *args], check=True, cwd=ROOT)


def strip(paths: list[Path], labels: list[str], side: int = 128) -> Image.Image:
    """The images side by side at `side` pixels, each with its label above."""
    font = ImageFont.load_default(size=14)
    sheet = Image.new("RGB", (len(paths) * (side + 6) + 6, side + 30), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (path, label) in enumerate(zip(paths, labels, strict=True)):
        x = 6 + i * (side + 6)
        draw.text((x, 6), label, fill="black", font=font)
        with Image.open(path) as im:
            sheet.paste(im.convert("RGB").resize((side, side), Image.NEAREST), (x, 26))
    return sheet


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pixgen-sweeps-") as tmp:
        grid = Path(tmp) / "grid"
        pixgen(*GRID, "-o", str(grid))
        OUT.mkdir(exist_ok=True)
        (OUT / "sweep_grid.png").write_bytes((grid / "grid.png").read_bytes())
        source = next((grid / "cells").glob("0001-*")) / "final.png"
        vary = Path(tmp) / "vary"
        pixgen(*[str(source) if a == "SOURCE" else a for a in VARY], "-o", str(vary))
        made = sorted(vary.glob("*/variation-*/final.png"))
        labels = ["source"] + [f"variation {i}" for i in range(1, len(made) + 1)]
        strip([source, *made], labels).save(OUT / "variations.png")
    print(f"wrote {OUT / 'sweep_grid.png'} and {OUT / 'variations.png'}")


if __name__ == "__main__":
    main()
