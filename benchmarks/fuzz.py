"""The long fuzzing run: 10,000 generated inputs per category through pixgen's parsers.

Each input must give a valid object or raise PixgenError; anything else is counted as a crash
(and the first few are printed). The suite runs the same properties with a few hundred examples.

    .venv/bin/python benchmarks/fuzz.py [--examples 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.apps.batch import read_jobs  # noqa: E402
from pixgen.errors import PixgenError  # noqa: E402
from pixgen.loop.prompts import parse_prompts  # noqa: E402
from pixgen.outputs.writer import slugify  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402

tally: Counter = Counter()
crashes: list[str] = []


def check(category: str, fn, *args) -> None:
    tally[category, "tried"] += 1
    try:
        fn(*args)
        tally[category, "accepted"] += 1
    except PixgenError:
        tally[category, "refused with a clear error"] += 1
    except Exception as e:  # a crash: what the suite must never see
        tally[category, "crashed"] += 1
        if len(crashes) < 10:
            crashes.append(f"{category}: {type(e).__name__}: {e} for {args!r:.200}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=10_000)
    a = p.parse_args()
    cfg = settings(max_examples=a.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-fuzz-"))
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=6,
    )
    keys = st.sampled_from(
        [
            "prompt",
            "size",
            "iterations",
            "lr",
            "seed",
            "augment",
            "cutn",
            "palette",
            "bogus",
            "device",
            "init",
            "save_every",
            "negative",
            "noise_prompts",
            "symmetry",
            "fps",
        ]
    )

    @cfg
    @given(st.text(max_size=120) | st.text(alphabet=":|^0123456789.-e +abc", max_size=40))
    def prompts(text):
        check("prompt parser", parse_prompts, text)
        check("folder slug", lambda t: slugify(t) or 1 / 0, text)

    @cfg
    @given(st.lists(st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=20)), max_size=4))
    def sets(items):
        check("--set key=value", load_settings, None, None, {"prompt": "a cat"}, items)

    @cfg
    @given(st.dictionaries(keys, values, max_size=5))
    def mappings(job):
        check("settings mapping (YAML/JSONL job)", load_settings, None, None, dict({"prompt": "x"}, **job))

    @cfg
    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    def files(data):
        for name in ("p.txt", "p.yaml", "p.jsonl"):
            (tmp / name).write_bytes(data)
            check(f"batch file ({name.split('.')[1]})", read_jobs, tmp / name)

    for run in (prompts, sets, mappings, files):
        run()
    print("| category | tried | accepted | refused with a clear error | crashed |")
    print("|---|---|---|---|---|")
    for cat in dict.fromkeys(c for c, _ in tally):
        print(
            f"| {cat} | {tally[cat, 'tried']} | {tally[cat, 'accepted']} | "
            f"{tally[cat, 'refused with a clear error']} | {tally[cat, 'crashed']} |"
        )
    for c in crashes:
        print("CRASH", c)
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
