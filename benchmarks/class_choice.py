"""The first class choice (issue 32): how long a CLIP's ImageNet class matrix takes to embed,
and what a smaller template set costs in the class chosen.

Times `pixgen.prior.classes._embed_classes` (the first use of a CLIP: every class in every
template, padding cut, shortest first) for ViT-B/32 with random weights (the real text tower)
at each dtype, template set and batch size asked; then compares the class each prompt gets from
the 7-template matrix with the one it gets from the 80-template matrix: top-1 agreement and the
mean overlap of the top 5, on the random-weight replica and on the shapes CLIP (the shapes
world's 18 colour-shape names as its classes, where the true class of each caption is known).

    PYTHONPATH=. .venv/bin/python benchmarks/class_choice.py [--dtypes bf16,fp32] [--batches 256]
        [--full-templates] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FREE_PROMPTS = [
    "a cat",
    "a lighthouse at sunset",
    "a bowl of fruit on a table",
    "a red sports car",
    "an oil painting of a mountain lake",
    "a dog playing in the snow",
    "a castle on a hill",
    "a cup of coffee",
    "a forest in autumn",
    "a robot in a city street",
    "a bird on a branch",
    "a ship in a storm",
    "a portrait of an old man",
    "a vase of flowers",
    "a bridge over a river",
    "a plate of pasta",
]


def embed(scorer, classes, templates, batch: int) -> tuple:
    """(classes x D matrix, wall seconds, CPU seconds) of one uncached class matrix."""
    from pixgen.prior.classes import _embed_classes

    wall, cpu = time.perf_counter(), time.process_time()
    matrix = _embed_classes(scorer, classes, templates, batch=batch)
    return matrix, time.perf_counter() - wall, time.process_time() - cpu


def agreement(scorer, prompts: list[str], fast, full, truth: list[int] | None = None) -> dict:
    """Top-1 agreement and top-5 overlap of the class chosen by `fast` and `full` for `prompts`
    (and each one's accuracy against `truth`, the true class of each prompt, when known)."""
    from pixgen.prior.classes import encode_texts

    e = encode_texts(scorer, prompts)
    a, b = (e @ fast.T), (e @ full.T)
    top1 = (a.argmax(1) == b.argmax(1)).float().mean().item()
    k = min(5, fast.shape[0])
    ta, tb = a.topk(k).indices.tolist(), b.topk(k).indices.tolist()
    overlap = sum(len(set(x) & set(y)) for x, y in zip(ta, tb, strict=True)) / (k * len(prompts))
    out = {"n": len(prompts), "top1_agree": top1, "top5_overlap": overlap}
    if truth is not None:
        t = list(truth)
        out["fast_right"] = sum(int(x[0] == y) for x, y in zip(ta, t, strict=True)) / len(t)
        out["full_right"] = sum(int(x[0] == y) for x, y in zip(tb, t, strict=True)) / len(t)
    return out


def replica(a) -> None:
    import torch

    from pixgen.models.scorer import build_clip
    from pixgen.prior import classes as pc

    classes = pc.imagenet_classes()
    sets = {"simple (7)": pc.imagenet_templates()}
    if a.full_templates:
        sets["openai (80)"] = pc.openai_templates()
    print("| dtype | templates | batch | texts | wall s | CPU s |")
    print("|---|---|---|---|---|---|")
    matrices = {}
    for dtype in a.dtypes.split(","):
        scorer = build_clip("ViT-B-32", seed=0).cast(torch.bfloat16 if dtype == "bf16" else torch.float32)
        for name, templates in sets.items():
            for batch in [int(b) for b in a.batches.split(",")]:
                if name.startswith("openai") and batch != int(a.batches.split(",")[0]):
                    continue  # the long one once
                m, wall, cpu = embed(scorer, classes, templates, batch)
                matrices[(dtype, name)] = m
                print(f"| {dtype} | {name} | {batch} | {len(classes) * len(templates)} | {wall:.1f} | {cpu:.1f} |")
                sys.stdout.flush()
        if a.full_templates:
            rng = random.Random(0)
            prompts = FREE_PROMPTS + [f"a painting of a {c} at dusk" for c in rng.sample(classes, 84)]
            r = agreement(scorer, prompts, matrices[(dtype, "simple (7)")], matrices[(dtype, "openai (80)")])
            print(f"agreement ViT-B-32 replica {dtype}: {r}")


def shapes(a) -> None:
    from pixgen.prior import classes as pc
    from pixgen.shapes import world
    from pixgen.shapes.models import shapes_clip

    names = [f"{c} {s}" for s in world.SHAPES for c in world.COLOURS]
    combos = list(world.ALL_COMBOS)
    prompts = [c.caption(t) for c in combos for t in range(len(world.TEMPLATES))]
    truth = [names.index(f"{c.colour} {c.shape}") for c in combos for _ in world.TEMPLATES]
    for which in ("shapes", "shapes-b"):
        scorer = shapes_clip(which)
        fast, _, _ = embed(scorer, names, pc.imagenet_templates(), 256)
        full, _, _ = embed(scorer, names, pc.openai_templates(), 256)
        print(f"agreement {which} CLIP (18 colour-shape classes, {len(prompts)} captions): "
              f"{agreement(scorer, prompts, fast, full, truth)}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--batches", default="256")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-templates", action="store_true", help="also embed the 80 templates and compare")
    p.add_argument("--no-shapes", action="store_true")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from benchmarks.speed import machine_header

    print(machine_header())
    if not a.no_shapes:
        shapes(a)
    replica(a)


if __name__ == "__main__":
    main()
