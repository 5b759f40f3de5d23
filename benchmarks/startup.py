"""Start-up time and peak RSS: cached decoder-only safetensors vs the full taming .ckpt.

Builds a random-weight replica of vqgan_imagenet_f16_16384 (the real architecture, encoder,
decoder and codebook, plus discriminator-style loss.* keys) and a random ViT-B-32, then runs
`pixgen ... -i 1` in fresh processes both ways, alternating, and reports medians and the ratio.

    .venv/bin/python benchmarks/startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pixgen.models.scorer import build_clip  # noqa: E402
from pixgen.models.vqgan import IMAGENET_F16_DDCONFIG, VQGANArch  # noqa: E402
from tests.conftest import taming_state_dict, taming_yaml  # noqa: E402

F16 = IMAGENET_F16_DDCONFIG


def run(cmd: list[str], env: dict, out: Path) -> tuple[float, float]:
    """(seconds from process start to the first step, peak RSS in MB) of one pixgen command."""
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    (run_dir,) = sorted(out.iterdir())[-1:]
    record = json.loads((run_dir / "run.json").read_text())
    # everything after the loop started (steps, final render, writing) is not start-up;
    # peak RSS is the process's own ru_maxrss, recorded by pixgen in run.json
    return wall - (record["seconds"] - record["startup_seconds"]), record["peak_memory_mb"]


def make_replicas(tmp: Path) -> tuple[dict, Path, Path, Path]:
    """Random-weight files of the real models, as a user has them: the f16 16384 taming YAML and
    .ckpt (imported as the cached VQGAN "replica") and a ViT-B-32 safetensors file. Returns the
    environment that points pixgen at them (offline), the config, the checkpoint, the CLIP file."""
    arch = VQGANArch("vq", 256, 16384, F16)
    sd = taming_state_dict(arch)
    cfg, ckpt = tmp / "model.yaml", tmp / "last.ckpt"
    cfg.write_text(yaml.safe_dump(taming_yaml(arch)))
    torch.save({"state_dict": sd, "epoch": 1}, ckpt)
    clip = tmp / "vit-b-32.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in build_clip("ViT-B-32").model.state_dict().items()}, str(clip))
    env = dict(os.environ, PIXGEN_CACHE=str(tmp / "cache"), PIXGEN_OFFLINE="1")
    subprocess.run(
        [sys.executable, "-m", "pixgen", "models", "import", "replica", "--config", cfg, "--ckpt", ckpt],
        env=env,
        check=True,
        capture_output=True,
    )
    return env, cfg, ckpt, clip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-startup-"))
    env, cfg, ckpt, clip = make_replicas(tmp)
    pixgen = [sys.executable, "-m", "pixgen"]
    common = [
        "a cat",
        "--clip",
        f"ViT-B-32:{clip}",
        "-s",
        "256x256",
        "-i",
        "1",
        "--cutn",
        "8",
        "--save-every",
        "0",
        "--no-gif",
        "--device",
        "cpu",
    ]
    rows = {"full .ckpt": [], "cached safetensors": []}
    for i in range(a.repeats):
        for label, extra in (
            ("full .ckpt", ["--vqgan-config", str(cfg), "--vqgan-ckpt", str(ckpt)]),
            ("cached safetensors", ["--set", "vqgan=replica"]),
        ):
            out = tmp / f"out-{label[:4]}-{i}"
            rows[label].append(run([*pixgen, *common, *extra, "-o", str(out)], env, out))
    print(
        f"checkpoint {ckpt.stat().st_size / 2**20:.0f} MB; decoder.safetensors "
        f"{(tmp / 'cache/vqgan/replica/decoder.safetensors').stat().st_size / 2**20:.0f} MB"
    )
    print("| load path | start-up to first step (s, median) | peak RSS (MB, max) |")
    print("|---|---|---|")
    for label, vals in rows.items():
        print(f"| {label} | {statistics.median(v[0] for v in vals):.2f} | {max(v[1] for v in vals):.0f} |")
    full, cached = (statistics.median(v[0] for v in rows[k]) for k in rows)
    print(f"ratio full/cached start-up: {full / cached:.2f}x")


if __name__ == "__main__":
    main()
