"""What CLIP steers toward: text, negative, image and noise prompts, and story-mode phases.
Every target is encoded once, without gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pixgen.loop.cutouts import Cutouts
from pixgen.loop.prompts import Prompt, PromptPlan
from pixgen.models.scorer import ClipScorer
from pixgen.outputs.images import open_rgb, to_clip_tensor
from pixgen.regions import Box, in_order


@dataclass
class Targets:
    """Prompt embeddings and their weights and stops, and where each applies: `regions`, one box
    (x0, y0, x1, y1 in fractions of the image) or None (the whole image) per prompt, or empty
    when every prompt applies to the whole image."""

    embeds: Tensor  # (P, D) unit vectors
    weights: Tensor  # (P,)
    stops: Tensor  # (P,)
    regions: tuple[Box | None, ...] = ()

    @classmethod
    def from_prompts(cls, scorer: ClipScorer, prompts: list[Prompt]) -> Targets:
        device = scorer.mean.device
        regions = tuple(p.region for p in prompts)
        return cls(
            scorer.encode_text([p.text for p in prompts]).float(),
            torch.tensor([p.weight for p in prompts], device=device),
            torch.tensor([p.stop for p in prompts], device=device),
            regions if any(r is not None for r in regions) else (),
        )

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __add__(self, other: Targets) -> Targets:
        regions = ()
        if self.regions or other.regions:
            regions = (self.regions or (None,) * len(self)) + (other.regions or (None,) * len(other))
        return Targets(
            torch.cat([self.embeds, other.embeds]),
            torch.cat([self.weights, other.weights]),
            torch.cat([self.stops, other.stops]),
            regions,
        )

    def groups(self) -> tuple[list[Box | None], list[int]]:
        """The distinct regions of these targets (None, the whole image, first when any prompt
        has no region) and each prompt's index among them."""
        order = in_order(self.regions)
        return order, [order.index(r) for r in self.regions]

    def select(self, keep: list[int]) -> Targets:
        """The targets numbered `keep`, applying to the whole image (a region's own targets, for
        ranking what is drawn for it alone)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.embeds.device)
        return Targets(self.embeds[index], self.weights[index], self.stops[index])


@dataclass
class PromptSchedule:
    """Story mode: phase k of the prompt ("a ^ b ^ c") is the target during its share of steps."""

    phases: list[Targets]
    every: int  # steps per phase; 0 spreads the phases evenly over `iterations`
    iterations: int

    def phase(self, step: int) -> int:
        """Phase index for 1-based `step`."""
        n = len(self.phases)
        if self.every:
            return min((step - 1) // self.every, n - 1)
        return min((step - 1) * n // max(self.iterations, 1), n - 1)

    def __call__(self, step: int) -> Targets:
        return self.phases[self.phase(step)]


@torch.no_grad()
def image_prompt(scorer: ClipScorer, path: str, seed: int, cutn: int = 16) -> Tensor:
    """One unit embedding for an image: the mean over augmented cutouts of it."""

    image = open_rgb(path)
    side = max(scorer.input_size, min(image.size))
    x = to_clip_tensor(image, side)[None].to(scorer.mean.device)
    cuts = Cutouts(scorer.input_size, cutn, cut_min=0.5, augment=["flip", "affine"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embeds = scorer.encode_image(cuts(x, torch.Generator().manual_seed(seed))).float()
    return F.normalize(embeds.mean(0), dim=-1)


def noise_prompt(dim: int, seed: int) -> Tensor:
    """A random unit direction in CLIP space, reproducible from its seed."""
    return F.normalize(torch.randn(dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def build_schedule(
    scorer: ClipScorer, plan: PromptPlan, seed: int, change_every: int = 0, iterations: int = 0
) -> PromptSchedule:
    """All targets of a run: each story phase plus the negatives, image and noise prompts of the
    parsed prompts `plan`. Image prompt i is embedded from `seed + i`; story mode moves to the next
    phrase every `change_every` steps (0: spread evenly over `iterations`)."""
    device = scorer.mean.device
    extra = []
    if plan.negatives:
        extra.append(Targets.from_prompts(scorer, list(plan.negatives)))
    side = [(image_prompt(scorer, path, seed=seed + i), w) for i, (path, w) in enumerate(plan.images)]
    for seed, w in plan.noises:
        dim = extra[0].embeds.shape[1] if extra else scorer.encode_text(["x"]).shape[1]
        side.append((noise_prompt(dim, seed).to(device), w))
    if side:
        extra.append(
            Targets(
                torch.stack([e for e, _ in side]).to(device),
                torch.tensor([w for _, w in side], device=device),
                torch.full((len(side),), float("-inf"), device=device),
            )
        )
    phases = []
    for prompts in plan.phases:
        t = Targets.from_prompts(scorer, list(prompts))
        for e in extra:
            t = t + e
        phases.append(t)
    return PromptSchedule(phases, change_every, iterations)
