"""The memory levers on the real architectures (issue 32): for each lever combination, the step
time, the peak RSS and pixgen's estimate of it.

Random-weight files of the f16 16384 VQGAN and ViT-B-32 (benchmarks/startup.py's replicas), read
as a user's run reads them, 256x256, cutn 32, `--precision auto` unless told; each row in its own
process (its peak is its own), the rows interleaved round after round so that a busy machine
slows them alike; the s/step of a row is the median of its timed steps over the rounds.
"before" is the decoder keeping GroupNorm and SiLU for backward (pixgen before issue 32).

    PYTHONPATH=. .venv/bin/python benchmarks/memory_budget.py [--rounds 2] [--steps 3]
        [--rows before,none,default,chunk16,top,top+chunk8,low,low+chunk4] [--replicas DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = {  # name -> (checkpointed decoder levels, CLIP cutouts at a time, what GroupNorm keeps:
    # VQGANDecoder.norms, convolutions keep no input: VQGANDecoder.lean_convs, text towers released)
    "before": (0, 0, "fp32", False, False),  # before issue 32
    "round1": (0, 0, "bf16", False, False),  # issue 32's first round (GroupNorm keeps bf16)
    "round2": (0, 0, "bf16", True, True),  # issue 32's second round (float32 decoders: autograd's GroupNorm)
    "none": (0, 0, "auto", True, True),  # no levers: CLIP scores all the cutouts at once
    "default": None,  # what a run picks with no budget (a float32 CPU run: CLIP 16 at a time)
    "recompute": (0, 0, "recompute", True, True),
    "chunk16": (0, 16, "auto", True, True),
    "chunk8": (0, 8, "auto", True, True),
    "recompute+chunk16": (0, 16, "recompute", True, True),
    "top": (1, 0, "auto", True, True),
    "top+chunk8": (1, 8, "recompute", True, True),
    "low": (99, 8, "recompute", True, True),
    "low+chunk4": (99, 4, "recompute", True, True),
}


def one(row: str, clip: str, steps: int, precision: str, size: int, cutn: int, threads: int) -> dict:
    """One row in this process: its step times, its peak RSS and the estimate."""
    import torch

    from pixgen import api
    from pixgen.runtime.memory import Levers, peak_memory_mb
    from pixgen.settings import load_settings

    s = load_settings(overrides=dict(prompt="a cat", vqgan="replica", clip=[f"ViT-B-32:{clip}"]))
    s = api.replace(s, size=[size, size], cutn=cutn, precision=precision, iterations=steps + 1, device="cpu")
    s = api.replace(s, threads=threads)
    run = api.prepare(s, hooks=api.Hooks(offline=True))
    loop = api.make_loop(run)
    if ROWS[row] is None:  # the run's own choice
        levers = api.run_levers(run.settings, run.models, run.device)[0]
        checkpoint, chunk, norms, lean, release = levers.checkpoint, levers.clip_chunk, levers.norms, True, True
    else:
        checkpoint, chunk, norms, lean, release = ROWS[row]
    levers = Levers(checkpoint, chunk or cutn, norms == "recompute")  # a chunk of cutn: all at once
    run.models.set_levers(levers)
    run.models.decoder.norms = norms
    run.models.decoder.lean_convs = lean
    if release:  # as a run that loaded its own models does (api.generate)
        run.models.release_text()
    for term in loop.terms:
        term.chunk = chunk
    times, cpu = [], []
    for _ in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in loop.run(loop.step + 1):
            pass
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    need = api.memory_need(run.settings, run.models, torch.device("cpu"))(levers)
    peak = peak_memory_mb(torch.device("cpu"))
    return {
        "times": times[1:],
        "cpu": cpu[1:],
        "peak_mb": peak,
        "estimate_mb": need / 2**20,
        "precision": run.precision.name,
        "levers": str((checkpoint, chunk, norms, lean, release)),
    }


def make_or_reuse(folder: str | None) -> tuple[dict, str]:
    from benchmarks.startup import make_replicas

    tmp = Path(folder or tempfile.mkdtemp(prefix="pixgen-budget-"))
    clip = tmp / "vit-b-32.safetensors"
    if not clip.is_file():
        tmp.mkdir(parents=True, exist_ok=True)
        make_replicas(tmp)
    return dict(os.environ, PIXGEN_CACHE=str(tmp / "cache"), PIXGEN_OFFLINE="1"), str(clip)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="CPU threads per row (0: torch's default)")
    p.add_argument("--replicas", default=None, help="a folder to keep (or reuse) the replica files in")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.clip, a.steps, a.precision, a.size, a.cutn, a.threads)))
        return
    from benchmarks.speed import machine_header

    print(machine_header())
    env, clip = make_or_reuse(a.replicas)
    rows = a.rows.split(",")
    got: dict[str, list] = {r: [] for r in rows}
    for _ in range(a.rounds):
        for row in rows:
            cmd = [sys.executable, __file__, "--one", row, "--clip", clip, "--steps", str(a.steps)]
            cmd += [
                "--precision",
                a.precision,
                "--size",
                str(a.size),
                "--cutn",
                str(a.cutn),
                "--threads",
                str(a.threads),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            got[row].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(row, got[row][-1], file=sys.stderr, flush=True)
    base = statistics.median(t for r in got[rows[0]] for t in r["times"])
    base_cpu = statistics.median(t for r in got[rows[0]] for t in r["cpu"])
    print(f"{a.size}x{a.size}, cutn {a.cutn}, {got[rows[0]][0]['precision']}; {a.rounds} rounds x {a.steps} steps")
    print("| row | levers (checkpointed levels, CLIP chunk, GroupNorm keeps, lean convs, text released) "
          f"| s/step | vs {rows[0]} | CPU s/step | vs {rows[0]} "
          "| peak RSS MB (each round) | estimate MB | estimate / peak |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        step = statistics.median(t for r in got[row] for t in r["times"])
        cpu = statistics.median(t for r in got[row] for t in r["cpu"])
        peaks = [r["peak_mb"] for r in got[row]]
        est = got[row][0]["estimate_mb"]
        print(
            f"| {row} | {got[row][0]['levers']} | {step:.2f} | {step / base:.3f}x | {cpu:.2f} | {cpu / base_cpu:.3f}x "
            f"| {' / '.join(f'{x:.0f}' for x in peaks)} "
            f"| {est:.0f} | {est / statistics.median(peaks):.2f} |"
        )


if __name__ == "__main__":
    main()
