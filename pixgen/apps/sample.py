"""`pixgen sample`: the DALL-E pipeline alone. Draw `prior_samples` code grids from the learned
prior, rerank their images by CLIP, keep the best K, and take no gradient steps.

Each kept image is saved with the settings that make it again (`--init prior`, its
`prior_rank`, no steps), so `pixgen reproduce sample-2.png` draws the same samples and gives the
same pixels; beside them `scores.json`, a contact sheet and index.html."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from pixgen.api import clip_terms, make_run_drawer, prepare
from pixgen.apps.clip_tools import ensemble_score
from pixgen.drawers import drawer_class
from pixgen.errors import PixgenError
from pixgen.outputs.writer import make_run_dir, save_png, write_gallery, write_json
from pixgen.phases import Hooks, Phase
from pixgen.prior.start import draw_and_rank, prior_name
from pixgen.runtime.device import seed_everything

MAX_KEEP = 64


@dataclass
class SampleResult:
    run_dir: Path
    images: list[Path]
    scores: list[dict]  # per kept image, best first: rank, sample, loss, clip
    seed: int
    seconds: float


def check_keep(keep: int, samples: int) -> None:
    """Refuse a --keep that is not between 1 and the samples drawn (at most MAX_KEEP)."""
    if not 1 <= keep <= min(samples, MAX_KEEP):
        raise PixgenError(f"--keep must be between 1 and {min(samples, MAX_KEEP)} (--prior-samples), got {keep}")


def sample_images(
    settings, keep: int = 4, models=None, run_dir: Path | None = None, hooks: Hooks | None = None
) -> SampleResult:
    """Draw, rerank and keep the best `keep` samples of the run's prior; write them (see the
    module's docstring). The random streams are those of `generate` with `--init prior` and no
    steps, so each kept image is what that run gives at its rank. `hooks` as for generate."""

    t0 = time.perf_counter()
    hooks = hooks or Hooks()
    check_keep(keep, settings.prior_samples)
    if not drawer_class(settings.drawer).takes_codes:
        raise PixgenError("setting 'drawer': pixgen sample draws VQGAN codes: it needs --drawer vqgan")
    run = prepare(replace(settings, init="prior", iterations=0, prior_rank=1), models, hooks)
    generator = seed_everything(run.settings.seed)
    drawer = make_run_drawer(run)
    hooks.enter(Phase.PROMPTS, "encoding prompts…")
    terms = clip_terms(run)
    ranked = draw_and_rank(run, drawer, terms, generator, hooks)
    hooks.enter(Phase.WRITING_SAMPLES, "writing the samples…")
    if run_dir is None:
        run_dir = make_run_dir(run.settings.output_dir, run.settings.prompt)
    else:
        try:
            Path(run_dir).mkdir(parents=True)
        except OSError as e:
            raise PixgenError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    images, scores = _write(run, drawer, ranked, keep, Path(run_dir), time.perf_counter() - t0)
    return SampleResult(run_dir, images, scores, run.settings.seed, time.perf_counter() - t0)


def _write(run, drawer, ranked, keep: int, run_dir: Path, seconds: float) -> tuple[list[Path], list[dict]]:
    """The kept samples' PNGs (each with the settings that make it again), scores.json, run.json,
    the contact sheet and index.html."""

    images, scores, cards = [], [], []
    for rank in range(1, keep + 1):
        index = ranked.order[rank - 1]
        with torch.no_grad():
            image = drawer.render(ranked.starts[index])
        record = dict(run.record(), prior_rank=rank, start=ranked.record(prior_name(run.settings), rank))
        path = run_dir / f"sample-{rank}.png"
        save_png(path, image, record)
        clip = ensemble_score(run.models, path, run.settings.prompt)
        score = {"rank": rank, "sample": index, "loss": ranked.losses[index], "clip": clip, "image": path.name}
        scores.append(score | ({"class": record["start"]["class"]} if "class" in record["start"] else {}))
        images.append(path)
        job = SimpleNamespace(prompt=f"#{rank} {run.settings.prompt}")
        cards.append(SimpleNamespace(image=path, score=clip, seed=run.settings.seed, seconds=seconds, job=job))
    condition = {"condition": ranked.condition.text, "samples": len(ranked.losses)}
    write_json(run_dir / "scores.json", condition | ranked.condition.record() | {"kept": scores})
    write_json(run_dir / "run.json", {"settings": run.record(), "finished": True, "kept": scores})
    write_gallery(run_dir, cards, title="pixgen sample")
    return images, scores
