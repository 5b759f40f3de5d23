"""Fused (flash) against plain (math) attention for CLIP's image tower on the CPU: seconds for
one forward and backward over a batch of cutouts, alternating the two, each timed twice.

    .venv/bin/python benchmarks/attention_backend.py --clip shapes --cutn 32 --threads 2
    .venv/bin/python benchmarks/attention_backend.py --clip ViT-B-32 --cutn 16 --threads 2

`shapes` is the shipped shapes CLIP; any other name builds that open_clip architecture with
random weights (same shapes and compute as the pretrained model).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="shapes")
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.clip in ("shapes", "shapes-b"):
        from pixgen.models.loading import load_scorer

        scorer = load_scorer(a.clip)
    else:
        from pixgen.models.scorer import build_clip

        scorer = build_clip(a.clip, seed=0)
    x = torch.rand(a.cutn, 3, scorer.input_size, scorer.input_size, requires_grad=True)
    text = scorer.encode_text(["a red circle on a blue background"])

    def step(backend) -> float:
        t0 = time.perf_counter()
        with sdpa_kernel(backend):
            embeds = scorer.encode_image(x)
        (embeds @ text.T).sum().backward()
        return time.perf_counter() - t0

    times = {b: [] for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH)}
    for b in times:
        step(b)  # warm-up
    for _ in range(a.repeats):
        for b in times:
            times[b].append(step(b))
    fused, math_ = (statistics.median(t) for t in times.values())
    head = f"{a.clip} cutn {a.cutn} threads {a.threads}"
    print(f"{head}: fused {fused:.3f} s, math {math_:.3f} s, ratio {fused / math_:.2f}")


if __name__ == "__main__":
    main()
