"""The ImageNet prior's memory through a whole image (issue 32): taming's cin_transformer (1.4B
parameters, random weights) written as pixgen converts it (fp16 safetensors), loaded as a run
loads it (`load_prior_model`, straight into the run's dtype), then 256 codes drawn for `--batch`
images through `pixgen.prior.model.sample` (the run's sampler: its key/value cache, no guidance,
as a class-conditional start draws by default). In a fresh process of its own; the resident
memory before loading (the libraries), after loading, and the process's peak (VmHWM), against
`pixgen.runtime.memory.prior_bytes` (the weights and one batch's cache).

    PYTHONPATH=. .venv/bin/python benchmarks/prior_memory.py [--batch 16] [--dtype bf16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def one(path: str, dtype_name: str, batch: int, threads: int) -> dict:
    import torch

    from benchmarks.prior_speed import dtype_of
    from pixgen.prior.model import Sampling, sample
    from pixgen.prior.registry import load_prior_model
    from pixgen.runtime.memory import prior_bytes

    torch.set_num_threads(threads)
    libraries = status_mb("VmRSS")
    t0 = time.perf_counter()
    prior = load_prior_model(path, 16384, dtype=dtype_of(dtype_name))
    loaded, load_s = status_mb("VmRSS"), time.perf_counter() - t0
    cond = torch.full((1, 1), 3, dtype=torch.long)  # one class for the batch, as a class start asks
    t0, c0 = time.perf_counter(), time.process_time()
    sample(prior, cond, batch, torch.Generator().manual_seed(0), Sampling(), batch=batch)
    return {
        "libraries_mb": libraries,
        "loaded_mb": loaded,
        "peak_mb": status_mb("VmHWM"),
        "predicted_mb": prior_bytes(prior.arch, batch, prior.tok_emb.weight.element_size()) / 2**20,
        "load_s": load_s,
        "sample_wall_s": time.perf_counter() - t0,
        "sample_cpu_s": time.process_time() - c0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.dtype, a.batch, a.threads)))
        return
    from safetensors.torch import save_file

    from benchmarks.prior_speed import build
    from benchmarks.speed import machine_header

    print(machine_header())
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "prior.safetensors")
        prior = build("fp16")
        save_file(prior.state_dict(), path, metadata={"pixgen_prior_arch": prior.arch.to_json()})
        del prior
        cmd = [sys.executable, __file__, "--one", path, "--dtype", a.dtype, "--batch", str(a.batch)]
        done = subprocess.run([*cmd, "--threads", str(a.threads)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"cin_transformer, random weights, {a.dtype}, batch {a.batch}, 256 codes each, {a.threads} thread(s)")
    print("| libraries MB | after loading MB | peak MB | peak - libraries MB | weights + cache (prior_bytes) MB "
          "| load s | sampling s (wall / CPU) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {r['libraries_mb']:.0f} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | "
        f"{r['peak_mb'] - r['libraries_mb']:.0f} | {r['predicted_mb']:.0f} | {r['load_s']:.1f} | "
        f"{r['sample_wall_s']:.0f} / {r['sample_cpu_s']:.0f} |"
    )


if __name__ == "__main__":
    main()
