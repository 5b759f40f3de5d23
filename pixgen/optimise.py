"""The optimisation loop: yields one Step per iteration and does no I/O."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from pixgen.cutouts import Cutouts
from pixgen.errors import NumericalFailure
from pixgen.losses import prompt_loss
from pixgen.ops import clamp_with_grad, codes_to_latent, halve_latent, quantize_st
from pixgen.scorer import ClipScorer
from pixgen.targets import Targets
from pixgen.vqgan import VQGANDecoder

log = logging.getLogger("pixgen")


@dataclass
class Step:
    """What one iteration produced. `image` is what CLIP scored at this step (before the update)."""

    i: int  # steps done, 1-based
    loss: float
    image: Tensor  # (1, 3, H, W) in [0, 1], detached
    seconds: float


def init_latent(
    decoder: VQGANDecoder, width: int, height: int, generator: torch.Generator, mode: str = "tokens"
) -> Tensor:
    """The starting latent: random codebook entries (tokens), one random entry everywhere (flat),
    or the codebook's mean everywhere (mean: a neutral start that favours no colour).

    Drawn on the CPU from `generator`, so the same seed gives the same start on any device.
    """
    f = decoder.factor
    h, w = height // f, width // f
    n = decoder.codebook.shape[0]
    if mode == "mean":
        return decoder.codebook.mean(0).view(1, -1, 1, 1).expand(1, -1, h, w).clone()
    if mode == "flat":
        codes = torch.randint(n, (1, 1, 1), generator=generator).expand(1, h, w)
    else:
        codes = torch.randint(n, (1, h, w), generator=generator)
    return codes_to_latent(codes.to(decoder.codebook.device), decoder.codebook).clone()


@torch.no_grad()
def pick_start(
    decoder: VQGANDecoder,
    terms: list[ClipTerm],
    starts: list[Tensor],
    generator: torch.Generator,
    cutn: int | None = 8,
) -> Tensor:
    """Of several candidate starting latents, the one whose image the CLIP terms already score
    closest to the prompt (the first phase). Each is scored on the same cutouts and the same
    augmentations (both random streams are rewound before each), `cutn` of them (a first look
    is cheap: 8 cutouts of each start cost about what one step's forward pass does)."""
    total = sum(t.weight for t in terms)
    state, global_state = generator.get_state(), torch.get_rng_state()
    losses = []
    for z in starts:
        generator.set_state(state)
        torch.set_rng_state(global_state)
        image = render(decoder, z)
        losses.append(sum(t.weight / total * float(t.loss(image, 1, generator, None, cutn)) for t in terms))
    return starts[min(range(len(starts)), key=losses.__getitem__)]


def render(decoder: VQGANDecoder, z: Tensor) -> Tensor:
    """Latent -> image in [0, 1], through the same quantisation the loop uses."""
    return clamp_with_grad(decoder(quantize_st(z, decoder.codebook)).add(1).div(2))


@dataclass
class ClipTerm:
    """One CLIP model of the ensemble: its own cutouts (at its input size), its targets (in its
    own embedding space; a callable of the step for story mode) and its weight."""

    scorer: ClipScorer
    cutouts: Cutouts
    targets: Callable[[int], Targets] | Targets
    weight: float = 1.0
    chunk: int = 0  # >0: CLIP sees this many cutouts at a time (low memory); 0: all at once
    distance: str = "spherical"  # or "cosine" (losses.DISTANCES)

    def loss(
        self, image: Tensor, step: int, generator: torch.Generator, dtype: torch.dtype | None, cutn: int | None = None
    ) -> Tensor:
        targets = self.targets(step) if callable(self.targets) else self.targets
        cuts = self.cutouts(image, generator, cutn)  # augmentations stay in fp32
        if self.chunk <= 0 or cuts.shape[0] <= self.chunk or not torch.is_grad_enabled():
            return self._loss(cuts, targets, dtype)
        # Chunked: the loss is a mean over cutouts, so each chunk's share is back-propagated to
        # the cutouts at once, freeing CLIP's activations before the next chunk. The result is a
        # surrogate with the same value whose gradient with respect to `cuts` is the sum.
        leaf = cuts.detach().requires_grad_(True)
        total = cuts.new_zeros(())
        for part in leaf.split(self.chunk):
            share = self._loss(part, targets, dtype) * (part.shape[0] / leaf.shape[0])
            share.backward()
            total = total + share.detach()
        link = (cuts * leaf.grad).sum()
        return total + link - link.detach()

    def _loss(self, cuts: Tensor, targets: Targets, dtype: torch.dtype | None) -> Tensor:
        with torch.autocast(cuts.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            embeds = self.scorer.encode_image(cuts)
        return prompt_loss(embeds.float(), targets.embeds, targets.weights, targets.stops, self.distance)


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "radam": torch.optim.RAdam,
}


# name -> the learning-rate multiplier at 0-based step s of n; plateau halves it in the Loop instead
LR_SCHEDULES = {
    "constant": lambda s, n: 1.0,
    "step": lambda s, n: 0.1 if s >= 0.75 * n else 1.0,
    "cosine": lambda s, n: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(n, 1))),
    "plateau": lambda s, n: 1.0,
}


def lr_factor(schedule: str, step: int, iterations: int) -> float:
    """The learning-rate multiplier at 0-based `step` of a fixed schedule."""
    return LR_SCHEDULES[schedule](step, iterations)


class Loop:
    """The optimisation of one latent toward CLIP targets, resumable.

    `run(until)` yields a Step after each iteration and does no I/O. `state_dict()` captures
    everything needed to continue bit-identically: z, the optimiser's moments, the learning-rate
    state and both random streams. A non-finite loss or latent rolls z back to the last good
    value and halves the learning rate; after `max_failures` failures in a row it raises
    NumericalFailure. The CLIP loss is the weighted mean over `terms` (one per ensemble member);
    `extra_loss(image, z)` adds regularisers. With `zoom`, every `zoom_every` steps the latent is
    replaced by `zoom(z)` (the zoom/pan video mode) and the optimiser starts afresh.

    With `coarse_until` > 0 (the progressive schedule) the steps before it optimise a latent at
    half the height and width, scored with half the cutouts; the latent is then upsampled to
    full size (nearest: the same codes) and optimised on with fresh moments. Steps always carry
    the image at full size.
    """

    def __init__(
        self,
        decoder: VQGANDecoder,
        terms: list[ClipTerm],
        z: Tensor,
        generator: torch.Generator,
        lr: float,
        extra_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        optimizer: str = "adam",
        lr_schedule: str = "constant",
        iterations: int = 0,
        max_failures: int = 5,
        clip_dtype: torch.dtype | None = None,
        zoom: Callable[[Tensor], Tensor] | None = None,
        zoom_every: int = 0,
        coarse_until: int = 0,
        save_best: bool = False,
        ema: float = 0.0,
    ):
        if not terms:
            raise ValueError("the loop needs at least one CLIP term")
        self.decoder, self.terms = decoder, list(terms)
        self.zoom, self.zoom_every = zoom, zoom_every
        self.full_shape = tuple(z.shape)
        self.coarse_until = coarse_until
        if coarse_until > 0:
            z = halve_latent(z)
        self.optimizer = optimizer
        self.z = z.detach().clone().requires_grad_(True)
        self.good = self.z.detach().clone()
        self.generator, self.extra_loss, self.max_failures = generator, extra_loss, max_failures
        self.base_lr, self.lr_schedule, self.iterations = lr, lr_schedule, iterations
        self.opt = OPTIMIZERS[optimizer]([self.z], lr=lr)
        self.lo = decoder.codebook.min(0).values.view(1, -1, 1, 1)  # per-channel codebook range
        self.hi = decoder.codebook.max(0).values.view(1, -1, 1, 1)
        self.step = 0
        self.failures = 0
        self.warned = False
        self.scale = 1.0  # halved on each numerical failure, and by the plateau schedule
        self.best, self.stale = math.inf, 0  # plateau schedule state
        self.clip_dtype = clip_dtype  # autocast dtype for CLIP only; None: fp32
        # what the run keeps as its result: the latent of the lowest-loss step (save_best), an
        # exponential moving average of the latent (ema > 0), or else the last latent
        self.save_best, self.ema = save_best, ema
        self.kept_loss, self.kept_z = math.inf, None
        self.ema_z = self.z.detach().clone() if ema else None

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    @property
    def coarse(self) -> bool:
        """Whether the latent is at half size (the first part of the progressive schedule)."""
        return tuple(self.z.shape) != self.full_shape

    def loss(self, image: Tensor, step: int) -> Tensor:
        total = sum(t.weight for t in self.terms)
        loss = 0
        for t in self.terms:
            cutn = max(1, t.cutouts.cutn // 2) if self.coarse else None  # progressive: half while coarse
            loss = loss + t.weight / total * t.loss(image, step, self.generator, self.clip_dtype, cutn)
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(image, self.z)
        return loss

    def _plateau(self, loss: float) -> None:
        if loss < self.best - 1e-4:
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
            if self.stale >= 20:
                self.scale *= 0.5
                self.stale = 0

    def run(self, until: int) -> Iterator[Step]:
        while self.step < until:
            t0 = time.perf_counter()
            for group in self.opt.param_groups:
                group["lr"] = self.base_lr * self.scale * lr_factor(self.lr_schedule, self.step, self.iterations)
            self.opt.zero_grad(set_to_none=True)
            image = render(self.decoder, self.z)
            loss = self.loss(image, self.step + 1)
            ok = bool(torch.isfinite(loss))
            if ok and self.save_best and loss.item() < self.kept_loss:  # `loss` scores z before this update
                self.kept_loss, self.kept_z = loss.item(), self.z.detach().clone()
            if ok:
                loss.backward()
                self.opt.step()
                with torch.no_grad():
                    self.z.copy_(torch.maximum(torch.minimum(self.z, self.hi), self.lo))
                ok = bool(torch.isfinite(self.z).all())
            self.step += 1
            if ok:
                self.failures = 0
                if self.ema_z is not None:
                    self.ema_z.lerp_(self.z.detach(), 1 - self.ema)
                if self.lr_schedule == "plateau":
                    self._plateau(loss.item())
                if self.coarse and self.step >= self.coarse_until:
                    full = self.full_shape[-2:]
                    self.restart(torch.nn.functional.interpolate(self.z.detach(), size=full, mode="nearest"))
                if self.zoom is not None and self.zoom_every and self.step % self.zoom_every == 0:
                    if self.step < self.iterations:
                        self.restart(self.zoom(self.z.detach()))
                self.good.copy_(self.z.detach())
            else:
                self._recover()
            shown = image.detach()
            if shown.shape[-2:] != self.image_size:
                shown = torch.nn.functional.interpolate(shown, size=self.image_size, mode="bilinear").clamp(0, 1)
            yield Step(self.step, loss.item(), shown, time.perf_counter() - t0)

    @property
    def image_size(self) -> tuple[int, int]:
        f = self.decoder.factor
        return self.full_shape[-2] * f, self.full_shape[-1] * f

    def result(self) -> Tensor:
        """The latent the run keeps: the best step's, the moving average, or the last."""
        if self.kept_z is not None:
            return self.kept_z
        if self.ema_z is not None:
            return self.ema_z
        return self.z.detach()

    def restart(self, z: Tensor) -> None:
        """Continue from a new latent, with fresh optimiser moments. A new shape (the progressive
        schedule) gets a new leaf tensor and optimiser. What was kept (best step, moving average)
        belongs to the old latent and starts again from the new one."""
        self.kept_loss, self.kept_z = math.inf, None
        if self.ema_z is not None:
            self.ema_z = z.detach().clone()
        if z.shape == self.z.shape:
            with torch.no_grad():
                self.z.copy_(z)
            self.opt.state.clear()
            return
        lr = self.lr
        self.z = z.detach().clone().requires_grad_(True)
        self.good = self.z.detach().clone()
        self.opt = OPTIMIZERS[self.optimizer]([self.z], lr=lr)

    def _recover(self) -> None:
        self.failures += 1
        if self.failures >= self.max_failures:
            raise NumericalFailure(
                f"the loss or latent went non-finite {self.failures} times in a row (lr now {self.lr:.3g}); "
                "stopped and kept the last good image. Try a lower --lr"
            )
        with torch.no_grad():
            self.z.copy_(self.good)
        self.opt.state.clear()  # the optimiser's moments may hold the bad numbers
        self.scale *= 0.5
        if not self.warned:
            log.warning("non-finite loss at step %d: rolled back and halved the learning rate", self.step)
            self.warned = True

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors-friendly): z, optimiser state, lr state, random streams."""
        state = {
            "z": self.z.detach().cpu(),
            "step": torch.tensor(self.step),
            "lr_state": torch.tensor([self.scale, self.best, self.stale], dtype=torch.float64),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.kept_z is not None:
            state["kept_z"], state["kept_loss"] = self.kept_z.cpu(), torch.tensor(self.kept_loss, dtype=torch.float64)
        if self.ema_z is not None:
            state["ema_z"] = self.ema_z.cpu()
        for k, v in self.opt.state.get(self.z, {}).items():
            state[f"opt.{k}"] = v.detach().cpu() if torch.is_tensor(v) else torch.tensor(v)
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["z"].shape != self.z.shape:  # saved in the other phase of the progressive schedule
            self.restart(state["z"].to(self.z))
        with torch.no_grad():
            self.z.copy_(state["z"].to(self.z))
            self.good.copy_(self.z)
        if "kept_z" in state:
            self.kept_z, self.kept_loss = state["kept_z"].to(self.z), float(state["kept_loss"])
        if "ema_z" in state and self.ema_z is not None:
            self.ema_z = state["ema_z"].to(self.z)
        self.step = int(state["step"])
        self.scale, self.best, stale = state["lr_state"].tolist()
        self.stale = int(stale)
        opt = {k.removeprefix("opt."): v for k, v in state.items() if k.startswith("opt.")}
        if opt:
            self.opt.state[self.z] = {k: v if k == "step" else v.to(self.z.device) for k, v in opt.items()}
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
