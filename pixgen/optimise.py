"""The optimisation loop: yields one Step per iteration and does no I/O."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from pixgen.cutouts import Cutouts
from pixgen.errors import PixgenError
from pixgen.losses import prompt_loss, total_variation
from pixgen.ops import clamp_with_grad, codes_to_latent, quantize_st
from pixgen.prompts import Prompt
from pixgen.scorer import ClipScorer
from pixgen.vqgan import VQGANDecoder

log = logging.getLogger("pixgen")


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


class NumericalFailure(PixgenError):
    """The loss or the latent kept going non-finite despite rollbacks."""


class Loop:
    """The optimisation of one latent: Adam on z toward the targets, resumable.

    `run(until)` yields a Step after each iteration and does no I/O. `state_dict()` captures
    everything needed to continue bit-identically: z, Adam's moments, both random streams.
    A non-finite loss or latent rolls z back to the last good value and halves the learning
    rate; after `max_failures` failures in a row it raises NumericalFailure.
    """

    def __init__(
        self,
        decoder: VQGANDecoder,
        scorer: ClipScorer,
        targets: Targets,
        cutouts: Cutouts,
        z: Tensor,
        generator: torch.Generator,
        lr: float,
        tv_weight: float = 0.0,
        max_failures: int = 5,
    ):
        self.decoder, self.scorer, self.targets, self.cutouts = decoder, scorer, targets, cutouts
        self.z = z.detach().clone().requires_grad_(True)
        self.good = self.z.detach().clone()
        self.generator, self.tv_weight, self.max_failures = generator, tv_weight, max_failures
        self.opt = torch.optim.Adam([self.z], lr=lr)
        self.lo = decoder.codebook.min(0).values.view(1, -1, 1, 1)  # per-channel codebook range
        self.hi = decoder.codebook.max(0).values.view(1, -1, 1, 1)
        self.step = 0
        self.failures = 0
        self.warned = False

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def loss(self, image: Tensor) -> Tensor:
        embeds = self.scorer.encode_image(self.cutouts(image, self.generator))
        loss = prompt_loss(embeds, self.targets.embeds, self.targets.weights, self.targets.stops)
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(image)
        return loss

    def run(self, until: int) -> Iterator[Step]:
        while self.step < until:
            t0 = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            image = render(self.decoder, self.z)
            loss = self.loss(image)
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                self.opt.step()
                with torch.no_grad():
                    self.z.copy_(torch.maximum(torch.minimum(self.z, self.hi), self.lo))
                ok = bool(torch.isfinite(self.z).all())
            self.step += 1
            if ok:
                self.failures = 0
                self.good.copy_(self.z.detach())
            else:
                self._recover()
            yield Step(self.step, loss.item(), image.detach(), time.perf_counter() - t0)

    def _recover(self) -> None:
        self.failures += 1
        if self.failures >= self.max_failures:
            raise NumericalFailure(
                f"the loss or latent went non-finite {self.failures} times in a row (lr now {self.lr:.3g}); "
                "stopped and kept the last good image. Try a lower --lr"
            )
        with torch.no_grad():
            self.z.copy_(self.good)
        self.opt.state.clear()  # Adam's moments may hold the bad numbers
        for group in self.opt.param_groups:
            group["lr"] *= 0.5
        if not self.warned:
            log.warning(
                "non-finite loss at step %d: rolled back and halved the learning rate to %.3g", self.step, self.lr
            )
            self.warned = True

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors-friendly): z, Adam, step, lr, and the random streams."""
        state = {
            "z": self.z.detach().cpu(),
            "step": torch.tensor(self.step),
            "lr": torch.tensor(self.lr, dtype=torch.float64),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        adam = self.opt.state.get(self.z)
        if adam:
            state.update(
                {f"adam.{k}": v.detach().cpu() if torch.is_tensor(v) else torch.tensor(v) for k, v in adam.items()}
            )
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.z.copy_(state["z"].to(self.z))
            self.good.copy_(self.z)
        self.step = int(state["step"])
        for group in self.opt.param_groups:
            group["lr"] = float(state["lr"])
        adam = {k.removeprefix("adam."): v.to(self.z.device) for k, v in state.items() if k.startswith("adam.")}
        if adam:
            adam["step"] = adam["step"].cpu()
            self.opt.state[self.z] = adam
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])


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
    """Adam on the latent z (updated in place) toward the targets; yields after every step."""
    loop = Loop(decoder, scorer, targets, cutouts, z, generator, lr, tv_weight)
    for step in loop.run(iterations):
        with torch.no_grad():
            z.copy_(loop.z)
        yield step
