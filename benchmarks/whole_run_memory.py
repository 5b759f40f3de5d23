"""A whole run's peak resident memory by C allocator (issue 32): `api.generate` on the replicas of
the f16 16384 VQGAN and ViT-B-32 (benchmarks/startup.py's), 256x256, cutn 32, each run in a
fresh process with the allocator preloaded (`LD_PRELOAD`; glibc's for "system"), the allocators
alternated round after round. Reports the median s/step (after the first step), the peak (VmHWM)
and the resident memory at the end.

    PYTHONPATH=. .venv/bin/python benchmarks/whole_run_memory.py [--steps 24] [--rounds 2]
        [--precision bf16] [--threads 2] [--allocators system,tcmalloc,jemalloc] [--replicas DIR]
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

LIBRARIES = {"tcmalloc": "libtcmalloc_minimal.so.4", "jemalloc": "libjemalloc.so.2"}


def status_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    with open("/proc/self/status") as f:
        got = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}
    return got["VmRSS"], got["VmHWM"]


def one(clip: str, steps: int, precision: str, threads: int, out: str) -> dict:
    """One whole run in this process."""
    from pixgen import api
    from pixgen.allocator import in_use
    from pixgen.settings import load_settings

    overrides = dict(prompt="a lighthouse at dusk", vqgan="replica", clip=[f"ViT-B-32:{clip}"], size=[256, 256])
    s = load_settings(overrides=dict(overrides, iterations=steps, precision=precision, threads=threads, seed=1))
    s = api.replace(s, output_dir=out, device="cpu")
    times = []
    api.generate(s, hooks=api.Hooks(offline=True, on_step=lambda *_: times.append(time.perf_counter())))
    rss, peak = status_mb()
    step = statistics.median(b - a for a, b in zip(times[1:], times[2:], strict=False))
    return {"allocator": in_use(), "s_per_step": step, "peak_mb": peak, "end_mb": rss}


def library(name: str) -> str:
    """The path of an allocator's library in this machine's library folders ("" for system)."""
    if name == "system":
        return ""
    from pixgen.allocator import library_dirs

    found = [f"{d}/{LIBRARIES[name]}" for d in library_dirs() if Path(d, LIBRARIES[name]).is_file()]
    if not found:
        raise SystemExit(f"{name} is not installed here")
    return found[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allocators", default="system,tcmalloc")
    p.add_argument("--replicas", default=None, help="a folder to keep (or reuse) the replica files in")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.steps, a.precision, a.threads, a.one[1])))
        return
    from benchmarks.memory_budget import make_or_reuse
    from benchmarks.speed import machine_header

    print(machine_header())
    env, clip = make_or_reuse(a.replicas)
    names = a.allocators.split(",")
    paths = {name: library(name) for name in names}
    got: dict[str, list] = {name: [] for name in names}
    for _ in range(a.rounds):
        for name in names:
            out = Path(env["PIXGEN_CACHE"]).parent / "whole-run-out"
            cmd = [sys.executable, __file__, "--one", clip, str(out), "--steps", str(a.steps)]
            cmd += ["--precision", a.precision, "--threads", str(a.threads)]
            run_env = dict(env, PIXGEN_ALLOCATOR="system", LD_PRELOAD=paths[name])
            proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            got[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, got[name][-1], file=sys.stderr, flush=True)
    print(f"256x256, cutn 32, {a.precision}, {a.steps} steps, {a.threads} threads; {a.rounds} rounds")
    print("| allocator | s/step (each round) | peak MB (each round) | resident at the end MB |")
    print("|---|---|---|---|")
    for name, runs in got.items():
        cells = [
            " / ".join(f"{r[k]:.{d}f}" for r in runs) for k, d in (("s_per_step", 3), ("peak_mb", 0), ("end_mb", 0))
        ]
        print(f"| {name} ({runs[0]['allocator']}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
