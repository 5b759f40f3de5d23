"""The default step through the product: `pixgen` itself, on random-weight files of the real models.

Each precision runs as a user's command would (`pixgen "a cat" -s 256x256 --cutn 32`, models read
from the cache), alternating, in fresh processes; run.json gives the seconds of each step (the
median after the first) and the process's peak RSS. `auto` is what a user gets by default, and
which precision it chose and why is read back from run.json.

    .venv/bin/python benchmarks/product_step.py [--repeats 2] [--steps 4] [--precisions fp32,auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.speed import machine_header  # noqa: E402
from benchmarks.startup import make_replicas  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--precisions", default="fp32,auto")
    a = p.parse_args()
    print(machine_header())
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-product-"))
    env, _, _, clip = make_replicas(tmp)
    rows: dict[str, list] = {k: [] for k in a.precisions.split(",")}
    for i in range(a.repeats):
        for precision in rows:
            out = tmp / f"out-{precision}-{i}"
            cmd = [sys.executable, "-m", "pixgen", "a cat", "--set", "vqgan=replica", "--clip", f"ViT-B-32:{clip}"]
            cmd += ["-s", "256x256", "--cutn", "32", "-i", str(a.steps), "--save-every", "0", "--no-gif"]
            subprocess.run([*cmd, "--precision", precision, "-o", str(out)], env=env, check=True, capture_output=True)
            (run_dir,) = list(out.iterdir())
            record = json.loads((run_dir / "run.json").read_text())
            rows[precision].append(record)
    print("| --precision | resolved (why) | s/step (median after the first) | vs fp32 | peak RSS MB |")
    print("|---|---|---|---|---|")
    base = None
    for precision, records in rows.items():
        step = statistics.median(s for r in records for s in r["seconds_per_step"][1:])
        base = base or step
        why = f"{records[0]['precision']} ({records[0]['precision_why']})"
        rss = max(r["peak_memory_mb"] for r in records)
        print(f"| {precision} | {why} | {step:.2f} | {base / step:.2f}x | {rss:.0f} |")


if __name__ == "__main__":
    main()
