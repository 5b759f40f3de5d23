"""Prompt adherence on the shapes world, graded by the independent pixel judge.

For each (shape, colour, background) combination of a set (the 10 held-out ones by default)
and several seeds, generate one image per variant of the settings and read it back with the
judge. Every variant runs on the same prompts and seeds, in one process, so the comparison is
paired. Baselines: the judge on freshly rendered world images (is the judge right?) and, with
--baseline, the untouched initial image of each run (what does the optimisation buy?).

The judge maps every pixel to the nearest of the six world colours; a colour outside them
(orange, cyan, a muddy mix) is therefore read as its nearest world colour, and is reported
separately: "off-palette" counts images where more than 5% of the flat pixels (edges excluded)
lie further than 60 (RGB distance) from every world colour (`judge.off_palette`). "With specks"
counts images with at least one speck (`judge.specks`: a group of 2-24 pixels far from every
world colour and from the blend of the image's two colours), "specks" all of them.

    .venv/bin/python benchmarks/shapes_adherence.py --seeds 6 \\
        --variant "preset" --variant "no save-best|save_best=false" [--combos train --first 10]
    .venv/bin/python benchmarks/shapes_adherence.py --report run1.jsonl run2.jsonl

Each variant is `LABEL|key=value key=value ...` (values as in --set); `encoder=FILE` among them
runs that variant with another shapes VQGAN encoder (a trained candidate against the shipped one,
`python -m pixgen.shapes.train encoder`). `--frames N` also grades
each run's progress frame every N steps, as "LABEL @ K steps": with a constant learning rate
(and no save-best or EMA) that frame is what a K-step run would end on (to within one step), so one long run
gives the adherence-against-budget curve. `--jsonl FILE` appends one
record per image, so shards (--seed-offset) can run in parallel and be reported together.
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
from pixgen.drawers.vqgan import init_latent, render  # noqa: E402
from pixgen.models.loading import load_models  # noqa: E402
from pixgen.runtime.device import seed_everything  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402
from pixgen.shapes.judge import judge, off_palette, specks, subject_box  # noqa: E402

FIELDS = ("background", "colour", "shape")
COLUMNS = ("background", "colour", "colours", "shape", "all", "off_palette", "specked")


def grade(image: np.ndarray, combo: world.Combo) -> dict[str, bool]:
    got = judge(image)
    marks = {f: getattr(got, f) == getattr(combo, f) for f in FIELDS}
    marks["colours"] = marks["background"] and marks["colour"]
    marks["all"] = all(marks[f] for f in FIELDS)
    marks["off_palette"] = off_palette(image)
    marks["specks"] = specks(image)
    marks["specked"] = marks["specks"] > 0
    return marks


def geometry(image: np.ndarray) -> dict:
    """The subject's centre and size as the judge sees them (None when it sees none)."""
    box = subject_box(image)
    return dict(zip(("cx", "cy", "side"), box, strict=True)) if box else {"cx": None, "cy": None, "side": None}


def rates(marks: list[dict]) -> dict[str, float]:
    # records written before the speck measure have no "specked": nan, not a count of zero
    return {k: 100 * sum(m[k] for m in marks) / len(marks) if all(k in m for m in marks) else float("nan")
            for k in COLUMNS}  # fmt: skip


def to_array(t: torch.Tensor) -> np.ndarray:
    return (t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, rest = text.partition("|")
    return label.strip(), rest.split()


def split_encoder(sets: list[str]) -> tuple[list[str], Path]:
    """A variant's settings without its `encoder=FILE`, and the shapes encoder file it runs with."""
    from pixgen.shapes import models as shapes_models

    files = [Path(x.partition("=")[2]) for x in sets if x.startswith("encoder=")]
    for f in files:
        if not f.is_file():
            sys.exit(f"{Path(sys.argv[0]).stem}: encoder={f}: no such file")
    return [x for x in sets if not x.startswith("encoder=")], (files[-1] if files else shapes_models.ENCODER_FILE)


def combos_of(name: str, first: int) -> list[world.Combo]:
    combos = list(world.HELD_OUT if name == "held-out" else world.TRAIN_COMBOS)
    if name == "train":  # a fixed, spread-out sample of the training combinations
        combos = combos[:: max(1, len(combos) // first)]
    return combos[:first]


def run(a) -> list[dict]:
    from pixgen.shapes import models as shapes_models

    variants = [parse_variant(v) for v in a.variant] or [("preset", [])]
    encoders = {label: split_encoder(sets) for label, sets in variants}
    models_cache: dict = {}
    out = Path(tempfile.mkdtemp(prefix="pixgen-adherence-"))
    records, done = [], set()
    if a.skip_done and a.jsonl and Path(a.jsonl).is_file():  # resume an interrupted measurement
        done = {
            (r["variant"], r["combo"], r["seed"]) for r in map(json.loads, Path(a.jsonl).read_text().split("\n")[:-1])
        }
    k, n = (int(x) for x in a.combo_slice.split("/"))
    for combo in combos_of(a.combos, a.first)[k::n]:
        for seed in range(a.seed_offset, a.seed_offset + a.seeds):
            for label, sets in variants:
                if (label, combo.caption(0), seed) in done:
                    continue
                sets, shapes_models.ENCODER_FILE = encoders[label]  # loaded lazily, by the run that fits
                s = load_settings(
                    preset=a.preset,
                    overrides={
                        "prompt": combo.caption(a.template),
                        "seed": seed,
                        "output_dir": str(out),
                        "gif": False,
                        "save_every": a.frames,
                    },
                    sets=sets,
                )
                key = (s.vqgan, tuple(s.clip), s.precision)  # bf16 models are cast once: one set per precision
                if key not in models_cache:
                    models_cache[key] = load_models(s.vqgan, s.clip, torch.device("cpu"))
                models = models_cache[key]
                t0 = time.perf_counter()
                result = generate(s, models=models)
                seconds = time.perf_counter() - t0
                from PIL import Image

                pixels = np.asarray(Image.open(result.image).convert("RGB"))
                marks = dict(grade(pixels, combo), **geometry(pixels), image=str(result.image))
                rec = {"variant": label, "sets": sets, "combo": combo.caption(0), "seed": seed, "seconds": seconds}
                found = [{**rec, **marks}]
                for frame in sorted((result.run_dir / "frames").glob("*.png")) if a.frames else []:
                    # with a constant learning rate, the frame at step k of this run is the final
                    # image of a k-step run (to within one step); its time is the run's time pro rata
                    k = int(frame.stem)
                    if k < s.iterations:
                        marks_k = grade(np.asarray(Image.open(frame).convert("RGB")), combo)
                        share = {"variant": f"{label} @ {k} steps", "seconds": seconds * k / s.iterations}
                        found.append({**rec, **share, **marks_k})
                records += found
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in found)
                print(f"{label:>24} seed {seed} {combo.caption(0):<45} {seconds:5.1f} s  {marks}", flush=True)
            if a.world:  # the world's own pictures of the combination: the variety to match
                pixels = world.sample(np.random.default_rng([seed, 7]), combo)
                path = out / f"world-{combo.caption(0).replace(' ', '-')}-{seed}.png"
                Image.fromarray(pixels).save(path)
                marks = dict(grade(pixels, combo), **geometry(pixels), image=str(path))
                rec = {"variant": "world samples", "combo": combo.caption(0), "seed": seed, "seconds": 0.0}
                records.append({**rec, **marks})
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps(records[-1]) + "\n")
            if a.baseline:
                g = seed_everything(seed)
                with torch.no_grad():
                    z0 = init_latent(models.decoder, s.size[0], s.size[1], g, s.init)
                    marks = grade(to_array(render(models.decoder, z0)), combo)
                records.append({"variant": "initial image, no optimisation", "seed": seed, "seconds": 0.0, **marks})
    print(f"images in {out}")
    return records


def _pairwise(paths: list[str]) -> float:
    """Mean absolute difference per pixel channel (0-255) over every pair of images."""
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB").resize((64, 64)), dtype=np.float32) for p in paths]
    pairs = [np.abs(a - b).mean() for i, a in enumerate(images) for b in images[i + 1 :]]
    return float(np.mean(pairs)) if pairs else float("nan")


def _spread(values: list) -> float:
    values = [v for v in values if v is not None]
    return float(np.std(values)) if len(values) > 1 else float("nan")


def variety(marks: list[dict]) -> dict[str, float]:
    """Per prompt, across its seeds: the mean pairwise pixel distance and the spread (std, px) of
    the subject's centre and size; averaged over the prompts."""
    by_combo = defaultdict(list)
    for m in marks:
        if m.get("image"):
            by_combo[m["combo"]].append(m)
    rows = [
        (_pairwise([m["image"] for m in ms]), np.hypot(_spread([m["cx"] for m in ms]), _spread([m["cy"] for m in ms])),
         _spread([m["side"] for m in ms]))
        for ms in by_combo.values()
    ]  # fmt: skip
    if not rows:
        return {}
    pixel, centre, side = (float(np.nanmean([r[i] for r in rows])) for i in range(3))
    return {"pixel": pixel, "centre": centre, "side": side}


def report_variety(by: dict) -> None:
    table = {label: variety(marks) for label, marks in by.items()}
    table = {k: v for k, v in table.items() if v}
    if not table:
        return
    ref = table.get("world samples")
    print()
    print("| variant | pixel distance between seeds | of the world's | centre spread (px) | size spread (px) |")
    print("|---|---|---|---|---|")
    for label, v in table.items():
        share = f"{100 * v['pixel'] / ref['pixel']:.0f}%" if ref else "n/a"
        print(f"| {label} | {v['pixel']:.1f} | {share} | {v['centre']:.1f} | {v['side']:.1f} |")


def report(records: list[dict]) -> None:
    by = defaultdict(list)
    for r in records:
        by[r["variant"]].append(r)
    heads = ("variant", "n", "background", "shape colour", "both colours", "shape", "all three", "off-palette")
    print("| " + " | ".join(heads) + " | with specks | specks | s/image (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    first = next((k for k, v in by.items() if "combo" in v[0]), None)
    for label, marks in by.items():
        r = rates(marks)
        secs = statistics.median(m["seconds"] for m in marks)
        cells = " | ".join(f"{r[k]:.0f}%" for k in COLUMNS)
        count = sum(m.get("specks", 0) for m in marks)
        print(f"| {label} | {len(marks)} | {cells} | {count} | {secs:.2f} |")
    # paired: on the same (prompt, seed), how often a variant gets all three right where the
    # first one does not, and the other way round
    if first is None:
        return
    base = {(m["combo"], m["seed"]): m["all"] for m in by[first]}
    for label, marks in by.items():
        if label == first or "combo" not in marks[0]:
            continue
        pairs = [(base[(m["combo"], m["seed"])], m["all"]) for m in marks if (m.get("combo"), m["seed"]) in base]
        if pairs:
            wins = sum(b and not a for a, b in pairs)
            losses = sum(a and not b for a, b in pairs)
            print(f"paired vs {first!r}: {label!r} all-three right {wins} more, {losses} fewer (n={len(pairs)})")
    report_variety(by)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--combos", choices=["held-out", "train"], default="held-out")
    p.add_argument("--first", type=int, default=10, help="how many combinations")
    p.add_argument("--preset", default="shapes")
    p.add_argument("--variant", action="append", default=[], help="LABEL|key=value ... (repeatable)")
    p.add_argument("--template", type=int, default=0, help="caption template for the prompt")
    p.add_argument("--baseline", action="store_true", help="also grade each run's initial image")
    p.add_argument("--world", action="store_true", help="also grade the world's own picture of each prompt and seed")
    p.add_argument("--judge-check", action="store_true", help="grade 450 rendered world images first")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--frames", type=int, default=0, help="also grade the progress frame every N steps (constant lr only)"
    )
    p.add_argument("--jsonl", help="append one record per image to this file")
    p.add_argument("--combo-slice", default="0/1", metavar="K/N", help="only every N-th combination from the K-th")
    p.add_argument("--skip-done", action="store_true", help="skip the images --jsonl already holds")
    p.add_argument("--report", nargs="+", metavar="JSONL", help="only report these record files")
    a = p.parse_args()
    if a.report:
        report([json.loads(line) for path in a.report for line in Path(path).read_text().splitlines() if line])
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    records = []
    if a.judge_check:
        rng = np.random.default_rng(123)
        for c in world.ALL_COMBOS:
            for i in range(5):
                marks = grade(world.sample(rng, c), c)
                records.append({"variant": "judge on rendered world images", "seed": i, "seconds": 0, **marks})
    records += run(a)
    print(f"preset {a.preset}; {a.combos} combinations x {a.seeds} seeds; torch threads {torch.get_num_threads()}")
    report(records)


if __name__ == "__main__":
    main()
