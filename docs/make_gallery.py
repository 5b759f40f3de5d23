"""Regenerate the README's gallery of controls on the offline shapes models.

.venv/bin/python docs/make_gallery.py      # writes docs/gallery/*.png (each 64x64, shown at 128)
.venv/bin/python docs/make_gallery.py controls zoom     # only those parts (controls, zoom, grid, samples)

Uncurated: the seeds are fixed here (0 for the controls, 0-2 for the held-out grid) and every
image is kept, failures included.
"""

from __future__ import annotations

import shutil
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
# the README images this script writes (tests/test_docs.py checks that each README image has its script)
MAKES = (
    "gallery/controls.png",
    "gallery/input_green_square.png",
    "gallery/zoom.png",
    "gallery/zoom.gif",
    "gallery/held_out_grid.png",
    "gallery/sample_grid.png",
    "gallery/story_frames.png",
)

# The shapes preset takes no steps (its start is the image): the controls that act through steps
# get them here, as a user would give them with -i.
EXAMPLES = [
    ("plain", "a red circle on a blue background", {}),
    ("negative", "a circle on a white background", {"negative": ["red"]}),
    # story mode needs steps to travel from the first phrase's picture to the second's keyframe
    (
        "story",
        "a yellow square on a black background ^ a red circle on a blue background",
        {"iterations": 60, "lr": 0.2},
    ),
    (
        "symmetry",
        "a green triangle on a white background",
        {"symmetry": "horizontal", "symmetry_weight": 50.0, "iterations": 20},
    ),
    (
        "palette",
        "a square on a background",
        {"palette": ["#e61e1e", "#fafafa"], "palette_weight": 5.0, "iterations": 20},
    ),
    ("image_prompt", "a shape", {"image_prompts": ["{square}:2"]}),
    (
        "init_image",
        "a blue background with a red circle",
        {"init_image": "{square}", "init_weight": 5.0, "iterations": 20},
    ),
    ("perlin", "a yellow circle on a black background", {"init_noise": "perlin", "iterations": 40, "lr": 0.1}),
]
# The zoom video mode: every 15 steps zoom in by 1.15 about the centre; the strip shows the frame
# at the end of each segment. (A pan pushes the world's only subject out of its 64-px frame, and
# the shapes VQGAN's encoder, which never saw a cut subject, re-encodes it as mud and specks:
# BENCHMARKS.md, "Zoom re-encodings".)
ZOOM = ("a white circle on a red background", {"zoom_scale": 1.15, "zoom_shift": [0, 0], "zoom_every": 15})


# the story's frames shown beside it: the end of the first phrase, the end of the travel to the
# second phrase's keyframe (then the final image)
STORY_FRAMES = (30, 45)
GRID_SEEDS = (0, 1, 2)
SAMPLE_SEEDS = (0, 1, 2, 3, 4, 5)


def _tile(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB").resize((128, 128), Image.NEAREST)
    return np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)), constant_values=255)


def sample_grid(tmp: Path) -> None:
    """`pixgen sample --keep 1` (the DALL-E pipeline alone: the best of --prior-samples by CLIP, no
    steps) on the 10 held-out prompts (rows) x 6 seeds (columns)."""
    from pixgen.apps.sample import sample_images

    rows = []
    for combo in world.HELD_OUT:
        row = []
        for seed in SAMPLE_SEEDS:
            s = load_settings(preset="shapes", overrides=dict(prompt=combo.caption(0), seed=seed, output_dir=str(tmp)))
            row.append(_tile(sample_images(s, keep=1).images[0]))
        rows.append(np.concatenate(row, 1))
        print(f"sample grid: {combo.caption(0)!r} seeds {SAMPLE_SEEDS}")
    Image.fromarray(np.concatenate(rows, 0)).save(OUT / "sample_grid.png")


def held_out_grid(tmp: Path) -> None:
    """The 10 held-out prompts (rows) x 3 seeds (columns) at the plain shapes preset."""
    rows = []
    for combo in world.HELD_OUT:
        row = []
        for seed in GRID_SEEDS:
            s = load_settings(
                preset="shapes",
                overrides=dict(prompt=combo.caption(0), seed=seed, output_dir=str(tmp), gif=False, save_every=0),
            )
            row.append(_tile(api.generate(s).image))
        rows.append(np.concatenate(row, 1))
        print(f"grid: {combo.caption(0)!r} seeds {GRID_SEEDS}")
    Image.fromarray(np.concatenate(rows, 0)).save(OUT / "held_out_grid.png")


def controls(tmp: Path, square: Path) -> None:
    """The eight controls, one image each, and their sheet."""
    for name, prompt, extra in EXAMPLES:
        extra = {
            k: (
                [v.format(square=square) for v in val]
                if isinstance(val, list)
                else val.format(square=square)
                if isinstance(val, str)
                else val
            )
            for k, val in extra.items()
        }
        s = load_settings(
            preset="shapes",
            overrides=dict(prompt=prompt, seed=0, output_dir=str(tmp), gif=False, save_every=0, **extra),
        )
        frames = {}

        def keep(step, total, frames=frames):
            if step.i in STORY_FRAMES:
                frames[step.i] = Image.fromarray(step.image[0].permute(1, 2, 0).mul(255).round().byte().numpy())

        image = Image.open(api.generate(s, hooks=api.Hooks(on_step=keep) if name == "story" else None).image)
        image.resize((128, 128), Image.NEAREST).save(OUT / f"{name}.png")
        if frames:
            strip = [frames[i] for i in STORY_FRAMES] + [image]
            row = np.concatenate([np.asarray(f.convert("RGB").resize((128, 128), Image.NEAREST)) for f in strip], 1)
            Image.fromarray(row).save(OUT / "story_frames.png")
        print(f"{name}: {prompt!r} {extra}")
    sheet = np.concatenate([np.asarray(Image.open(OUT / f"{n}.png").convert("RGB")) for n, _, _ in EXAMPLES], 1)
    Image.fromarray(sheet).save(OUT / "controls.png")


def zoom(tmp: Path) -> None:
    """The zoom/pan video mode's strip and GIF."""
    prompt, extra = ZOOM
    s = load_settings(
        preset="shapes",
        overrides=dict(prompt=prompt, seed=0, output_dir=str(tmp), iterations=90, save_every=15, fps=4, **extra),
    )
    run = api.generate(s).run_dir
    frames = sorted((run / "frames").glob("*.png"))
    strip = np.concatenate(
        [np.asarray(Image.open(f).convert("RGB").resize((128, 128), Image.NEAREST)) for f in frames], 1
    )
    Image.fromarray(strip).save(OUT / "zoom.png")
    shutil.copyfile(run / "progress.gif", OUT / "zoom.gif")
    print(f"zoom: {prompt!r} {extra}, {len(frames)} frames")


PARTS = ("controls", "zoom", "grid", "samples")


def main(parts: list[str]) -> None:
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    parts = parts or list(PARTS)
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-gallery-"))
    square = tmp / "green_square.png"
    Image.fromarray(world.render(world.Combo("square", "green", "white"), 32, 32, 36)).save(square)
    shutil.copyfile(square, OUT / "input_green_square.png")
    if "controls" in parts:
        controls(tmp, square)
    if "zoom" in parts:
        zoom(tmp)
    if "grid" in parts:
        held_out_grid(tmp)
    if "samples" in parts:
        sample_grid(tmp)


if __name__ == "__main__":
    main(sys.argv[1:])
