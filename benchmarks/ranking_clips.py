"""Candidate ranking CLIPs for the shapes preset's prior start (issue 29), paired on the same samples.

`draw` draws, for each held-out prompt and 6 seeds from --seed0, the preset's prior samples (32 at
guidance 2; the first 16 are the preset's own) and judges every one; `rank` ranks the first --n of
them as the preset does (starts.candidates.score_starts, the same cutout streams for every ranker)
with the CLIPs --clips (names, or a candidate's file as `pixgen-shapes:FILE`) and writes the picks
beside the pool; `report` pairs the picks of several rankers.

    B=".venv/bin/python benchmarks/ranking_clips.py"
    $B draw --pool p0.pkl --seed0 0
    $B rank --pool p0.pkl --tag preset
    $B rank --pool p0.pkl --tag new32 --clips pixgen-shapes:new/clip.safetensors --cutn 32
    $B report --pool p0.pkl preset new32
"""

import argparse
import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pixgen.api import clip_terms, make_run_drawer, prepare
from pixgen.models.loading import load_models
from pixgen.prior.conditions import condition_for
from pixgen.prior.model import sample
from pixgen.prior.start import CodeStarts, load_run_prior, sampling_of
from pixgen.runtime.device import seed_everything
from pixgen.settings import load_settings
from pixgen.shapes import world
from pixgen.shapes.judge import judge, off_palette, specks
from pixgen.starts.candidates import score_starts

torch.set_num_threads(1)


def settings(combo, seed, clip):
    return load_settings(
        preset="shapes", overrides={"prompt": combo.caption(0), "seed": seed, "gif": False, "clip": clip}
    )


def draw(pool: Path, seed0: int):
    s = load_settings(preset="shapes", overrides={"prompt": "x"})
    models = load_models(s.vqgan, s.clip, torch.device("cpu"))
    recs = []
    for combo in world.HELD_OUT:
        for seed in range(seed0, seed0 + 6):
            s = settings(combo, seed, ["shapes", "shapes-b"])
            run = prepare(s, models)
            drawer, prior = make_run_drawer(run), load_run_prior(run)
            gen = seed_everything(seed)
            codes = sample(prior, condition_for(prior, run).value, 32, gen, replace(sampling_of(s), guidance=2.0))
            starts = CodeStarts(codes, models.decoder.codebook, 8, 8)
            with torch.no_grad():
                imgs = torch.cat([drawer.render(starts[i]) for i in range(32)])
            arr = (imgs.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            read = [judge(a) for a in arr]
            recs.append(
                dict(
                    combo=combo,
                    seed=seed,
                    codes=codes,
                    state=gen.get_state(),
                    gstate=torch.get_rng_state(),
                    right=[r == combo for r in read],
                    colours=[r.colour == combo.colour and r.background == combo.background for r in read],
                    off=[bool(off_palette(a)) for a in arr],
                    specks=[specks(a) for a in arr],
                    images=arr,
                )
            )
            print(combo.caption(0), seed, np.mean(recs[-1]["right"][:16]), flush=True)
    pool.write_bytes(pickle.dumps(recs))


def rank(pool: Path, clips, n, cutn, tag):
    recs = pickle.loads(pool.read_bytes())
    s = load_settings(preset="shapes", overrides={"prompt": "x", "clip": clips})
    models = load_models(s.vqgan, s.clip, torch.device("cpu"))
    picks, all_losses = [], []
    for r in recs:
        run = prepare(settings(r["combo"], r["seed"], clips), models)
        drawer, terms = make_run_drawer(run), clip_terms(run)
        starts = CodeStarts(r["codes"][:n], models.decoder.codebook, 8, 8)
        gen = torch.Generator()
        gen.set_state(r["state"])
        torch.set_rng_state(r["gstate"])
        with torch.no_grad():
            losses = score_starts(drawer, terms, starts, gen, cutn=cutn)
        picks.append(int(np.argmin(losses)))
        all_losses.append(losses)
    out = pool.with_name(f"{pool.stem}_{tag}.json")
    out.write_text(json.dumps({"picks": picks, "losses": all_losses}))
    right = [r["right"][p] for r, p in zip(recs, picks, strict=True)]
    print(
        tag,
        "all three",
        np.mean(right),
        "colours",
        np.mean([r["colours"][p] for r, p in zip(recs, picks, strict=True)]),
        "off",
        np.mean([r["off"][p] for r, p in zip(recs, picks, strict=True)]),
        "specks",
        np.mean([r["specks"][p] > 0 for r, p in zip(recs, picks, strict=True)]),
    )


def report(pool: Path, tags: list[str]) -> None:
    recs = pickle.loads(pool.read_bytes())
    right = {
        t: [
            r["right"][p]
            for r, p in zip(recs, json.loads(pool.with_name(f"{pool.stem}_{t}.json").read_text())["picks"], strict=True)
        ]
        for t in tags
    }
    print(f"n = {len(recs)}; a right sample among the first 16: {np.mean([any(r['right'][:16]) for r in recs]):.0%}")
    for t in tags:
        more = sum(a and not b for a, b in zip(right[t], right[tags[0]], strict=True))
        fewer = sum(b and not a for a, b in zip(right[t], right[tags[0]], strict=True))
        print(f"{t}: {sum(right[t])} right; against {tags[0]}: {more} more, {fewer} fewer")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["draw", "rank", "report"])
    p.add_argument("tags", nargs="*", help="report: the rankers' tags, the first the reference")
    p.add_argument("--pool", type=Path, required=True)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--clips", default="shapes,shapes-b")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--cutn", type=int, default=8)
    p.add_argument("--tag", default="preset")
    a = p.parse_intermixed_args()
    if a.what == "draw":
        draw(a.pool, a.seed0)
    elif a.what == "rank":
        rank(a.pool, a.clips.split(","), a.n, a.cutn, a.tag)
    else:
        report(a.pool, a.tags)
