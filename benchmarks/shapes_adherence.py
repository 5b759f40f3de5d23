"""Prompt adherence on the shapes world, graded by the independent pixel judge.

For every held-out (shape, colour, background) combination and several seeds, generate one
image with the shapes preset and read it back with the judge. Baselines in the same run: the
judge on freshly rendered world images (is the judge right?), and the untouched initial image
of each run (what does the optimisation buy?).

    .venv/bin/python benchmarks/shapes_adherence.py [--seeds 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.api import generate  # noqa: E402
from pixgen.device import seed_everything  # noqa: E402
from pixgen.models import load_models  # noqa: E402
from pixgen.optimise import init_latent, render  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402
from pixgen.shapes.judge import judge  # noqa: E402

FIELDS = ("background", "colour", "shape")


def grade(image: np.ndarray, combo: world.Combo) -> dict[str, bool]:
    got = judge(image)
    marks = {f: getattr(got, f) == getattr(combo, f) for f in FIELDS}
    marks["colours"] = marks["background"] and marks["colour"]
    marks["all"] = all(marks[f] for f in FIELDS)
    return marks


def rates(marks: list[dict]) -> dict[str, float]:
    return {k: 100 * sum(m[k] for m in marks) / len(marks) for k in marks[0]}


def to_array(t: torch.Tensor) -> np.ndarray:
    return (t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("--template", type=int, default=0, help="caption template for the prompt")
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    base = load_settings(preset="shapes", overrides={"prompt": "x", "gif": False, "save_every": 0}, sets=a.sets)
    models = load_models(base.vqgan, base.clip, torch.device("cpu"))
    rng = np.random.default_rng(123)
    judge_marks = [grade(world.sample(rng, c), c) for c in world.ALL_COMBOS for _ in range(5)]
    gen_marks, init_marks, seconds = [], [], []
    out = Path(tempfile.mkdtemp(prefix="pixgen-adherence-"))
    for combo in world.HELD_OUT:
        for seed in range(a.seeds):
            s = load_settings(
                preset="shapes",
                overrides={
                    "prompt": combo.caption(a.template),
                    "seed": seed,
                    "output_dir": str(out),
                    "gif": False,
                    "save_every": 0,
                },
                sets=a.sets,
            )
            t0 = time.perf_counter()
            result = generate(s, models=models)
            seconds.append(time.perf_counter() - t0)
            from PIL import Image

            gen_marks.append(grade(np.asarray(Image.open(result.image).convert("RGB")), combo))
            g = seed_everything(seed)
            with torch.no_grad():
                z0 = init_latent(models.decoder, s.size[0], s.size[1], g, s.init)
                init_marks.append(grade(to_array(render(models.decoder, z0)), combo))
    print(f"settings: preset shapes {' '.join(a.sets)}; {len(world.HELD_OUT)} held-out prompts x {a.seeds} seeds")
    print("| images | background | shape colour | both colours | shape | all three |")
    print("|---|---|---|---|---|---|")
    for label, marks in (
        ("judge on rendered world images", judge_marks),
        ("generated (held-out prompts)", gen_marks),
        ("initial image, no optimisation", init_marks),
    ):
        r = rates(marks)
        print(
            f"| {label} (n={len(marks)}) | {r['background']:.0f}% | {r['colour']:.0f}% | {r['colours']:.0f}% | "
            f"{r['shape']:.0f}% | {r['all']:.0f}% |"
        )
    print(f"median seconds per image: {statistics.median(seconds):.2f} (torch threads {torch.get_num_threads()})")
    print(f"images in {out}")


if __name__ == "__main__":
    main()
