"""Regenerate the README's composition grid on the offline shapes models.

.venv/bin/python docs/make_composition.py   # writes docs/gallery/composition.png

Uncurated: each row a region prompt at `--preset shapes` and nothing else, seeds 0, 1 and 2,
every image kept, failures included. Two two-object scenes of held-out combinations
(pixgen.shapes.world.HELD_OUT: the world holds out two per background at most), and two
four-quadrant scenes, each holding those two and two training combinations on the same background.
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

OUT = Path(__file__).resolve().parent / "gallery"
MAKES = ("gallery/composition.png",)  # the README image this script writes
PROMPTS = (
    "a green circle on a white background @left | a blue triangle on a white background @right",
    "a blue square on a black background @top | a yellow circle on a black background @bottom",
    "a green circle on a white background @top-left | a blue triangle on a white background @top-right"
    " | a red square on a white background @bottom-left | a black circle on a white background @bottom-right",
    "a yellow circle on a black background @top-left | a blue square on a black background @top-right"
    " | a white triangle on a black background @bottom-left | a red circle on a black background @bottom-right",
)
SEEDS = (0, 1, 2)


def draw(tmp: Path, prompt: str, seed: int) -> np.ndarray:
    overrides = dict(prompt=prompt, seed=seed, output_dir=str(tmp), gif=False, save_every=0, threads=1)
    image = Image.open(api.generate(load_settings(preset="shapes", overrides=overrides)).image).convert("RGB")
    return np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)), constant_values=255)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-composition-"))
    rows = [np.concatenate([draw(tmp, prompt, seed) for seed in SEEDS], 1) for prompt in PROMPTS]
    grid = Image.fromarray(np.concatenate(rows, 0))
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(OUT / "composition.png", optimize=True)
    for prompt in PROMPTS:
        print(prompt)


if __name__ == "__main__":
    main()
