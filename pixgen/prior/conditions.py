"""What a prior is asked for, from a run's prompt: a CLIP text embedding (priors trained on CLIP
image embeddings), the caption's tokens (text priors), or an ImageNet class that CLIP picks for
the prompt (taming's class-conditional transformer; `prior_class` overrides it). The condition
comes from the prompt's first phrase (story mode starts there; its keyframes ask for each phrase)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from pixgen.models.loading import load_scorer
from pixgen.phases import Hooks, Phase
from pixgen.prior.classes import choose_classes, class_condition, class_index, imagenet_classes
from pixgen.prior.model import Prior, text_condition

log = logging.getLogger("pixgen")


@dataclass
class Condition:
    """What the prior is asked for, as `pixgen.prior.model.sample` takes it, and in words."""

    value: Tensor | None
    text: str


def _scorer_named(run, name: str | None):
    """The run's CLIP scorer called `name` (loaded when the ensemble lacks it); the first one
    when `name` is None."""
    for scorer in run.models.scorers:
        if name is None or scorer.name == name:
            return scorer
    return load_scorer(name).to(run.device)


def condition_for(prior: Prior, run, hooks: Hooks | None = None, phase: int = 0) -> Condition:
    """The prior's condition for the prompt's phrase `phase` (the first: story mode starts there)."""
    kind, prompts = prior.arch.cond, [p for p in run.plan.phases[phase] if p.weight > 0]
    texts, weights = [p.text for p in prompts], [p.weight for p in prompts]
    if kind == "none":
        return Condition(None, "unconditional")
    if kind == "class":
        return _class_condition(run, texts, weights, hooks or Hooks())
    scorer = _scorer_named(run, prior.clip_name)
    if kind == "text":
        main = texts[max(range(len(texts)), key=weights.__getitem__)] if texts else ""
        return Condition(text_condition(prior.arch, scorer.tokenizer, [main]), f"caption tokens of {main!r}")
    if not texts:
        return Condition(prior.null_condition(1, "cpu"), "nothing (no positive prompt)")
    steer = [p for p in (*run.plan.phases[phase], *run.plan.negatives)]  # negatives subtract
    with torch.no_grad():
        embeds = F.normalize(scorer.encode_text([p.text for p in steer]).float(), dim=-1)
    w = torch.tensor([p.weight for p in steer], device=embeds.device)[:, None]
    value = F.normalize((embeds * w).sum(0), dim=0)[None]
    less = " less the negatives" if w.min() < 0 else ""
    return Condition(value, f"{scorer.name} text embedding of the prompt{less}")


def _class_condition(run, texts: list[str], weights: list[float], hooks: Hooks) -> Condition:
    if run.settings.prior_class:
        index = class_index(run.settings.prior_class)
        return Condition(class_condition(index), f"class {imagenet_classes()[index]!r} (--prior-class)")
    hooks.enter(Phase.PRIOR_CLASS, "choosing the ImageNet class (a CLIP's first use embeds 80,000 prompts: minutes)…")
    top = choose_classes(_scorer_named(run, None), texts, weights)
    picks = ", ".join(f"{name} {p:.0%}" for _, name, p in top)
    log.info("ImageNet classes CLIP picks for the prompt: %s", picks)
    return Condition(class_condition(top[0][0]), f"class {top[0][1]!r} (CLIP's pick of: {picks})")
