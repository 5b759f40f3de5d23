"""What regions cost per step: the same run with a prompt of two parts, with and without regions
(`@left`, `@right`), paired: the two variants alternate, round after round, in one process, on
the same models, seed and start (random tokens), and each round times the steps only.

    .venv/bin/python benchmarks/region_cost.py --rounds 10 --steps 10 --size 128 --cutn 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.api import make_loop, prepare  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402

A, B = "a red circle on a white background", "a blue square on a white background"
VARIANTS = {"without regions": f"{A} | {B}", "two regions": f"{A} @left | {B} @right"}


def seconds_per_step(prompt: str, a, models) -> tuple[float, object]:
    s = load_settings(
        preset=a.preset,
        overrides={"prompt": prompt, "seed": 0, "size": [a.size, a.size], "cutn": a.cutn, "init": "tokens"},
    )
    run = prepare(s, models)
    course = make_loop(run)
    steps = iter(course.loop.run(a.steps + 1))
    next(steps)  # the first step warms up
    t0 = time.perf_counter()
    for _ in steps:
        pass
    return (time.perf_counter() - t0) / a.steps, run.models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    models = None
    for r in range(a.rounds):
        for name, prompt in VARIANTS.items() if r % 2 == 0 else reversed(VARIANTS.items()):
            t, models = seconds_per_step(prompt, a, models)
            times[name].append(t)
    base = statistics.median(times["without regions"])
    ratios = [b / w for w, b in zip(times["without regions"], times["two regions"], strict=True)]
    for name, ts in times.items():
        print(f"{name:>16}: {statistics.median(ts):.4f} s/step (median of {len(ts)} rounds of {a.steps} steps)")
    print(f"two regions / without: {statistics.median(ratios):.3f} (median of paired ratios; base {base:.4f} s)")


if __name__ == "__main__":
    main()
