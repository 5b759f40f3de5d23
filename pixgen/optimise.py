"""The optimisation loop: yields one Step per iteration and does no I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from pixgen.cutouts import Cutouts
from pixgen.losses import prompt_loss, total_variation
from pixgen.ops import clamp_with_grad, codes_to_latent, quantize_st
from pixgen.prompts import Prompt
from pixgen.scorer import ClipScorer
from pixgen.vqgan import VQGANDecoder


@dataclass
class Step:
    """What one iteration produced. `image` is what CLIP scored at this step (before the update)."""

    i: int  # steps done, 1-based
    loss: float
    image: Tensor  # (1, 3, H, W) in [0, 1], detached
    seconds: float


@dataclass
class Targets:
    """Prompt embeddings and their weights and stops, encoded once."""

    embeds: Tensor  # (P, D)
    weights: Tensor  # (P,)
    stops: Tensor  # (P,)

    @classmethod
    def from_prompts(cls, scorer: ClipScorer, prompts: list[Prompt]) -> Targets:
        device = scorer.mean.device
        return cls(
            scorer.encode_text([p.text for p in prompts]),
            torch.tensor([p.weight for p in prompts], device=device),
            torch.tensor([p.stop for p in prompts], device=device),
        )


def init_latent(
    decoder: VQGANDecoder, width: int, height: int, generator: torch.Generator, mode: str = "tokens"
) -> Tensor:
    """A latent of random codebook entries (tokens) or one random entry everywhere (flat).

    Drawn on the CPU from `generator`, so the same seed gives the same start on any device.
    """
    f = decoder.factor
    h, w = height // f, width // f
    n = decoder.codebook.shape[0]
    if mode == "flat":
        codes = torch.randint(n, (1, 1, 1), generator=generator).expand(1, h, w)
    else:
        codes = torch.randint(n, (1, h, w), generator=generator)
    return codes_to_latent(codes.to(decoder.codebook.device), decoder.codebook).clone()


def render(decoder: VQGANDecoder, z: Tensor) -> Tensor:
    """Latent -> image in [0, 1], through the same quantisation the loop uses."""
    return clamp_with_grad(decoder(quantize_st(z, decoder.codebook)).add(1).div(2))


def optimise(
    decoder: VQGANDecoder,
    scorer: ClipScorer,
    targets: Targets,
    z: Tensor,
    cutouts: Cutouts,
    generator: torch.Generator,
    iterations: int,
    lr: float,
    tv_weight: float = 0.0,
) -> Iterator[Step]:
    """Adam on the latent z (in place) toward the targets; yields after every step."""
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    lo = decoder.codebook.min(0).values.view(1, -1, 1, 1)  # per-channel codebook range
    hi = decoder.codebook.max(0).values.view(1, -1, 1, 1)
    for i in range(1, iterations + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        image = render(decoder, z)
        embeds = scorer.encode_image(cutouts(image, generator))
        loss = prompt_loss(embeds, targets.embeds, targets.weights, targets.stops)
        if tv_weight:
            loss = loss + tv_weight * total_variation(image)
        loss.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, hi), lo))
        yield Step(i, loss.item(), image.detach(), time.perf_counter() - t0)
