"""The optimisation loop: yields one Step per iteration and does no I/O."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pixgen.errors import NumericalFailure
from pixgen.loop.cutouts import Cutouts
from pixgen.loop.losses import prompt_loss, region_shares
from pixgen.loop.specks import SpeckGuard
from pixgen.loop.targets import Targets
from pixgen.models.scorer import ClipScorer

log = logging.getLogger("pixgen")


@dataclass
class Step:
    """What one iteration produced. `image` is what CLIP scored at this step (before the update)."""

    i: int  # steps done, 1-based
    loss: float
    image: Tensor  # (1, 3, H, W) in [0, 1], detached
    seconds: float
    ok: bool = True  # False: the step went non-finite and was rolled back


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

    def targets_at(self, step: int) -> Targets:
        """The targets at 1-based `step` (story mode moves through its phrases)."""
        return self.targets(step) if callable(self.targets) else self.targets

    def for_phase(self, phase: int) -> ClipTerm:
        """This term aimed at story phase `phase` at every step (ranking that phrase's keyframe)."""
        phases = getattr(self.targets, "phases", None)
        return replace(self, targets=phases[phase]) if phases else self

    def loss(
        self, image: Tensor, step: int, generator: torch.Generator, dtype: torch.dtype | None, cutn: int | None = None
    ) -> Tensor:
        targets = self.targets_at(step)
        shares = None
        if targets.regions:  # region prompts: the step's cutouts shared among the regions
            regions, group = targets.groups()
            cuts, owner = self.cutouts.regional(image, generator, regions, cutn)
            shares = region_shares(owner, torch.tensor(group, device=owner.device))
        else:
            cuts = self.cutouts(image, generator, cutn)  # augmentations stay in fp32
        if self.chunk <= 0 or cuts.shape[0] <= self.chunk or not torch.is_grad_enabled():
            return self._loss(cuts, targets, dtype, shares)
        # Chunked: the loss is a mean over cutouts, so each chunk's share is back-propagated to
        # the cutouts at once, freeing CLIP's activations before the next chunk. The result is a
        # surrogate with the same value whose gradient with respect to `cuts` is the sum.
        leaf = cuts.detach().requires_grad_(True)
        total = cuts.new_zeros(())
        parts = shares.split(self.chunk) if shares is not None else [None] * len(leaf.split(self.chunk))
        for part, part_shares in zip(leaf.split(self.chunk), parts, strict=True):
            share = self._loss(part, targets, dtype, part_shares)
            share = share if part_shares is not None else share * (part.shape[0] / leaf.shape[0])
            share.backward()
            total = total + share.detach()
        link = (cuts * leaf.grad).sum()
        return total + link - link.detach()

    def _loss(self, cuts: Tensor, targets: Targets, dtype: torch.dtype | None, shares: Tensor | None = None) -> Tensor:
        with torch.autocast(cuts.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            embeds = self.scorer.encode_image(cuts)
        return prompt_loss(embeds.float(), targets.embeds, targets.weights, targets.stops, self.distance, shares)


@dataclass
class Objective:
    """The loss of one step, `objective(image, z, step)`: the weighted mean of the CLIP terms (one
    per ensemble member) plus `extra(image, z)`, the regularisers. While the latent is not
    `full_shape` (the coarse part of the progressive schedule) each term scores half its cutouts.
    `generator` draws the cutouts; `clip_dtype` is CLIP's autocast dtype (None: fp32)."""

    terms: list[ClipTerm]
    generator: torch.Generator
    extra: Callable[[Tensor, Tensor], Tensor] | None = None
    clip_dtype: torch.dtype | None = None
    full_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        if not self.terms:
            raise ValueError("the loop needs at least one CLIP term")

    def __call__(self, image: Tensor, z: Tensor, step: int) -> Tensor:
        total = sum(t.weight for t in self.terms)
        coarse = self.full_shape is not None and tuple(z.shape) != tuple(self.full_shape)
        loss = 0
        for t in self.terms:
            cutn = max(1, t.cutouts.cutn // 2) if coarse else None  # progressive: half while coarse
            loss = loss + t.weight / total * t.loss(image, step, self.generator, self.clip_dtype, cutn)
        if self.extra is not None:
            loss = loss + self.extra(image, z)
        return loss


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "radam": torch.optim.RAdam,
}


# name -> the learning-rate multiplier at 0-based step s of n; plateau adapts in LRSchedule.observe
LR_SCHEDULES = {
    "constant": lambda s, n: 1.0,
    "step": lambda s, n: 0.1 if s >= 0.75 * n else 1.0,
    "cosine": lambda s, n: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(n, 1))),
    "plateau": lambda s, n: 1.0,
}


def lr_factor(schedule: str, step: int, iterations: int) -> float:
    """The learning-rate multiplier at 0-based `step` of a fixed schedule."""
    return LR_SCHEDULES[schedule](step, iterations)


@dataclass
class LRSchedule:
    """Learning-rate multipliers of the named schedule (LR_SCHEDULES) for a run of `iterations`
    steps, computed on demand from (name, step, iterations): nothing is built per step, so a long
    run costs nothing before its first step. Past the end: the last step's multiplier.

    With `plateau` the schedule also adapts: `observe(loss)` after each good step says by what to
    multiply the learning rate from then on (0.5 once the loss has not improved by 1e-4 for
    `patience` steps). Its state, (best, stale), is part of the loop's state_dict."""

    name: str = "constant"
    iterations: int = 0
    patience: int = 20
    best: float = math.inf
    stale: int = 0

    @property
    def plateau(self) -> bool:
        return self.name == "plateau"

    def __getitem__(self, step: int) -> float:
        if self.iterations <= 0:
            return 1.0
        return lr_factor(self.name, min(step, self.iterations - 1), self.iterations)

    def observe(self, loss: float) -> float:
        if not self.plateau:
            return 1.0
        if loss < self.best - 1e-4:
            self.best, self.stale = loss, 0
            return 1.0
        self.stale += 1
        if self.stale < self.patience:
            return 1.0
        self.stale = 0
        return 0.5


def lr_schedule(name: str, iterations: int) -> LRSchedule:
    """The named schedule (settings.LR_SCHEDULES) for a run of `iterations` steps."""
    return LRSchedule(name, iterations)


class Loop:
    """The optimisation of one drawer's tensor (a latent, for the VQGAN), resumable: `run(until)`
    yields a Step after each iteration and does no I/O.

    Like a sampler that takes a model and a noise schedule, it takes `loss(image, z, step)` (an
    Objective) and a `schedule` of learning-rate multipliers (an LRSchedule; None: constant). It
    draws through `drawer` (pixgen.drawers) and owns what
    every step needs: the optimiser, the clamp to the drawer's range (the codebook's), the NaN
    rollback (a non-finite loss or latent rolls z back to the last good value and halves the
    learning rate; `max_failures` in a row raise NumericalFailure), what the run keeps
    (`save_best`: the lowest-loss step's latent; `ema`: a moving average; else the last), the
    speck guard (`speck_guard`: a step may not add a speck, pixgen.loop.specks), and
    `state_dict()`, everything needed to continue bit-identically. Changing the latent between
    steps (the progressive switch, the zoom mode) is `restart(z)`, called from outside; moving it
    part of the way to another latent, keeping the optimiser's moments (story mode's keyframes), is
    `pull(target, share)`.
    """

    def __init__(
        self,
        drawer,
        loss: Callable[[Tensor, Tensor, int], Tensor],
        z: Tensor,
        generator: torch.Generator,
        lr: float,
        schedule: LRSchedule | None = None,
        optimizer: str = "adam",
        max_failures: int = 5,
        save_best: bool = False,
        ema: float = 0.0,
        speck_guard: bool = False,
    ):
        self.drawer, self.loss, self.generator = drawer, loss, generator
        self.decoder = getattr(self.drawer, "decoder", None)
        self.base_lr, self.schedule = lr, schedule or LRSchedule()
        self.optimizer, self.max_failures = optimizer, max_failures
        self.z = z.detach().clone().requires_grad_(True)
        self.good = self.z.detach().clone()
        self.opt = OPTIMIZERS[optimizer]([self.z], lr=lr)
        self.step, self.failures, self.warned = 0, 0, False
        self.scale = 1.0  # halved on each numerical failure, and when the schedule says so
        self.save_best, self.ema = save_best, ema
        self.kept_loss, self.kept_z = math.inf, None
        self.ema_z = self.z.detach().clone() if ema else None
        self.guard = SpeckGuard(drawer, self.z) if speck_guard else None

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def run(self, until: int) -> Iterator[Step]:
        while self.step < until:
            t0 = time.perf_counter()
            for group in self.opt.param_groups:
                group["lr"] = self.base_lr * self.scale * self.schedule[self.step]
            self.opt.zero_grad(set_to_none=True)
            image = self.drawer.render(self.z)
            if self.guard is not None:
                image = self.guard.check(self.z, image, self.drawer.render)
            loss = self.loss(image, self.z, self.step + 1)
            ok = bool(torch.isfinite(loss))
            if ok and self.save_best and loss.item() < self.kept_loss:  # `loss` scores z before this update
                self.kept_loss, self.kept_z = loss.item(), self.z.detach().clone()
            if ok:
                loss.backward()
                self.opt.step()
                self.drawer.clamp_(self.z)
                ok = bool(torch.isfinite(self.z).all())
            self.step += 1
            if ok:
                self._accept(loss.item())
            else:
                self._recover()
            yield Step(self.step, loss.item(), image.detach(), time.perf_counter() - t0, ok)

    def _accept(self, loss: float) -> None:
        self.failures = 0
        if self.ema_z is not None:
            self.ema_z.lerp_(self.z.detach(), 1 - self.ema)
        self.scale *= self.schedule.observe(loss)
        self.good.copy_(self.z.detach())

    def result(self) -> Tensor:
        """The latent the run keeps: the best step's, the moving average, or the last (held back
        where it adds a speck, with the speck guard)."""
        if self.kept_z is not None:
            return self.kept_z
        z = self.ema_z if self.ema_z is not None else self.z.detach()
        if self.guard is not None and self.step > 0:  # (the best step's was held back when it was scored)
            return self.guard.final(z, self.drawer.render)
        return z

    def restart(self, z: Tensor) -> None:
        """Continue from a new latent, with fresh optimiser moments. A new shape (the progressive
        schedule) gets a new leaf tensor and optimiser. What was kept (best step, moving average)
        belongs to the old latent and starts again from the new one."""
        self.kept_loss, self.kept_z = math.inf, None
        if self.ema_z is not None:
            self.ema_z = z.detach().clone()
        if self.guard is not None:
            self.guard.reset(z)
        if z.shape == self.z.shape:
            with torch.no_grad():
                self.z.copy_(z)
                self.good.copy_(z)
            self.opt.state.clear()
            return
        lr = self.lr
        self.z = z.detach().clone().requires_grad_(True)
        self.good = self.z.detach().clone()
        self.opt = OPTIMIZERS[self.optimizer]([self.z], lr=lr)

    def pull(self, target: Tensor, share: float) -> None:
        """Move the latent (and its moving average) the `share` of the way to `target`, between
        steps, keeping the optimiser's moments: the steps go on steering from the new place."""
        with torch.no_grad():
            self.z.lerp_(target.to(self.z), share)
            self.good.copy_(self.z)
            if self.ema_z is not None:
                self.ema_z.lerp_(target.to(self.z), share)

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
        lr_state = [self.scale, self.schedule.best, self.schedule.stale]
        state = {
            "z": self.z.detach().cpu(),
            "step": torch.tensor(self.step),
            "lr_state": torch.tensor(lr_state, dtype=torch.float64),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.kept_z is not None:
            state["kept_z"], state["kept_loss"] = self.kept_z.cpu(), torch.tensor(self.kept_loss, dtype=torch.float64)
        if self.ema_z is not None:
            state["ema_z"] = self.ema_z.cpu()
        if self.guard is not None:
            state["speck_clean"], state["speck_seen"] = self.guard.clean.cpu(), self.guard.seen.cpu()
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
        if "speck_clean" in state and self.guard is not None:
            self.guard.clean, self.guard.seen = state["speck_clean"].to(self.z), state["speck_seen"].to(self.z.device)
        self.step = int(state["step"])
        self.scale, best, stale = state["lr_state"].tolist()
        self.schedule.best, self.schedule.stale = best, int(stale)
        opt = {k.removeprefix("opt."): v for k, v in state.items() if k.startswith("opt.")}
        if opt:
            self.opt.state[self.z] = {k: v if k == "step" else v.to(self.z.device) for k, v in opt.items()}
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
