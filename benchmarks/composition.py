"""Composition on the shapes world, GenEval's tasks graded by an exact pixel judge
(pixgen.shapes.scenes): two objects (colour attribution), position and counting (2-4 of a shape),
each scene asked with region prompts and, as the baseline, in one sentence without regions, on
the same seeds, in one process (paired).

Scenes share one background (the shapes VQGAN, trained on pictures of one background, draws a
canvas of several backgrounds in one colour: its GroupNorm statistics are the whole image's).
Every scene holds a held-out combination (pixgen.shapes.world.HELD_OUT, never seen in training);
a two-subject scene pairs it with another combination on the same background, of another colour
and shape.

    .venv/bin/python benchmarks/composition.py --seeds 3 --jsonl composition.jsonl \\
        --variant "regions|" --variant "64|size=[64,64]"
    .venv/bin/python benchmarks/composition.py --report composition.jsonl

Each variant is `LABEL|key=value ...` (as --set) applied to the region prompts, `encoder=FILE` among
them for another shapes VQGAN encoder (as in shapes_adherence.py); `--baseline`
(on by default) also runs every scene as one sentence at the preset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.api import generate  # noqa: E402
from pixgen.models.loading import load_models  # noqa: E402
from pixgen.regions import REGIONS, parse_region  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402
from pixgen.shapes.scenes import TASKS, Asked  # noqa: E402

# what each region word of a scene means, as the prompt syntax reads it
NAMED = {**REGIONS, **{box: parse_region(box, box) for box in ("0.25,0.5,0.75,1", "0.25,0,0.75,0.5")}}
RELATION = {  # the baseline's words for where the first subject is, relative to the second
    ("left", "right"): "to the left of",
    ("right", "left"): "to the right of",
    ("top", "bottom"): "above",
    ("bottom", "top"): "below",
    ("top-left", "bottom-right"): "above and to the left of",
    ("top-right", "bottom-left"): "above and to the right of",
    ("bottom-left", "top-right"): "below and to the left of",
    ("bottom-right", "top-left"): "below and to the right of",
}
COUNT_LAYOUTS = [
    ("left", "right"),
    ("top", "bottom"),
    ("top-left", "top-right", "0.25,0.5,0.75,1"),
    ("top-left", "top-right", "bottom-left", "bottom-right"),
]
NUMBER = {2: "two", 3: "three", 4: "four"}


def partners(combo: world.Combo, k: int) -> list[world.Combo]:
    """k combinations on `combo`'s background, of another colour and shape (spread over the list)."""
    others = [
        c for c in world.ALL_COMBOS
        if c.background == combo.background and c.colour != combo.colour and c.shape != combo.shape
    ]  # fmt: skip
    return others[:: max(1, len(others) // k)][:k]


def scenes(task: str) -> list[tuple[list[str], list[world.Combo]]]:
    """(region names, combinations) of every scene of a task: 40 or more, each with a held-out one."""
    out = []
    for i, held in enumerate(world.HELD_OUT):
        if task == "counting":
            out += [(list(layout), [held] * len(layout)) for layout in COUNT_LAYOUTS]
            continue
        layouts = list(RELATION) if task == "position" else [("left", "right"), ("top", "bottom")]
        for j, other in enumerate(partners(held, 4)):
            names = layouts[(i + j) % len(layouts)]
            out.append((list(names), [held, other] if j % 2 == 0 else [other, held]))
    return out


def region_prompt(names: list[str], combos: list[world.Combo]) -> str:
    return " | ".join(f"{c.caption(0)} @{n}" for n, c in zip(names, combos, strict=True))


def sentence(task: str, names: list[str], combos: list[world.Combo]) -> str:
    """The same scene in one sentence, without regions (the baseline)."""
    a = combos[0]
    if task == "counting":
        return f"{NUMBER[len(combos)]} {a.colour} {a.shape}s on a {a.background} background"
    b = combos[1]
    if task == "position":
        return f"a {a.colour} {a.shape} {RELATION[tuple(names)]} a {b.colour} {b.shape} on a {a.background} background"
    return f"a {a.colour} {a.shape} and a {b.colour} {b.shape} on a {a.background} background"


def run(a) -> None:
    from shapes_adherence import split_encoder  # the benchmarks' folder is the script's

    from pixgen.shapes import models as shapes_models

    variants = [(v.partition("|")[0].strip(), v.partition("|")[2].split()) for v in a.variant] or [("regions", [])]
    if a.baseline:
        variants.append(("sentence", []))
    encoders = {label: split_encoder(sets) for label, sets in variants}
    out = Path(tempfile.mkdtemp(prefix="pixgen-composition-"))
    models, done = {}, set()
    if a.jsonl and Path(a.jsonl).is_file():
        done = {(r["variant"], r["task"], r["scene"], r["seed"]) for r in map(json.loads, open(a.jsonl))}
    for task in a.tasks:
        for n, (names, combos) in enumerate(scenes(task)[: a.first]):
            scene = [Asked(c, NAMED[name]) for name, c in zip(names, combos, strict=True)]
            for seed in range(a.seeds):
                for label, sets in variants:
                    if (label, task, n, seed) in done:
                        continue
                    sets, shapes_models.ENCODER_FILE = encoders[label]  # loaded lazily, by the run that fits
                    text = sentence(task, names, combos) if label == "sentence" else region_prompt(names, combos)
                    over = {"prompt": text, "seed": seed, "output_dir": str(out), "gif": False}
                    s = load_settings(preset="shapes", overrides=over, sets=sets)
                    key = (s.vqgan, tuple(s.clip), s.precision)
                    if key not in models:
                        models[key] = load_models(s.vqgan, s.clip, torch.device("cpu"))
                    t0 = time.perf_counter()
                    result = generate(s, models=models[key])
                    seconds = time.perf_counter() - t0
                    from PIL import Image

                    image = np.asarray(Image.open(result.image).convert("RGB"))
                    marks = TASKS[task](image, scene)
                    rec = {"variant": label, "task": task, "scene": n, "seed": seed, "prompt": text,
                           "seconds": seconds, "image": str(result.image), **marks}  # fmt: skip
                    if a.jsonl:
                        with open(a.jsonl, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                    print(f"{label:>10} {task:<12} {n:3d} seed {seed} {seconds:5.1f} s {marks}", flush=True)


def report(paths: list[str]) -> None:
    records = [json.loads(line) for p in paths for line in open(p)]
    groups = defaultdict(list)
    for r in records:
        groups[(r["task"], r["variant"])].append(r)
    print("| task | variant | n | all | " + " | ".join(("detail",)) + " | s/image (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (task, variant), rs in sorted(groups.items()):
        keys = [k for k in rs[0] if isinstance(rs[0][k], bool) and k != "all"]
        detail = ", ".join(f"{k} {100 * sum(r[k] for r in rs) / len(rs):.0f}%" for k in keys)
        share = 100 * sum(r["all"] for r in rs) / len(rs)
        seconds = statistics.median(r["seconds"] for r in rs)
        print(f"| {task} | {variant} | {len(rs)} | {share:.0f}% | {detail} | {seconds:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first", type=int, default=None, help="only the first N scenes of each task")
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--jsonl")
    p.add_argument("--report", nargs="+")
    a = p.parse_args()
    if a.report:
        report(a.report)
        return
    torch.set_num_threads(1)
    run(a)


if __name__ == "__main__":
    main()
