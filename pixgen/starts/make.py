"""`make_start`: the one start a run begins from (see pixgen.starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pixgen.phases import Hooks, Phase
from pixgen.prior.start import prior_keyframes, prior_start
from pixgen.starts.candidates import Draws, best_of, score_starts
from pixgen.starts.composed import composed_start
from pixgen.starts.images import initial_image, noise_image

DRAWN = ("composed", "prior")  # the starts drawn for the prompt, which --init-noise mixes into
NOISE_MIX = 0.3  # the share of the noise image in a drawn start's picture (--init-noise)


@dataclass
class Start:
    """The starting tensor, the picture it was fitted to (None for a random start; the anchor of
    `--init-pixel-weight`), for a drawn start how it was chosen (run.json's `start`) and, in story
    mode on the prior start, the keyframe of every phrase (the first is `z`; pixgen.loop.story)."""

    z: Tensor
    image: Tensor | None = None
    record: dict = field(default_factory=dict)
    keyframes: list[Tensor] = field(default_factory=list)


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
    if given is None and s.init_noise and not s.init_image and s.init in DRAWN:
        return noisy_start(run, drawer, terms, generator, hooks)
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
    if s.init in DRAWN:
        return drawn_start(run, drawer, terms, generator, hooks)
    if s.init_draws > 1:
        hooks.enter(Phase.DRAWING_STARTS, f"drawing {s.init_draws} starts…")
        draws = Draws(drawer, generator, s.init_draws - 1, first=z)
        scoring = lambda: hooks.enter(Phase.SCORING_STARTS, "scoring the starts…")  # noqa: E731
        return Start(draws[best_of(score_starts(drawer, terms, draws, generator, checkpoint=scoring))])
    return Start(z)


def drawn_start(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks) -> Start:
    """The composed start or the prior's best sample (`--init composed|prior`)."""
    s = run.settings
    if s.init == "composed":
        ready_to_fit(drawer, hooks)
        hooks.enter(Phase.COMPOSING, "composing the start…")
        size, shapes = (s.width, s.height), s.init_silhouettes
        z, image = composed_start(drawer, terms, generator, *size, shapes, s.init_jitter, hooks, run.device)
        return Start(z, image)
    z, record = prior_start(run, drawer, terms, generator, hooks)
    if len(run.plan.phases) == 1:
        return Start(z, None, record)
    keyframes, records = prior_keyframes(run, drawer, terms, generator, hooks)
    return Start(z, None, dict(record, story=records), [z, *keyframes])


def noisy_start(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks) -> Start:
    """`--init-noise` on a drawn start (`--init composed|prior`): the noise is mixed into the drawn
    picture (`NOISE_MIX` of it) and the mixture fitted by the drawer, so the noise changes the
    picture without replacing what was drawn for the prompt. The picture is drawn first, from the
    same random stream as without noise, then the noise."""
    s = run.settings
    start = drawn_start(run, drawer, terms, generator, hooks)
    picture = start.image
    if picture is None:
        with torch.no_grad():
            picture = drawer.render(start.z)
    noise = noise_image(s.init_noise, s.width, s.height, generator).to(picture.device)
    image = mix_noise(picture, noise, NOISE_MIX)
    ready_to_fit(drawer, hooks)
    hooks.enter(Phase.ENCODING_START, "encoding the start with its noise…")
    record = dict(start.record, noise=s.init_noise, noise_mix=NOISE_MIX)
    z = drawer.fit(image, generator)
    return Start(z, image, record, [z, *start.keyframes[1:]] if start.keyframes else [])


def mix_noise(picture: Tensor, noise: Tensor, share: float) -> Tensor:
    """`share` of `noise` mixed into `picture` (both in [0, 1], the same shape): a linear blend."""
    return torch.lerp(picture, noise.to(picture), share).clamp(0, 1)
