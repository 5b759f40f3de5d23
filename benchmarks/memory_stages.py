"""Resident memory stage by stage through one run of the real architectures (issue 22).

Random-weight files of the f16 16384 VQGAN and ViT-B-32 (benchmarks/startup.py's replicas), read
as a user's run reads them; after each stage, the current RSS and the peak so far. Each
precision runs in its own process.

    .venv/bin/python benchmarks/memory_stages.py [--precisions fp32,auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stages(precision: str, clip: str) -> list:
    """Run one precision in this process, reading RSS after each stage."""
    out = [("start", *rss_mb())]
    import torch

    from pixgen import api
    from pixgen.settings import load_settings

    out.append(("imports", *rss_mb()))
    s = load_settings(
        overrides=dict(prompt="a cat", vqgan="replica", clip=[f"ViT-B-32:{clip}"], size=[256, 256], cutn=32)
    )
    s = api.replace(s, precision=precision, iterations=3, device="cpu")
    run = api.prepare(s, hooks=api.Hooks(offline=True))
    out.append((f"models loaded and cast ({run.precision.name})", *rss_mb()))
    loop = api.make_loop(run)
    out.append(("prompts encoded, loop built", *rss_mb()))
    for _ in loop.run(1):
        pass
    out.append(("first step (forward + backward + Adam)", *rss_mb()))
    for _ in loop.run(3):
        pass
    out.append(("three steps", *rss_mb()))
    del torch
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--precisions", default="fp32,auto")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(stages(*a.one)))
        return
    from benchmarks.speed import machine_header
    from benchmarks.startup import make_replicas

    print(machine_header())
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-memory-"))
    env, _, _, clip = make_replicas(tmp)
    results = {}
    for precision in a.precisions.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--one", precision, str(clip)], env=env, capture_output=True, text=True
        )
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        results[precision] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| stage | " + " | ".join(f"{k}: RSS / peak MB" for k in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, (name, *_) in enumerate(next(iter(results.values()))):
        cells = []
        for rows in results.values():
            label, cur, peak = rows[i]
            cells.append(f"{cur:.0f} / {peak:.0f}")
            name = label if "loaded" not in label else "models loaded and cast"
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
