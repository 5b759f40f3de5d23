"""What a prior is asked for, from a run's prompt: a CLIP text embedding (priors trained on CLIP
image embeddings), the caption's tokens (text priors), or ImageNet classes (taming's
class-conditional transformer): each sample's class drawn from the `prior_class_top_k` classes
CLIP likes best for the prompt, in proportion to CLIP's probabilities, from the run's generator
(`prior_class` fixes one class for all). The condition comes from the prompt's first phrase
(story mode starts there; its keyframes ask for each phrase)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from pixgen.models.loading import load_scorer
from pixgen.phases import Hooks, Phase
from pixgen.prior.classes import class_condition, class_index, class_scores, draw_classes, imagenet_classes, top_classes
from pixgen.prior.model import Prior, text_condition


@dataclass
class Condition:
    """What the prior is asked for, as `pixgen.prior.model.sample` takes it (one row for every
    sample, or one per sample), and in words. A class condition also keeps its candidates
    [(index, name, probability)] and the class each sample was given (None: the first candidate
    for all), for run.json."""

    value: Tensor | None
    text: str
    candidates: list[tuple[int, str, float]] | None = None
    drawn: list[int] | None = None

    def record(self, sample: int | None = None) -> dict:
        """What run.json says of the classes: the candidates, the class each sample was given,
        and the class of sample number `sample` (None: not said)."""
        if self.candidates is None:
            return {}
        out = {"class_candidates": [{"index": i, "name": n, "probability": p} for i, n, p in self.candidates]}
        if self.drawn is not None:
            out["classes_drawn"] = self.drawn
        if sample is not None:
            index = self.drawn[sample] if self.drawn is not None else self.candidates[0][0]
            out["class"] = {"index": index, "name": next(n for i, n, _ in self.candidates if i == index)}
        return out


def _scorer_named(run, name: str | None):
    """The run's CLIP scorer called `name` (loaded when the ensemble lacks it); the first one
    when `name` is None."""
    for scorer in run.models.scorers:
        if name is None or scorer.name == name:
            return scorer
    return load_scorer(name).to(run.device)


def condition_for(
    prior: Prior,
    run,
    hooks: Hooks | None = None,
    n: int = 1,
    generator: torch.Generator | None = None,
    phase: int = 0,
    asked: tuple | None = None,
) -> Condition:
    """The prior's condition for `n` samples of the prompt's phrase `phase` (the first: story mode
    starts there; its keyframes ask for the others), or of the prompts `asked` (a region's alone,
    with the negatives of the whole image). A class-conditional prior's classes are drawn from
    `generator` (a fresh one seeded with 0 when None)."""
    asked = run.plan.phases[phase] if asked is None else asked
    kind, prompts = prior.arch.cond, [p for p in asked if p.weight > 0]
    texts, weights = [p.text for p in prompts], [p.weight for p in prompts]
    if kind == "none":
        return Condition(None, "unconditional")
    if kind == "class":
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return _class_condition(run, texts, weights, hooks or Hooks(), n, generator)
    scorer = _scorer_named(run, prior.clip_name)
    if kind == "text":
        main = texts[max(range(len(texts)), key=weights.__getitem__)] if texts else ""
        return Condition(text_condition(prior.arch, scorer.tokenizer, [main]), f"caption tokens of {main!r}")
    if not texts:
        return Condition(prior.null_condition(1, "cpu"), "nothing (no positive prompt)")
    steer = [*asked, *(p for p in run.plan.negatives if p.region is None)]  # negatives subtract
    with torch.no_grad():
        embeds = F.normalize(scorer.encode_text([p.text for p in steer]).float(), dim=-1)
    w = torch.tensor([p.weight for p in steer], device=embeds.device)[:, None]
    value = F.normalize((embeds * w).sum(0), dim=0)[None]
    less = " less the negatives" if w.min() < 0 else ""
    return Condition(value, f"{scorer.name} text embedding of the prompt{less}")


def _class_condition(
    run, texts: list[str], weights: list[float], hooks: Hooks, n: int, generator: torch.Generator
) -> Condition:
    """One class for all `n` samples (`prior_class`, or CLIP's top class when `prior_class_top_k`
    is 1), else a (n, 1) batch of classes drawn from CLIP's top k."""
    s = run.settings
    if s.prior_class:
        index = class_index(s.prior_class)
        name = imagenet_classes()[index]
        return Condition(class_condition(index), f"class {name!r} (--prior-class)", [(index, name, 1.0)])
    k = s.prior_class_top_k
    hooks.enter(Phase.PRIOR_CLASS, "choosing the ImageNet class…")
    classes = imagenet_classes()

    def progress(done: int, total: int) -> None:  # a CLIP's first use embeds its class prompts once
        hooks.report(
            Phase.PRIOR_CLASS, f"choosing the ImageNet class: class prompts {done}/{total} embedded (once per CLIP)…"
        )

    scores = class_scores(_scorer_named(run, None), texts, weights, classes, on_progress=progress)
    top, probs = top_classes(scores, k)
    candidates = [(int(i), classes[int(i)], float(p)) for i, p in zip(top, probs, strict=True)]
    if len(candidates) == 1:
        return Condition(class_condition(candidates[0][0]), f"class {candidates[0][1]!r} (CLIP's pick)", candidates)
    drawn = draw_classes(top, probs, n, generator)
    picks = ", ".join(f"{name} {p:.0%}" for _, name, p in candidates)
    text = f"a class per sample, drawn from CLIP's top {len(candidates)}: {picks}"
    return Condition(drawn.view(n, 1), text, candidates, [int(c) for c in drawn])
