"""How the shapes preset's prior start picks: for each held-out prompt and seed, draw the
preset's samples at several guidances, judge every sample with the pixel judge, and rank the
same samples (same cutout streams) by several rankers; report the pick's adherence per
(guidance, samples, ranker), paired against the preset's own (guidance 3, 16, both CLIPs at 8
cutouts, as before issue 29). Shards write JSON files; `report` reads them together.

    .venv/bin/python benchmarks/prior_ranking.py run r0.json --seeds 3 --seed-offset 0 &
    .venv/bin/python benchmarks/prior_ranking.py run r3.json --seeds 3 --seed-offset 3 & wait
    .venv/bin/python benchmarks/prior_ranking.py report r0.json r3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixgen.api import clip_terms, make_run_drawer, prepare  # noqa: E402
from pixgen.loop.cutouts import Cutouts  # noqa: E402
from pixgen.models.loading import load_models  # noqa: E402
from pixgen.prior.conditions import condition_for  # noqa: E402
from pixgen.prior.model import sample  # noqa: E402
from pixgen.prior.start import CodeStarts, load_run_prior, sampling_of  # noqa: E402
from pixgen.runtime.device import seed_everything  # noqa: E402
from pixgen.settings import load_settings  # noqa: E402
from pixgen.shapes import world  # noqa: E402
from pixgen.shapes.judge import judge, off_palette, specks  # noqa: E402
from pixgen.starts.candidates import score_starts  # noqa: E402

GUIDANCE = (2.0, 3.0, 5.0)
DRAWN = 32  # per guidance; the first 16 are the preset's 16 (the prior samples in batches of 16)
RANKERS = ("both8", "both32", "a32", "b32", "plain")
BASE = (3.0, 16, "both8")


def rankers(terms: list) -> dict:
    """name -> (terms, cutouts per term): both CLIPs at 8 and 32, each alone at 32, both on the
    whole image with no augmentation."""
    whole = [replace(t, cutouts=Cutouts(t.scorer.input_size, 1, 1.0, 1.0, [], 0.0)) for t in terms]
    return {"both8": (terms, 8), "both32": (terms, 32), "a32": (terms[:1], 32), "b32": (terms[1:], 32),
            "plain": (whole, 1)}  # fmt: skip


def one_pair(combo, seed: int, models) -> list[dict]:
    s = load_settings(preset="shapes", overrides={"prompt": combo.caption(0), "seed": seed, "gif": False})
    run = prepare(s, models)
    drawer, terms, prior = make_run_drawer(run), clip_terms(run), load_run_prior(run)
    out = []
    for g in GUIDANCE:
        gen = seed_everything(seed)
        codes = sample(prior, condition_for(prior, run).value, DRAWN, gen, replace(sampling_of(s), guidance=g))
        starts = CodeStarts(codes, models.decoder.codebook, 8, 8)
        with torch.no_grad():
            images = torch.cat([drawer.render(starts[i]) for i in range(DRAWN)])
        arrays = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        read = [judge(a) for a in arrays]
        state, scores = gen.get_state(), {}
        for name, (ts, cutn) in rankers(terms).items():
            gen.set_state(state)
            scores[name] = score_starts(drawer, ts, starts, gen, cutn=cutn)
        out.append({
            "combo": combo.caption(0), "seed": seed, "guidance": g, "right": [r == combo for r in read],
            "colours": [r.colour == combo.colour and r.background == combo.background for r in read],
            "off": [bool(off_palette(a)) for a in arrays], "specks": [specks(a) for a in arrays], **scores,
        })  # fmt: skip
    return out


def report(records: list[dict]) -> None:
    print(f"n = {len({(r['combo'], r['seed']) for r in records})} prompt-seed pairs")
    heads = (
        "guidance",
        "samples",
        "ranker",
        "all three",
        "both colours",
        "off-palette",
        "with specks",
        "raw all three",
    )
    print("| " + " | ".join(heads) + " | a right one |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for g in GUIDANCE:
        rs = [r for r in records if r["guidance"] == g]
        for n in (16, DRAWN):
            for name in RANKERS:
                picks = [int(np.argmin(r[name][:n])) for r in rs]
                mean = lambda key, rs=rs, picks=picks: (
                    100 * np.mean([bool(r[key][p]) for r, p in zip(rs, picks, strict=True)])
                )  # noqa: E731
                spk = 100 * np.mean([r["specks"][p] > 0 for r, p in zip(rs, picks, strict=True)])
                raw = 100 * np.mean([np.mean(r["right"][:n]) for r in rs])
                any_right = 100 * np.mean([any(r["right"][:n]) for r in rs])
                rows[(g, n, name)] = {
                    (r["combo"], r["seed"]): bool(r["right"][p]) for r, p in zip(rs, picks, strict=True)
                }
                print(f"| {g:g} | {n} | {name} | {mean('right'):.0f}% | {mean('colours'):.0f}% | {mean('off'):.0f}% "
                      f"| {spk:.0f}% | {raw:.0f}% | {any_right:.0f}% |")  # fmt: skip
    base = rows[BASE]
    print(f"\npaired against {BASE} (all three right):")
    for key, marks in rows.items():
        if key != BASE:
            more = sum(marks[p] and not base[p] for p in base)
            fewer = sum(base[p] and not marks[p] for p in base)
            print(f"  {key}: {more} more, {fewer} fewer")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report"])
    p.add_argument("files", nargs="+", help="run: the file to write; report: the files to read")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.what == "report":
        report([r for f in a.files for r in json.loads(Path(f).read_text())])
        return
    torch.set_num_threads(a.threads)
    s = load_settings(preset="shapes", overrides={"prompt": "x"})
    models = load_models(s.vqgan, s.clip, torch.device("cpu"))
    records = []
    for combo in world.HELD_OUT:
        for seed in range(a.seed_offset, a.seed_offset + a.seeds):
            records += one_pair(combo, seed, models)
            print(combo.caption(0), seed, flush=True)
    Path(a.files[0]).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
