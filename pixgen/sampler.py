"""The DALL-E pipeline over VQGAN codes: draw code grids from a learned prior (pixgen.prior),
decode them, and rank them by the run's CLIP terms as a step scores an image. `--init prior`
starts the loop from the best one (`prior_rank`: the Nth best); `pixgen sample` keeps the best
K and takes no gradient steps.

The prior's condition comes from the prompt's first phrase: a CLIP text embedding (priors
trained on CLIP image embeddings), the caption's tokens (text priors), or an ImageNet class that
CLIP picks for the prompt (taming's class-conditional transformer; `prior_class` overrides it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from pixgen.errors import PixgenError
from pixgen.ops import codes_to_latent
from pixgen.prior import Prior, Sampling, sample

log = logging.getLogger("pixgen")


@dataclass
class Condition:
    """What the prior is asked for, as `pixgen.prior.sample` takes it, and in words."""

    value: Tensor | None
    text: str


def prior_name(settings) -> str:
    """The prior a run draws from: `settings.prior`, else the one trained with its VQGAN."""
    if settings.prior:
        return settings.prior
    from pixgen.prior_models import prior_for_vqgan

    name = None if settings.vqgan_ckpt else prior_for_vqgan(settings.vqgan)
    if name is None:
        raise PixgenError(f"setting 'prior': no prior is known for the VQGAN {settings.vqgan!r} (give --prior)")
    return name


def load_run_prior(run, offline: bool = False, on_status=None) -> Prior:
    """The run's prior on its device, loaded once per Models (batch and serve reuse it)."""
    from pixgen.prior_models import load_prior_model

    name, models = prior_name(run.settings), run.models
    if name not in models.priors:
        dtype = run.precision.weights if run.precision is not None else torch.float32
        prior = load_prior_model(name, models.decoder.codebook.shape[0], offline, on_status, dtype)
        models.priors[name] = prior.to(run.device)
    return models.priors[name]


def _scorer_named(run, name: str | None):
    """The run's CLIP scorer called `name` (loaded when the ensemble lacks it); the first one
    when `name` is None."""
    from pixgen.models import load_scorer

    for scorer in run.models.scorers:
        if name is None or scorer.name == name:
            return scorer
    return load_scorer(name).to(run.device)


def condition_for(prior: Prior, run) -> Condition:
    """The prior's condition for the prompt's first phrase (story mode starts there)."""
    kind, prompts = prior.arch.cond, [p for p in run.plan.phases[0] if p.weight > 0]
    texts, weights = [p.text for p in prompts], [p.weight for p in prompts]
    if kind == "none":
        return Condition(None, "unconditional")
    if kind == "class":
        return _class_condition(run, texts, weights)
    scorer = _scorer_named(run, prior.clip_name)
    if kind == "text":
        from pixgen.prior import text_condition

        main = texts[max(range(len(texts)), key=weights.__getitem__)] if texts else ""
        return Condition(text_condition(prior.arch, scorer.tokenizer, [main]), f"caption tokens of {main!r}")
    if not texts:
        return Condition(prior.null_condition(1, "cpu"), "nothing (no positive prompt)")
    steer = [p for p in (*run.plan.phases[0], *run.plan.negatives)]  # negatives subtract
    with torch.no_grad():
        embeds = F.normalize(scorer.encode_text([p.text for p in steer]).float(), dim=-1)
    w = torch.tensor([p.weight for p in steer], device=embeds.device)[:, None]
    value = F.normalize((embeds * w).sum(0), dim=0)[None]
    less = " less the negatives" if w.min() < 0 else ""
    return Condition(value, f"{scorer.name} text embedding of the prompt{less}")


def _class_condition(run, texts: list[str], weights: list[float]) -> Condition:
    from pixgen.prior_classes import choose_classes, class_condition, class_index, imagenet_classes

    if run.settings.prior_class:
        index = class_index(run.settings.prior_class)
        return Condition(class_condition(index), f"class {imagenet_classes()[index]!r} (--prior-class)")
    log.info("choosing the ImageNet class (a CLIP's first use embeds 80,000 class prompts: minutes; then cached)")
    top = choose_classes(_scorer_named(run, None), texts, weights)
    picks = ", ".join(f"{name} {p:.0%}" for _, name, p in top)
    log.info("ImageNet classes CLIP picks for the prompt: %s", picks)
    return Condition(class_condition(top[0][0]), f"class {top[0][1]!r} (CLIP's pick of: {picks})")


def sampling_of(settings) -> Sampling:
    s = settings
    return Sampling(s.prior_temperature, s.prior_top_k, s.prior_top_p, s.prior_guidance)


class CodeStarts(Sequence):
    """Code grids (N, h, w) as starting latents (1, C, rows, columns) of the run's size, made one
    at a time (a grid of another size is resized, nearest code)."""

    def __init__(self, codes: Tensor, codebook: Tensor, rows: int, columns: int):
        self.codes, self.codebook, self.shape = codes, codebook, (rows, columns)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> Tensor:
        grid = self.codes[i][None, None].float()
        if grid.shape[-2:] != self.shape:
            grid = F.interpolate(grid, size=self.shape, mode="nearest")
        return codes_to_latent(grid[0].long().to(self.codebook.device), self.codebook).clone()


@dataclass
class Ranked:
    """Samples of a prior, ranked: `order[0]` is the index of the one the CLIP terms like best."""

    starts: CodeStarts
    losses: list[float]
    order: list[int]
    condition: str

    def record(self, name: str, rank: int) -> dict:
        """What run.json says of the start."""
        return {"prior": name, "condition": self.condition, "rank": rank, "losses": sorted(self.losses)}


def draw_and_rank(run, terms: list, generator: torch.Generator, phase=None, offline: bool = False) -> Ranked:
    """Draw `prior_samples` code grids from the run's prior for its prompt (from `generator`),
    and rank their images by the CLIP terms' first-step loss (optimise.start_losses)."""
    from pixgen.optimise import start_losses

    s = run.settings
    prior = load_run_prior(run, offline, phase)
    if phase:
        phase(f"drawing {s.prior_samples} samples from the prior…")
    if s.prior_guidance != 1 and not prior.arch.guidance:
        raise PixgenError("setting 'prior_guidance': this prior was not trained for classifier-free guidance")
    condition = condition_for(prior, run)
    codes = sample(prior, condition.value, s.prior_samples, generator, sampling_of(s))
    f = run.models.decoder.factor
    starts = CodeStarts(codes, run.models.decoder.codebook, s.height // f, s.width // f)
    check = (lambda: phase("ranking the samples…")) if phase else None
    losses = start_losses(run.models.decoder, terms, starts, generator, checkpoint=check)
    order = sorted(range(len(losses)), key=losses.__getitem__)
    return Ranked(starts, losses, order, condition.text)


def prior_start(run, terms: list, generator: torch.Generator, phase=None) -> tuple[Tensor, dict]:
    """`--init prior`: the starting latent, the `prior_rank`th best of the ranked samples, and
    what run.json records of it."""
    ranked = draw_and_rank(run, terms, generator, phase)
    rank = run.settings.prior_rank
    return ranked.starts[ranked.order[rank - 1]], ranked.record(prior_name(run.settings), rank)
