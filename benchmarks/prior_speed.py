"""Sampling speed of taming's ImageNet class-conditional transformer (cin_transformer: 48 layers,
width 1536, 24 heads, vocabulary 16384, 1.4B parameters) on this machine, random weights.

Each (dtype, batch) runs in its own process for a clean peak RSS: the model is built in that
dtype, the class prefix is run, then `--tokens` codes are drawn through the key/value cache with
taming's recommended filter (top-k 600, top-p 0.92), one warm-up token first. A full image is
256 tokens: seconds per image are extrapolated from the first timed tokens. A step's cost is
mostly its weights (2.8 GFLOP; 5.6 GB read in fp32); the attention over the cache grows along the
sequence, little at batch 1 but at batch 16 its cache reads (150 MB per row at the end in fp32)
make a late step about 1.2x an early one. `--late` times steps after a 240-token prefix to show
by how much the extrapolation is short: about half the late/early excess, over a whole image.
A second table times loading the converted file (fp16 safetensors) into fp32 and bf16, and a
third CLIP embedding ImageNet's classes (1000 x 80 templates, ViT-B/32). Wall and CPU seconds
are both shown: on a shared machine a one-thread run's CPU time is close to what it takes alone.

    .venv/bin/python benchmarks/prior_speed.py --threads 1 --tokens 16 --late --sample-classes 4
    .venv/bin/python benchmarks/prior_speed.py --tokens 8 --batches 1 --dtypes bf16 --tables sampling
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKENS_PER_IMAGE = 256


def dtype_of(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build(dtype_name: str):
    """The cin architecture with random weights in `dtype`, built without a second copy."""
    import torch

    from pixgen.models.cache import registry
    from pixgen.prior.model import Prior, PriorArch

    arch = PriorArch(**registry()["priors"]["cin_transformer"]["arch"])
    dtype = dtype_of(dtype_name)
    with torch.device("meta"):
        prior = Prior(arch)
    prior = prior.to(dtype).to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in prior.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif "ln" in name or name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02).to(dtype))
    return prior.eval().requires_grad_(False)


def time_tokens(prior, batch: int, tokens: int, prefix_codes: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds per cached sampling step at `batch`, after the class token and
    `prefix_codes` codes. On a shared machine the CPU time of a one-thread run is what it would
    take alone (less the memory bandwidth the others take)."""
    import torch

    from pixgen.prior.model import KVCache, filter_logits

    g = torch.Generator().manual_seed(0)
    cache = KVCache(prior.arch, batch, "cpu", prior.tok_emb.weight.dtype)
    cond = prior.condition(torch.full((batch, 1), 3, dtype=torch.long))
    codes = torch.randint(0, prior.arch.n_codes, (batch, prefix_codes), generator=g)
    with torch.no_grad():
        logits = prior(codes, cond, cache)[:, -1]
        for i in range(tokens + 1):  # the first is a warm-up
            if i == 1:
                wall, cpu = time.perf_counter(), time.process_time()
            probs = filter_logits(logits.float(), 1.0, 600, 0.92).softmax(-1)
            step = torch.multinomial(probs, 1, generator=g)
            logits = prior(step, None, cache)[:, -1]
    return (time.perf_counter() - wall) / tokens, (time.process_time() - cpu) / tokens


def one(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    if a.load_file:
        from pixgen.prior.registry import load_prior_model

        t0, c0 = time.perf_counter(), time.process_time()
        load_prior_model(a.load_file, 16384, dtype=dtype_of(a.dtype))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"load_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "peak_rss_mb": rss}
        print(json.dumps(out), flush=True)
        return
    t0 = time.perf_counter()
    prior = build(a.dtype)
    out = {"build_s": time.perf_counter() - t0}
    out["s_per_step"], out["cpu_s_per_step"] = time_tokens(prior, a.batch, a.tokens)
    if a.late:
        out["late_cpu_s_per_step"] = time_tokens(prior, a.batch, max(2, a.tokens // 4), prefix_codes=240)[1]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


def spawn(dtype: str, batch: int, a, load_file: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--one", "--dtype", dtype, "--batch", str(batch)]
    cmd += ["--tokens", str(a.tokens), "--threads", str(a.threads)] + (["--late"] if a.late else [])
    cmd += ["--load-file", load_file] if load_file else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sampling_table(a) -> None:
    print(f"cin_transformer, random weights; {a.tokens} timed tokens after 1 warm-up, top-k 600, top-p 0.92")
    print(
        "| dtype | batch | wall s/step | CPU s/step | tokens/s (CPU) | s/image (CPU, x256) | late/early | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in a.dtypes.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            r = spawn(dtype, batch, a)
            cpu = r["cpu_s_per_step"]
            late = f"{r['late_cpu_s_per_step'] / cpu:.2f}" if "late_cpu_s_per_step" in r else "-"
            print(
                f"| {dtype} | {batch} | {r['s_per_step']:.2f} | {cpu:.3f} | {batch / cpu:.1f} | "
                f"{cpu * TOKENS_PER_IMAGE / batch:.1f} | {late} | {r['peak_rss_mb']:.0f} |",
                flush=True,
            )


def load_table(a) -> None:
    """Loading the converted file (fp16 safetensors, 2.8 GB) as runs do, into fp32 or bf16."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "prior.safetensors")
        prior = build("fp16")
        save_file(prior.state_dict(), path, metadata={"pixgen_prior_arch": prior.arch.to_json()})
        del prior
        print("\nLoading the converted cin prior (fp16 safetensors, 2.8 GB; file in the page cache)")
        print("| into | wall s | CPU s | peak RSS MB |")
        print("|---|---|---|---|")
        for dtype in ("fp32", "bf16"):
            r = spawn(dtype, 1, a, load_file=path)
            print(f"| {dtype} | {r['load_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)


def classes_table(a) -> None:
    """CLIP ViT-B/32 (random weights, the real shapes) embedding a sample of ImageNet's class
    prompts through pixgen.prior.classes, extrapolated to all 1000 x 80."""
    import random

    import torch

    from pixgen.models.scorer import build_clip
    from pixgen.prior import classes as pc

    torch.set_num_threads(a.threads)
    classes, templates = pc.imagenet_classes(), pc.imagenet_templates()
    sample = random.Random(0).sample(classes, a.sample_classes)
    texts = [t.replace("{}", c) for c in sample for t in templates]
    print(f"\nViT-B/32 text tower, {len(texts)} ImageNet class prompts timed, extrapolated to 80,000")
    print("| dtype | open_clip encode_text (77 tokens), CPU s | pixgen (padding cut, shortest first), CPU s |")
    print("|---|---|---|")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        scorer = build_clip("ViT-B-32").cast(dtype)
        t0 = time.process_time()
        for i in range(0, len(texts), 256):
            scorer.encode_text(texts[i : i + 256])
        full = (time.process_time() - t0) * 80000 / len(texts)
        t0 = time.process_time()
        pc._embed_classes(scorer, sample, templates)
        cut = (time.process_time() - t0) * 80000 / len(texts)
        print(f"| {name} | {full:.0f} | {cut:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--batches", default="1,16")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--late", action="store_true", help="also time steps after a 240-token prefix")
    p.add_argument("--sample-classes", type=int, default=8, help="classes timed for the CLIP table")
    p.add_argument("--tables", default="sampling,load,classes", help="which of sampling,load,classes to run")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        one(a)
        return
    import torch

    torch.set_num_threads(a.threads)
    from benchmarks.speed import machine_header

    print(machine_header())
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    tables = a.tables.split(",")
    if "sampling" in tables:
        sampling_table(a)
    if "load" in tables:
        load_table(a)
    if "classes" in tables:
        classes_table(a)


if __name__ == "__main__":
    main()
