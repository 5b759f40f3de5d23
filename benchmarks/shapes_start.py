"""Why the shapes preset composes its start, and what the start and a step cost.

1. Flat latents and plain images through the shapes VQGAN: every codebook entry decoded as a
   latent of that one code at the run's size (64x64), and the mean colour's RGB distance to the
   nearest world colour; then the plain background of each held-out prompt encoded and decoded.
2. Time (2 threads by default): composing the start (`--init composed`) and one step of the
   preset, median over the first --prompts held-out prompts (models loaded once, as warm runs).

    .venv/bin/python benchmarks/shapes_start.py            # the figures in BENCHMARKS.md and CARD.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen import api  # noqa: E402
from pixgen.loop.ops import codes_to_latent, quantize_st  # noqa: E402
from pixgen.models.loading import load_encoder, load_models  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402
from pixgen.shapes.judge import _PALETTE  # noqa: E402


@torch.no_grad()
def flat_codes(decoder) -> None:
    n = decoder.codebook.shape[0]
    means = []
    for part in torch.arange(n).split(64):
        codes = part[:, None, None].expand(-1, 8, 8)
        images = decoder(codes_to_latent(codes, decoder.codebook)).add(1).div(2).clamp(0, 1)
        means.append(images.mean((2, 3)) * 255)
    mean = torch.cat(means).numpy()
    dist = np.sqrt(((mean[:, None] - _PALETTE) ** 2).sum(-1).min(1))
    print(
        f"flat codes: {int((dist > 60).sum())} of {n} further than 60 RGB from every world colour, "
        f"median distance {np.median(dist):.0f}"
    )


@torch.no_grad()
def plain_images(decoder, encoder) -> None:
    for combo in world.HELD_OUT[:5]:
        plain = torch.tensor(world.COLOURS[combo.background], dtype=torch.float32).view(1, 3, 1, 1) / 255
        plain = plain.expand(1, 3, 64, 64)
        out = decoder(quantize_st(encoder(plain * 2 - 1), decoder.codebook)).add(1).div(2).clamp(0, 1)
        back = [round(v) for v in (out.mean((2, 3))[0] * 255).tolist()]
        mse = float(((out - plain) ** 2).mean())
        print(f"plain {combo.background:>6}: encoded and decoded, mean colour {back}, MSE {mse:.3f}")


def timing(models, prompts: int) -> None:
    starts, steps = [], []
    for i, combo in enumerate(world.HELD_OUT[:prompts]):
        s = load_settings(preset="shapes", overrides=dict(prompt=combo.caption(0), seed=i))
        t0 = time.perf_counter()
        loop = api.make_loop(api.prepare(s, models))
        t1 = time.perf_counter()
        for _ in loop.run(10):
            pass
        starts.append(t1 - t0)
        steps.append((time.perf_counter() - t1) / 10)
    print(
        f"composed start {statistics.median(starts):.2f} s, a step {statistics.median(steps):.3f} s "
        f"(medians of {prompts} prompts, {torch.get_num_threads()} threads)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    models = load_models("shapes", ["shapes", "shapes-b"], torch.device("cpu"))
    flat_codes(models.decoder)
    plain_images(models.decoder, load_encoder("shapes"))
    timing(models, a.prompts)


if __name__ == "__main__":
    main()
