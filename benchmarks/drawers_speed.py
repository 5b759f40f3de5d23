"""Seconds per step of each drawer on the real architectures (random weights): ViT-B/32 at
256x256 with 32 cutouts, against the VQGAN step (the imagenet f16 16384 decoder).

Each drawer runs in its own process: the time to build its models (imports, CLIP, the decoder
for vqgan only), then its first step, then the median of --steps timed steps. With one thread
the process's CPU time per step is the measure (a shared, loaded machine stretches the wall
time, not the CPU time); the wall time is shown beside it.

    .venv/bin/python benchmarks/drawers_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = time.perf_counter()

DRAWERS = {  # label -> settings
    "vqgan": {"drawer": "vqgan"},
    "pixel 40x40": {"drawer": "pixel"},
    "pixel 40x40 pico-8 palette": {"drawer": "pixel", "palette": ["pico-8"]},
    "fft": {"drawer": "fft"},
    "lines 16 strokes": {"drawer": "lines", "strokes": 16},
    "lines 64 strokes": {"drawer": "lines", "strokes": 64},
    "lines 256 strokes": {"drawer": "lines", "strokes": 256},
}


def one(label: str, size: int, cutn: int, steps: int, threads: int, dtype: str = "fp32") -> dict:
    """Build the models and the loop for drawer `label`, run it; its figures."""
    import torch

    torch.set_num_threads(threads)
    from pixgen.drawers import drawer_class
    from pixgen.loop.cutouts import Cutouts
    from pixgen.loop.optimise import ClipTerm, Loop, Objective
    from pixgen.loop.prompts import parse_prompts
    from pixgen.loop.targets import Targets
    from pixgen.models.scorer import build_clip
    from pixgen.models.vqgan import IMAGENET_F16_DDCONFIG, VQGANArch, VQGANDecoder
    from pixgen.settings import load_settings

    s = load_settings(
        overrides={"prompt": "a watercolor portrait of a teacher", "size": [size, size], **DRAWERS[label]}
    )
    torch.manual_seed(0)
    decoder, cls = None, drawer_class(s.drawer)
    if cls.needs_vqgan:
        decoder = VQGANDecoder(VQGANArch("vq", 256, 16384, IMAGENET_F16_DDCONFIG)).eval().requires_grad_(False)
        decoder.codebook.normal_()
    scorer = build_clip("ViT-B-32").eval().requires_grad_(False)
    if dtype == "bf16":  # the weights cast once, as --precision bf16 (auto, on a CPU with native bf16) does
        for model in (decoder, scorer):
            if model is not None:
                model.cast(torch.bfloat16)
    device = torch.device("cpu")
    drawer = cls.from_settings(s, decoder, device)
    g = torch.Generator().manual_seed(0)
    z = drawer.start(g)
    targets = Targets.from_prompts(scorer, parse_prompts(s.prompt))
    term = ClipTerm(scorer, Cutouts(scorer.input_size, cutn, 1.0, 0.0, s.augment, 0.1), targets)
    loop = Loop(drawer, Objective([term], g), z, g, cls.lr)
    ready, cpu_ready = time.perf_counter() - T0, time.process_time()
    times, cpu = [], [cpu_ready]
    for step in loop.run(steps + 1):
        times.append(step.seconds)
        cpu.append(time.process_time())
    cpu_steps = [b - a for a, b in zip(cpu, cpu[1:], strict=False)]
    return {
        "ready_s": ready,
        "ready_cpu_s": cpu_ready,
        "first_step": times[0],
        "first_step_cpu": cpu_steps[0],
        "seconds_per_step": statistics.median(times[1:]),
        "cpu_per_step": statistics.median(cpu_steps[1:]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="these drawers only (labels, comma-separated)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.size, a.cutn, a.steps, a.threads, a.precision)))
        return
    from speed import machine_header

    print(machine_header())
    print(
        f"{a.size}x{a.size}, cutn {a.cutn}, ViT-B/32 (random weights), {a.precision}, {a.threads} thread(s); "
        f"median of {a.steps} steps after the first; each drawer in its own process"
    )
    print(
        "| drawer | CPU s/step | VQGAN step / this (CPU) | wall s/step | first step, CPU s "
        "| models built: CPU s (wall s) from the start |"
    )
    print("|---|---|---|---|---|---|")
    base = None
    for label in a.only.split(",") if a.only else DRAWERS:
        cmd = [sys.executable, __file__, "--one", label, "--size", str(a.size), "--cutn", str(a.cutn)]
        cmd += ["--steps", str(a.steps), "--threads", str(a.threads), "--precision", a.precision]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        base = base or r["cpu_per_step"]
        print(
            f"| {label} | {r['cpu_per_step']:.2f} | {base / r['cpu_per_step']:.2f}x | {r['seconds_per_step']:.2f} | "
            f"{r['first_step_cpu']:.2f} | {r['ready_cpu_s']:.1f} ({r['ready_s']:.1f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
