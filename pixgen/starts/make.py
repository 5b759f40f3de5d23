"""`make_start`: the one start a run begins from (see pixgen.starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pixgen.phases import Hooks, Phase
from pixgen.prior.start import prior_start
from pixgen.starts.candidates import Draws, best_of, score_starts
from pixgen.starts.composed import composed_start
from pixgen.starts.images import initial_image


@dataclass
class Start:
    """The starting tensor, the picture it was fitted to (None for a random start; the anchor of
    `--init-pixel-weight`) and, for a drawn start, how it was chosen (run.json's `start`)."""

    z: Tensor
    image: Tensor | None = None
    record: dict = field(default_factory=dict)


def ready_to_fit(drawer, hooks: Hooks) -> None:
    """Load what the drawer's `fit` needs (the VQGAN's encoder), as a phase, unless it has it."""
    if not drawer.fit_ready:
        hooks.enter(Phase.LOADING_ENCODER, "loading the VQGAN encoder…")
        drawer.prepare_fit()


def make_start(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks | None = None, given=None) -> Start:
    """The run's start, drawn through `drawer` from `generator`. `given`, a (tensor, image in
    [0, 1]) pair, replaces the start and the init image (pixgen.apps.restyle). Each phase is a safe
    point of `hooks`."""
    s, hooks = run.settings, hooks or Hooks()
    z = drawer.start(generator)
    image = initial_image(s.init_image, s.init_fit, s.init_noise, s.width, s.height, generator)
    if image is not None:
        ready_to_fit(drawer, hooks)
        hooks.enter(Phase.ENCODING_START, "encoding the start…")
        image = image.to(run.device)
        z = drawer.fit(image, generator)
    if given is not None:
        tensor = given[0] if given[0].shape == z.shape else given[0][..., : z.shape[-2], : z.shape[-1]]
        return Start(tensor.contiguous(), given[1].to(run.device))
    if image is not None:
        return Start(z, image)
    if s.init == "composed":
        ready_to_fit(drawer, hooks)
        hooks.enter(Phase.COMPOSING, "composing the start…")
        size, shapes = (s.width, s.height), s.init_silhouettes
        z, image = composed_start(drawer, terms, generator, *size, shapes, s.init_jitter, hooks, run.device)
        return Start(z, image)
    if s.init == "prior":
        z, record = prior_start(run, drawer, terms, generator, hooks)
        return Start(z, None, record)
    if s.init_draws > 1:
        hooks.enter(Phase.DRAWING_STARTS, f"drawing {s.init_draws} starts…")
        draws = Draws(drawer, generator, s.init_draws - 1, first=z)
        scoring = lambda: hooks.enter(Phase.SCORING_STARTS, "scoring the starts…")  # noqa: E731
        return Start(draws[best_of(score_starts(drawer, terms, draws, generator, checkpoint=scoring))])
    return Start(z)
