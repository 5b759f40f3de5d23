"""`make_start`: the one start a run begins from (see pixgen.starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pixgen.phases import Hooks, Phase
from pixgen.prior.start import prior_start
from pixgen.settings import prior_start_on
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


def fit_start(drawer, image: Tensor, generator: torch.Generator, hooks: Hooks, text: str) -> Tensor:
    """The drawer's starting tensor for a picture (an init image, the prior's best sample), as phases."""
    ready_to_fit(drawer, hooks)
    hooks.enter(Phase.ENCODING_START, text)
    return drawer.fit(image, generator)


def start_from_prior(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks) -> Start:
    """`--init prior`: the best sample's latent, or, for a drawer that takes no VQGAN codes, the
    best sample's picture fitted into it (as an init image is: the picture is its anchor)."""
    z, record, image = prior_start(run, drawer, terms, generator, hooks)
    if image is not None:
        z = fit_start(drawer, image, generator, hooks, f"fitting the prior's sample into {drawer.title}…")
    return Start(z, image, record)


def make_start(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks | None = None, given=None) -> Start:
    """The run's start, drawn through `drawer` from `generator`. `given`, a (tensor, image in
    [0, 1]) pair, replaces the start and the init image (pixgen.apps.restyle). Each phase is a safe
    point of `hooks`. The prior start draws nothing from `generator` before the prior does, so a
    seed's samples are the same whatever the drawer."""
    s, hooks = run.settings, hooks or Hooks()
    if given is None and prior_start_on(s):
        return start_from_prior(run, drawer, terms, generator, hooks)
    z = drawer.start(generator)
    image = initial_image(s.init_image, s.init_fit, s.init_noise, s.width, s.height, generator)
    if image is not None:
        image = image.to(run.device)
        z = fit_start(drawer, image, generator, hooks, "encoding the start…")
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
    if s.init_draws > 1:
        hooks.enter(Phase.DRAWING_STARTS, f"drawing {s.init_draws} starts…")
        draws = Draws(drawer, generator, s.init_draws - 1, first=z)
        scoring = lambda: hooks.enter(Phase.SCORING_STARTS, "scoring the starts…")  # noqa: E731
        return Start(draws[best_of(score_starts(drawer, terms, draws, generator, checkpoint=scoring))])
    return Start(z)
