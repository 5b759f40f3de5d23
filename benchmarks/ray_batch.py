"""`pixgen batch --ray` against a local batch of the same jobs, shapes models, one thread each.

1. overhead per job once the workers are warm: the driver's time from a job's submission to its
   folder written, less the worker's time in the local batch's own code for it (pixgen.apps.batch.
   run_job), jobs 2..N; and, noisier, the mean time between two jobs' ends with one Ray worker
   less the same for a local batch;
2. jobs per minute with 1 and 2 workers, from the first job started to the last one done;
3. time from the call (`--ray` on the command line) to the first job started: the local Ray's
   start, the workers' start and their loading of the models.

Every Ray run starts its own local Ray, as `pixgen batch FILE --ray` does, and checks that its
images are byte-identical to the local batch's.

    nice -n 5 .venv/bin/python benchmarks/ray_batch.py [--jobs 8] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "a red circle on a blue background",
    "a green square on a yellow background",
    "a blue triangle",
    "a yellow circle on a red background",
    "a purple square",
    "a white triangle on a black background",
]


def gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def local_batch(f: Path, out: Path, make_settings) -> dict:
    import torch

    from pixgen.apps.batch import run_batch

    torch.set_num_threads(1)
    t0, ends = time.perf_counter(), []
    run_batch(f, out, make_settings, on_job=lambda r, n: ends.append(time.perf_counter()))
    return {"total_s": ends[-1] - t0, "per_job_s": statistics.mean(gaps(ends)), "ends": ends}


def ray_batch(f: Path, out: Path, make_settings, workers: int) -> dict:
    from pixgen.apps.ray_batch import RayOptions, Watch, run_ray_batch

    started, ends, extra = [], [], []
    t0 = time.perf_counter()
    watch = Watch(
        on_step=lambda *a: started or started.append(time.perf_counter()),
        on_job=lambda r, n: ends.append(time.perf_counter()),
        on_timing=lambda name, wall, inside: extra.append(wall - inside),
    )
    init = {"num_cpus": 2, "object_store_memory": 200 * 2**20}
    results = run_ray_batch(f, out, make_settings, options=RayOptions(cpus=1, workers=workers, init=init), watch=watch)
    assert all(r.status == "done" for r in results), [r.error for r in results]
    return {
        "to_first_job_s": started[0] - t0,
        "per_job_s": statistics.mean(gaps(ends)),
        "overhead_per_job_s": statistics.mean(extra[workers:]),  # warm: the first jobs wait for the loading
        "overhead_max_s": max(extra[workers:]),
        "jobs_per_min": 60 * len(ends) / (ends[-1] - started[0]),
        "total_s": ends[-1] - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    from pixgen.settings import load_settings

    flags = {"iterations": args.iterations, "threads": 1, "gif": False}
    make_settings = lambda job: load_settings("shapes", None, dict(flags, **job))  # noqa: E731
    root = Path(tempfile.mkdtemp(prefix="pixgen-ray-bench-"))
    f = root / "p.txt"
    f.write_text("\n".join(PROMPTS[i % len(PROMPTS)] + f" {i}" for i in range(args.jobs)) + "\n")
    local = local_batch(f, root / "local", make_settings)
    ends = local.pop("ends")
    local["jobs_per_min"] = 60 * (args.jobs - 1) / (ends[-1] - ends[0])  # jobs 2..N: the first one loads
    report = {"jobs": args.jobs, "iterations": args.iterations, "local": local}
    for workers in (1, 2):
        report[f"ray_{workers}"] = ray_batch(f, root / f"ray{workers}", make_settings, workers)
        for job in sorted(p for p in (root / "local").iterdir() if p.is_dir()):
            same = (root / f"ray{workers}" / job.name / "final.png").read_bytes() == (job / "final.png").read_bytes()
            assert same, f"{job.name}: the Ray batch's image differs from the local one's"
    report["overhead_from_gaps_s"] = report["ray_1"]["per_job_s"] - local["per_job_s"]  # noisy on a shared machine
    rounded = {k: {a: round(b, 3) for a, b in v.items()} if isinstance(v, dict) else v for k, v in report.items()}
    print(json.dumps(rounded, indent=2))


if __name__ == "__main__":
    main()
