"""Seconds per step of the real generation loop on the real architectures (random weights).

The imagenet f16 16384 decoder and ViT-B/32 (and ViT-B/16) have the same shapes and compute as
the pretrained models. Each configuration runs in its own process (for a clean peak RSS): one
warm-up step, then the median of --steps timed steps. Every row is paired with plain fp32 in
the same run; ratios are what to compare, absolute times are noisy on shared machines.

    .venv/bin/python benchmarks/speed.py            # the table in BENCHMARKS.md
    .venv/bin/python benchmarks/speed.py --quick    # 256x256, cutn 32 only
    .venv/bin/python benchmarks/speed.py --device cuda --sizes 512 --cutns 64 --paths fp32,bf16,fp16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.models.vqgan import IMAGENET_F16_DDCONFIG  # noqa: E402

F16 = IMAGENET_F16_DDCONFIG


def matmul_peak(dtype, device, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large square matmul: the practical ceiling for this dtype here."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# --path -> how the models compute: CLIP's and the decoder's weight dtype, whether CLIP runs through
# pixgen.models.vit (False: open_clip's own forward), its attention kernel, CLIP's autocast dtype. The
# "before" rows are what pixgen did before issue 22; "bf16" is what --precision bf16 does now.
BF16 = "bfloat16"
LEVERS = {
    "fp32-before": dict(vit=False, legacy=True),
    "autocast-before": dict(vit=False, autocast=BF16, legacy=True),
    "fp32-legacy-cutouts": dict(legacy=True),
    "fp32": dict(),
    "bf16-clip": dict(clip=BF16, vit=False),
    "bf16-weights": dict(clip=BF16, decoder=BF16, vit=False),
    "bf16-vit-sdpa": dict(clip=BF16, decoder=BF16, attention="sdpa"),
    "bf16-gn-bf16": dict(clip=BF16, decoder=BF16, islands=False),
    "bf16-legacy-cutouts": dict(clip=BF16, decoder=BF16, legacy=True),
    "bf16": dict(clip=BF16, decoder=BF16),
}


def build_models(args):
    """The f16 16384 decoder and the CLIP of `args` with random weights, on the device, with the
    levers of `args.path` applied (`default`: what --precision auto resolves to here)."""
    import torch

    from pixgen.models.loading import Models
    from pixgen.models.scorer import build_clip
    from pixgen.models.vqgan import VQGANArch, VQGANDecoder
    from pixgen.runtime.device import resolve_device
    from pixgen.runtime.precision import resolve_precision

    device = resolve_device(args.device)
    torch.manual_seed(0)
    decoder = VQGANDecoder(VQGANArch("vq", 256, 16384, F16))
    decoder.codebook.normal_()
    scorer = build_clip(args.clip)
    models = Models(decoder, [scorer]).to(device)
    if args.channels_last:
        decoder.to(memory_format=torch.channels_last)
    lever = dict(LEVERS.get(args.path, {}))
    precision = resolve_precision({"default": "auto", "fp16": "fp16"}.get(args.path, "fp32"), device)
    if args.path == "default":
        lever = {"clip": BF16, "decoder": BF16} if precision.name == "bf16" else {}
    scorer.fast = lever.get("vit", True)
    scorer.attention = lever.get("attention", "auto")
    if lever.get("decoder"):
        decoder.cast(torch.bfloat16)
    if lever.get("clip"):
        scorer.cast(torch.bfloat16)
    if lever.get("islands") is False:
        bf16_group_norms(decoder)
    if lever.get("legacy"):
        legacy_cutouts()
    autocast = precision.autocast or (torch.bfloat16 if lever.get("autocast") else None)
    return models, device, autocast, precision


def legacy_cutouts() -> None:
    """The cutouts of before issue 22: torchvision's roi_align and kornia's ColorJitter."""
    from torchvision.ops import roi_align

    import pixgen.loop.cutouts as C

    def forward(self, image, generator, cutn=None):
        boxes = self.boxes(image.shape[2], image.shape[3], generator, cutn).to(image)
        rois = C.torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)
        cuts = roi_align(image, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return self.augment(cuts) if len(self.augment) else cuts

    C.Cutouts.forward = forward
    C.AUGMENTATIONS["jitter"] = lambda K, noise: K.ColorJitter(
        brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05, p=0.7
    )


def bf16_group_norms(decoder) -> None:
    """Undo the decoder's fp32 GroupNorm islands: each GroupNorm computes in the decoder's bf16."""
    import torch

    import pixgen.models.vqgan

    pixgen.models.vqgan._norm = lambda norm, x: norm(x)
    assert decoder.dtype == torch.bfloat16


def one(args) -> dict:
    """Run one configuration in this process and return its figures."""
    import torch

    from pixgen.drawers.vqgan import VQGANDrawer, init_latent
    from pixgen.loop.cutouts import Cutouts
    from pixgen.loop.ops import halve_latent
    from pixgen.loop.optimise import ClipTerm, Loop, Objective
    from pixgen.loop.prompts import parse_prompts
    from pixgen.loop.targets import Targets
    from pixgen.runtime.memory import LOW_MEMORY_CHUNK
    from pixgen.runtime.precision import cpu_has_fast_bf16
    from pixgen.settings import Settings

    models, device, autocast, precision = build_models(args)
    decoder, scorer = models.decoder, models.scorers[0]
    models.set_low_memory(args.path == "low-memory")
    if args.path == "compile":
        models.compile()
    g = torch.Generator().manual_seed(0)
    z = init_latent(decoder, args.size, args.size, g)
    targets = Targets.from_prompts(scorer, parse_prompts("a watercolor portrait of a teacher"))
    cut = Cutouts(scorer.input_size, args.cutn, 1.0, 0.0, Settings().augment, 0.1)
    chunk = LOW_MEMORY_CHUNK if args.path == "low-memory" else 0
    term = ClipTerm(scorer, cut, targets, chunk=chunk)
    objective = Objective([term], g, clip_dtype=autocast, full_shape=tuple(z.shape))
    if args.path == "progressive":  # time the coarse phase of the progressive schedule: half size, half the cutouts
        z = halve_latent(z)
    loop = Loop(VQGANDrawer(decoder), objective, z, g, 0.1)
    print("READY", flush=True)
    times = []
    for step in loop.run(args.steps + 1):
        sync(device)
        times.append(step.seconds)
    out = {"seconds_per_step": statistics.median(times[1:]), "first_step": times[0], "precision": precision.why}
    # the peak of the real loop, before flop counting (its dispatch mode keeps tensors alive)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.profile:
        out["profile"] = profile_step(loop)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        next(loop.run(loop.step + 1))
    out["gflop"] = counter.get_total_flops() / 1e9
    out["peak_fp32"] = matmul_peak(torch.float32, device)
    # without native bf16 (AVX2-only CPUs) a bf16 matmul is emulated and ~150x slower: keep it small
    small = device.type == "cpu" and not cpu_has_fast_bf16()
    out["peak_bf16"] = matmul_peak(torch.bfloat16, device, n=512 if small else 2048, reps=2 if small else 10)
    if args.fidelity:
        out["grad_cosine"] = grad_cosine(loop, args)
    out["threads"] = torch.get_num_threads()
    return out


def profile_step(loop) -> list:
    """The five ops that took the most time in one step: [name, share of the step]."""
    from torch.profiler import profile

    with profile() as prof:
        next(loop.run(loop.step + 1))
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key, round(e.self_cpu_time_total / total, 3)] for e in events[:5]]


def grad_cosine(loop, args) -> float:
    """Cosine between the latent's gradient in this configuration and in plain fp32 (fresh fp32
    models of the same seed, open_clip's own forward), on the same cutouts and augmentations."""
    import torch

    from pixgen.drawers.vqgan import render

    reference = argparse.Namespace(**dict(vars(args), path="fp32", channels_last=False))
    ref_models, _, _, _ = build_models(reference)
    ref_models.scorers[0].fast = False  # open_clip's own forward
    grads = []
    state = (loop.generator.get_state(), torch.get_rng_state())
    for decoder, scorer, dtype in (
        (ref_models.decoder, ref_models.scorers[0], None),
        (loop.decoder, loop.loss.terms[0].scorer, loop.loss.clip_dtype),
    ):
        loop.generator.set_state(state[0])
        torch.set_rng_state(state[1])
        z = loop.z.detach().clone().requires_grad_(True)
        term = loop.loss.terms[0]
        saved = term.scorer, loop.loss.clip_dtype
        term.scorer, loop.loss.clip_dtype = scorer, dtype
        loop.loss(render(decoder, z), z, 1).backward()
        term.scorer, loop.loss.clip_dtype = saved
        grads.append(z.grad.flatten().clone())
    return float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))


def spawn(
    size, cutn, path, clip, device, steps, env_extra=None, channels_last=False, fidelity=False, profile=False
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        "--size",
        str(size),
        "--cutn",
        str(cutn),
        "--path",
        path,
        "--clip",
        clip,
        "--device",
        device,
        "--steps",
        str(steps),
    ]
    if channels_last:
        cmd.append("--channels-last")
    if fidelity:
        cmd.append("--fidelity")
    if profile:
        cmd.append("--profile")
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    startup = None
    lines = []
    for line in proc.stdout:
        if line.startswith("READY") and startup is None:
            startup = time.perf_counter() - t0
        lines.append(line)
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"configuration failed: {' '.join(cmd)}")
    result = json.loads(lines[-1])
    result["startup_s"] = startup
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--path", default="fp32")
    p.add_argument("--clip", default="ViT-B-32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--fidelity", action="store_true")
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--levers", action="store_true", help="only the precision levers at 256x256, cutn 32 (issue 22)")
    p.add_argument("--only", default="", help="with --levers: these levers only, comma-separated")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--quick-grid", action="store_true", help="only the --sizes x --cutns given")
    p.add_argument("--sizes", default="128,256,384")
    p.add_argument("--cutns", default="8,16,32,64")
    p.add_argument("--paths", default="fp32,bf16")
    p.add_argument("--only-extras", action="store_true", help="skip the grid: only the 256/32 variants")
    p.add_argument("--extras", default="new", help="all: also rerun channels_last and the glibc tunables")
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a)))
        return
    print(machine_header())
    if a.levers:
        return levers(a)
    sizes = [int(x) for x in a.sizes.split(",")]
    cutns = [int(x) for x in a.cutns.split(",")]
    grid = [(256, 32)] if a.quick else sorted({(256, c) for c in cutns} | {(s, 32) for s in sizes})
    if a.quick_grid:
        grid = [(s, c) for s in sizes for c in cutns]
    paths = a.paths.split(",")
    print(f"device {a.device}; {a.steps} timed steps after 1 warm-up; each row in its own process")
    print(
        "| size | cutn | CLIP | path | s/step | vs fp32 | GFLOP/step | GFLOP/s | % of fp32 peak | % of bf16 peak "
        "| start-up s | peak RSS MB | grad cos vs fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [(s, c, "ViT-B-32", {}) for s, c in grid]
    if not (a.quick or a.quick_grid):
        rows.append((256, 32, "ViT-B-16", {}))
    if a.only_extras:
        rows = []
    for size, cutn, clip, _ in rows:
        base = None
        for path in paths:
            r = spawn(size, cutn, path, clip, a.device, a.steps, fidelity=(path != "fp32"))
            base = base or r["seconds_per_step"]
            rate = r["gflop"] / r["seconds_per_step"]
            cos = f"{r['grad_cosine']:.4f}" if "grad_cosine" in r else "-"
            print(
                f"| {size} | {cutn} | {clip} | {path} | {r['seconds_per_step']:.2f} | "
                f"{base / r['seconds_per_step']:.2f}x | {r['gflop']:.0f} | {rate:.0f} | "
                f"{100 * rate / r['peak_fp32']:.0f}% | {100 * rate / r['peak_bf16']:.0f}% | {r['startup_s']:.1f} | "
                f"{r['peak_rss_mb']:.0f} | {cos} |",
                flush=True,
            )
    if a.device == "cpu":
        extra = [
            ("fp32 + channels_last decoder", {}, True),
            ("fp32 + glibc malloc tunables", {"GLIBC_TUNABLES": TUNABLES}, False),
        ]
        base = spawn(256, 32, "fp32", "ViT-B-32", a.device, a.steps)
        print(
            f"\nsame run, 256x256 cutn 32 ViT-B-32: plain fp32 {base['seconds_per_step']:.2f} s/step "
            f"(matmul peak fp32 {base['peak_fp32']:.0f}, bf16 {base['peak_bf16']:.0f} GFLOP/s, "
            f"{base['threads']} threads)"
        )
        if a.extras == "all":
            for label, env, cl in extra:
                r = spawn(256, 32, "fp32", "ViT-B-32", a.device, a.steps, env, channels_last=cl)
                ratio = base["seconds_per_step"] / r["seconds_per_step"]
                print(f"- {label}: {r['seconds_per_step']:.2f} s/step, {ratio:.2f}x")
        print(f"- plain fp32: first step {base['first_step']:.2f} s, peak RSS {base['peak_rss_mb']:.0f} MB")
        for path in ("low-memory", "progressive", "compile"):
            r = spawn(256, 32, path, "ViT-B-32", a.device, a.steps)
            ratio = base["seconds_per_step"] / r["seconds_per_step"]
            label = {"progressive": "progressive, coarse phase (decoded at 128x128, cutn 16)"}.get(path, path)
            note = ""
            if path == "compile":
                note = f" (compile time ~ first step minus a step: {r['first_step'] - r['seconds_per_step']:.1f} s)"
            print(
                f"- {label}: {r['seconds_per_step']:.2f} s/step, {ratio:.2f}x; first step {r['first_step']:.2f} s"
                f"{note}; peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )


def machine_header() -> str:
    """The CPU's capability line: every figure depends on it (issue 22)."""
    import torch

    from pixgen.runtime.precision import _cpu_name, cpu_has_fast_bf16

    return (
        f"CPU {_cpu_name()}; capability {torch.backends.cpu.get_cpu_capability()}; native bf16 (oneDNN) "
        f"{cpu_has_fast_bf16()}; torch {torch.__version__}; {torch.get_num_threads()} threads"
    )


def levers(a) -> None:
    """Issue 22's table: each precision lever at 256x256, cutn 32, paired with the plain fp32 step
    of before (open_clip's forward, fp32) in the same run, with the gradient's cosine to it."""
    print(f"device {a.device}; {a.steps} timed steps after 1 warm-up; each row in its own process")
    print("| lever | s/step | vs plain fp32 | peak RSS MB | grad cos vs fp32 | top ops (share of a step) |")
    print("|---|---|---|---|---|---|")
    base = None
    for path in a.only.split(",") if a.only else [*LEVERS, "default"]:
        fidelity = path not in ("fp32-before",)
        r = spawn(a.size, a.cutn, path, a.clip, a.device, a.steps, fidelity=fidelity, profile=True)
        base = base or r["seconds_per_step"]
        cos = f"{r['grad_cosine']:.4f}" if "grad_cosine" in r else "-"
        ops = ", ".join(f"{name} {share:.0%}" for name, share in r["profile"][:3])
        label = f"default ({r['precision']})" if path == "default" else path
        print(
            f"| {label} | {r['seconds_per_step']:.2f} | {base / r['seconds_per_step']:.2f}x | "
            f"{r['peak_rss_mb']:.0f} | {cos} | {ops} |",
            flush=True,
        )


TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"

if __name__ == "__main__":
    main()
