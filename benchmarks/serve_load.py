"""`pixgen serve` under load, and its time to the first step against a CLI run's start-up.

Starts `pixgen serve --preset shapes` in a subprocess, then:
1. time to first step, models warm: POST a job and wait for the first SSE event with a step,
   `--repeats` times (after one warm-up job); beside it a CLI run's start-up (process start to
   the first step, as benchmarks/startup.py measures it) on the same preset;
2. load: 4 concurrent clients queue 5 jobs each (20), each following its jobs over SSE; two of
   them hang up mid-run. All 20 must finish, and the server's RSS is sampled after each job.

    .venv/bin/python benchmarks/serve_load.py [--repeats 5] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = ["a red circle on a blue background", "a green square on a yellow background", "a blue triangle"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(out: Path, env: dict) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "pixgen", "serve", "--preset", "shapes", "--port", "0", "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"the server did not start (exit {proc.wait()})")
        if "serving on" in line:
            url = next(w for w in line.split() if w.startswith("http://"))
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, url.rstrip("/")


def first_step(base: str, iterations: int) -> tuple[float, float]:
    """(seconds from POST to the first step event, seen by the client; the server's own figure)."""
    t0 = time.perf_counter()
    job = httpx.post(base + "/api/jobs", json={"prompt": PROMPTS[0], "iterations": iterations}).json()
    with httpx.stream("GET", f"{base}/api/jobs/{job['id']}/events", timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("step", 0) >= 1:
                seen = time.perf_counter() - t0
                break
    snap = wait(base, job["id"])
    return seen, snap["first_step_seconds"]


def wait(base: str, job_id: str, timeout: float = 600) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = httpx.get(f"{base}/api/jobs/{job_id}").json()
        if snap["state"] in ("done", "cancelled", "failed"):
            return snap
        time.sleep(0.1)
    raise SystemExit(f"job {job_id} did not finish")


def cli_startup(out: Path, env: dict) -> float:
    cmd = [sys.executable, "-m", "pixgen", PROMPTS[0], "--preset", "shapes", "-i", "1", "-o", str(out), "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((run_dir / "run.json").read_text())
    return wall - (record["seconds"] - record["startup_seconds"])


def client(base: str, n: int, iterations: int, hang_up: bool, ids: list, errors: list) -> None:
    """Queue `n` jobs, follow each over SSE; `hang_up`: leave in the middle of the first one."""
    try:
        mine = []
        for i in range(n):
            r = httpx.post(base + "/api/jobs", json={"prompt": PROMPTS[i % 3], "iterations": iterations, "seed": i})
            r.raise_for_status()
            mine.append(r.json()["id"])
        ids.extend(mine)
        for job_id in mine:
            with httpx.stream("GET", f"{base}/api/jobs/{job_id}/events", timeout=600) as r:
                for line in r.iter_lines():
                    if hang_up and line.startswith("data: ") and json.loads(line[6:]).get("step", 0) >= 3:
                        return  # the browser closed: the jobs must still run
    except Exception as e:  # noqa: BLE001 - reported at the end
        errors.append(repr(e))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iterations", type=int, default=20)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-serve-load-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    (tmp / "cli").mkdir()
    cli = [cli_startup(tmp / "cli", env) for _ in range(a.repeats)]
    proc, base = start_server(tmp / "serve", env)
    try:
        first_step(base, 5)  # warm-up
        warm = [first_step(base, 5) for _ in range(a.repeats)]
        print(f"CLI start-up (process start to first step), median of {a.repeats}: {statistics.median(cli):.2f} s")
        print(
            f"serve, Generate to first step (client, SSE), median: {statistics.median(w[0] for w in warm):.3f} s"
            f"; server-side: {statistics.median(w[1] for w in warm):.3f} s"
        )
        ids, errors, rss, running = [], [], [(0, rss_mb(proc.pid))], [True]

        def sample():  # RSS each time another job finishes
            seen = 0
            while running[0]:
                done = sum(httpx.get(f"{base}/api/jobs/{i}").json()["state"] == "done" for i in list(ids))
                if done > seen:
                    seen = done
                    rss.append((done, rss_mb(proc.pid)))
                time.sleep(0.2)

        t0 = time.perf_counter()
        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=client, args=(base, 5, a.iterations, i < 2, ids, errors)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in list(ids):
            wait(base, i)
        time.sleep(0.5)
        running[0] = False
        sampler.join()
        wall = time.perf_counter() - t0
        states = [wait(base, i)["state"] for i in ids]
        folders = [d for d in (tmp / "serve").iterdir() if (d / "final.png").is_file() and (d / "run.json").is_file()]
        print(f"load: {len(ids)} jobs from 4 clients (2 hung up mid-run) in {wall:.1f} s; {states.count('done')} done")
        print(f"client errors: {errors or 'none'}; run folders with final.png + run.json: {len(folders)}")
        print("server RSS (MB) after N jobs done: " + ", ".join(f"{n}: {r:.0f}" for n, r in rss))
        after5 = next((r for n, r in rss if n >= 5), rss[0][1])
        print(f"RSS growth from the 5th finished job to the last: {rss[-1][1] - after5:+.1f} MB")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


if __name__ == "__main__":
    main()
