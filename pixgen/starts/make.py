"""`make_start`: the one start a run begins from (see pixgen.starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pixgen.phases import Hooks, Phase
from pixgen.prior.start import prior_keyframes, prior_start
from pixgen.settings import prior_start_on
from pixgen.starts.candidates import Draws, best_of, picture_loss, score_starts
from pixgen.starts.composed import composed_start
from pixgen.starts.images import initial_image, noise_image
from pixgen.starts.regions import FIT_STEPS, codes_or_fit, composed_regions, phase_regions, prior_regions, refine

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


def fit_start(drawer, image: Tensor, generator: torch.Generator, hooks: Hooks, text: str) -> Tensor:
    """The drawer's starting tensor for a picture (an init image, the prior's best sample), as phases."""
    ready_to_fit(drawer, hooks)
    hooks.enter(Phase.ENCODING_START, text)
    return drawer.fit(image, generator)


def start_from_prior(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks) -> Start:
    """`--init prior`: the best sample's latent, or, for a drawer that takes no VQGAN codes, the
    best sample's picture fitted into it (as an init image is: the picture is its anchor). A
    phrase with regions draws each region's subject alone and fits their composition
    (pixgen.starts.regions)."""
    if phase_regions(run.plan.phases[0]):
        image, record, grids = prior_regions(run, terms, generator, hooks)
        z = fit_start(drawer, image, generator, hooks, f"fitting the regions' pictures into {drawer.title}…")
        fitted = refine(drawer, z, image, hooks)
        score = dict(cutn=run.settings.cutn, checkpoint=hooks.checkpoint, picture=picture_loss(run.settings))
        z, how = codes_or_fit(drawer, terms, generator, fitted, z, grids, **score)
        return Start(z, image, dict(record, fit_steps=FIT_STEPS, composition=how))
    z, record, image = prior_start(run, drawer, terms, generator, hooks)
    if image is not None:
        z = fit_start(drawer, image, generator, hooks, f"fitting the prior's sample into {drawer.title}…")
    if len(run.plan.phases) == 1 or not drawer.takes_codes:
        return Start(z, image, record)
    keyframes, records = prior_keyframes(run, drawer, terms, generator, hooks)
    return Start(z, image, dict(record, story=records), [z, *keyframes])


def with_noise(run, drawer, start: Start, generator: torch.Generator, hooks: Hooks) -> Start:
    """`--init-noise` on a drawn start (`--init prior|composed`): the noise is mixed into the drawn
    picture (`NOISE_MIX` of it) and the mixture fitted by the drawer, so the noise changes the
    picture without replacing what was drawn for the prompt. The noise is drawn after the start,
    so the picture is the one drawn without noise."""
    s = run.settings
    picture = start.image
    if picture is None:
        with torch.no_grad():
            picture = drawer.render(start.z)
    noise = noise_image(s.init_noise, s.width, s.height, generator)
    image = mix_noise(picture, noise, NOISE_MIX)
    z = fit_start(drawer, image, generator, hooks, "encoding the start with its noise…")
    record = dict(start.record, noise=s.init_noise, noise_mix=NOISE_MIX)
    return Start(z, image, record, [z, *start.keyframes[1:]] if start.keyframes else [])


def varied(image: Tensor, s) -> Tensor:
    """A variation's start picture (`--vary-strength` > 0): `vary_strength` of fresh perlin noise
    from `vary_seed` (its own generator) mixed into the init image; else the image itself (which
    stays the anchor of --init-pixel-weight either way)."""
    if s.vary_strength == 0:
        return image
    noise = noise_image("perlin", s.width, s.height, torch.Generator().manual_seed(s.vary_seed))
    return mix_noise(image, noise, s.vary_strength)


def mix_noise(picture: Tensor, noise: Tensor, share: float) -> Tensor:
    """`share` of `noise` mixed into `picture` (both in [0, 1], the same size): a linear blend."""
    return torch.lerp(picture, noise.to(picture), share).clamp(0, 1)


def composed(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks) -> Start:
    """`--init composed`: a plain background and a centred subject (pixgen.starts.composed)."""
    s = run.settings
    ready_to_fit(drawer, hooks)
    hooks.enter(Phase.COMPOSING, "composing the start…")
    if phase_regions(run.plan.phases[0]):
        image = composed_regions(run, terms, hooks)
        z = fit_start(drawer, image, generator, hooks, "encoding the regions' composition…")
        return Start(refine(drawer, z, image, hooks), image, {"regions": "composed", "fit_steps": FIT_STEPS})
    size, shapes = (s.width, s.height), s.init_silhouettes
    z, image = composed_start(
        drawer, terms, generator, *size, shapes, s.init_jitter, hooks, run.device, picture=picture_loss(s)
    )
    return Start(z, image)


def make_start(run, drawer, terms: list, generator: torch.Generator, hooks: Hooks | None = None, given=None) -> Start:
    """The run's start, drawn through `drawer` from `generator`. `given`, a (tensor, image in
    [0, 1]) pair, replaces the start and the init image (pixgen.apps.restyle). Each phase is a safe
    point of `hooks`. The prior start draws nothing from `generator` before the prior does, so a
    seed's samples are the same whatever the drawer."""
    s, hooks = run.settings, hooks or Hooks()
    if given is None and prior_start_on(s):  # with --init-noise, the noise is mixed into it
        start = start_from_prior(run, drawer, terms, generator, hooks)
        return with_noise(run, drawer, start, generator, hooks) if s.init_noise else start
    z = drawer.start(generator)
    if given is None and s.init_noise and not s.init_image and s.init == "composed":
        return with_noise(run, drawer, composed(run, drawer, terms, generator, hooks), generator, hooks)
    image = initial_image(s.init_image, s.init_fit, s.init_noise, s.width, s.height, generator)
    if image is not None:
        image = image.to(run.device)
        z = fit_start(drawer, varied(image, s), generator, hooks, "encoding the start…")
    if given is not None:
        tensor = given[0] if given[0].shape == z.shape else given[0][..., : z.shape[-2], : z.shape[-1]]
        return Start(tensor.contiguous(), given[1].to(run.device))
    if image is not None:
        return Start(z, image)
    if s.init == "composed":
        return composed(run, drawer, terms, generator, hooks)
    if s.init_draws > 1:
        hooks.enter(Phase.DRAWING_STARTS, f"drawing {s.init_draws} starts…")
        draws = Draws(drawer, generator, s.init_draws - 1, first=z)
        scoring = lambda: hooks.enter(Phase.SCORING_STARTS, "scoring the starts…")  # noqa: E731
        losses = score_starts(drawer, terms, draws, generator, checkpoint=scoring, picture=picture_loss(s))
        return Start(draws[best_of(losses)])
    return Start(z)
