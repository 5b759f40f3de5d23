"""Does `--precision auto`'s calibration say the right thing for small models? (issue 29)

For each thread count: the calibration's own measurement (`pixgen.runtime.precision.measure`,
what `auto` reads, the median of a few fresh measurements here, never the cached one) and what
`auto` decides from it; then seconds per image of whole runs (`pixgen.api.generate`, models
loaded once per precision) for each preset in fp32 and in bf16, alternating, the median of
--repeats paired runs after one warm-up each. The bf16/fp32 ratio is what to compare: on a
shared machine the absolute times move.

    .venv/bin/python benchmarks/precision_small.py --threads 1,2 --repeats 5
    .venv/bin/python benchmarks/precision_small.py --runs "smoke|smoke|" "shapes -i 20|shapes|iterations=20"
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.api import generate  # noqa: E402
from pixgen.models.loading import load_models  # noqa: E402
from pixgen.runtime import precision  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402

RUNS = (
    "smoke (tiny models, 10 steps)|smoke|",
    "shapes (preset: prior, 0 steps)|shapes|",
    "shapes -i 20|shapes|iterations=20",
)
PROMPT = "a red circle on a blue background"


def per_image(preset: str, sets: list[str], repeats: int, out: str, threads: int) -> dict[str, list[float]]:
    """Seconds per image in fp32 and bf16, alternating, after one warm-up run each."""
    models, times = {}, {"fp32": [], "bf16": []}
    for i in range(repeats + 1):
        for name in times:
            s = load_settings(
                preset=preset,
                overrides=dict(prompt=PROMPT, seed=i, output_dir=out, gif=False, save_every=0, threads=threads),
                sets=[*sets, f"precision={name}"],
            )
            if name not in models:
                models[name] = load_models(s.vqgan, s.clip, torch.device("cpu"))
            t0 = time.perf_counter()
            generate(s, models=models[name])
            if i:  # the first of each is the warm-up
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calibrations", type=int, default=5, help="fresh calibration measurements per thread count")
    p.add_argument("--runs", nargs="+", default=list(RUNS), metavar="LABEL|PRESET|key=value ...")
    a = p.parse_args()
    print(f"CPU: {precision._cpu_name()}; native bf16: {precision.cpu_has_fast_bf16()}; torch {torch.__version__}")
    print("| threads | run | fp32 s/image | bf16 s/image | bf16 speed-up | calibration speed-up | auto picks |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="pixgen-precision-") as out:
        for threads in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(threads)
            speedups = [precision.measure()["speedup"] for _ in range(a.calibrations)]
            cal = statistics.median(speedups)
            auto = precision.auto_on_cpu(precision.cpu_has_fast_bf16(), {"fp32": cal, "bf16": 1.0})
            for run in a.runs:
                label, preset, sets = run.split("|")
                times = per_image(preset, sets.split(), a.repeats, out, threads)
                f, b = statistics.median(times["fp32"]), statistics.median(times["bf16"])
                spread = f"{cal:.2f}x ({min(speedups):.2f}-{max(speedups):.2f})"
                print(f"| {threads} | {label} | {f:.2f} | {b:.2f} | {f / b:.2f}x | {spread} | {auto.name} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
