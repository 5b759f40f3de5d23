"""The composed start (`--init composed`): a plain background and a centred subject, each of one
colour, chosen by CLIP and drawn through the VQGAN's encoder (or the run's other drawer) before
the first step.

A VQGAN trained on pictures draws a picture far better than a latent filled with one code (its
flat codes decode to muddy textures), so the start is composed in pixel space and encoded:

1. The colours, in pixel space (CLIP only): the backgrounds are the few plain colours of a grid
   that the ensemble puts closest to the prompt; each is composed with every other colour of the
   grid as a centred disc, and the best-scored pairs go on.
2. Through the drawer: each of those pairs is drawn as the run's drawer draws it (for the VQGAN:
   encoded, snapped to the codebook and decoded; pixgen.drawers), and the CLIP terms score the
   drawn images as they score a step (cutouts, augmentations;
   starts.candidates.score_starts). The best pair wins.
3. The silhouette: that pair is composed again with each subject shape of
   `--init-silhouettes` (disc, box, triangle, diamond, wide ellipse), and the best start wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pixgen.phases import Hooks, Phase
from pixgen.starts.candidates import best_of, score_starts

LEVELS = (0.0, 1 / 3, 2 / 3, 1.0)  # per channel: a grid of 64 plain colours
BACKGROUNDS = 3  # plain colours tried as the background, each with every other grid colour
PAIRS = 6  # best pixel-space pairs drawn through the VQGAN
MIN_COLOUR_GAP = 0.5  # RGB distance in [0, 1] units below which two colours count as one
SUBJECT_RADIUS = 0.28  # of the image's shorter side: half the side of the subject's box
RADIUS_RANGE = (0.22, 0.32)  # the seed draws the subject's size from this range ...
SHIFT_RANGE = 0.12  # ... and moves its centre by up to this share of each side
BATCH_BYTES = 2**30  # pixel compositions held at once while CLIP scores them (large sizes: fewer)


@dataclass(frozen=True)
class Placement:
    """Where the subject sits: its box's half-side as a share of the shorter side, and its
    centre's offset from the image's centre as a share of each side."""

    radius: float = SUBJECT_RADIUS
    dx: float = 0.0
    dy: float = 0.0


def draw_placement(generator: torch.Generator) -> Placement:
    """A placement drawn from the run's seed, so that seeds give different pictures."""
    u = torch.rand(3, generator=generator).tolist()
    lo, hi = RADIUS_RANGE
    return Placement(lo + (hi - lo) * u[0], SHIFT_RANGE * (2 * u[1] - 1), SHIFT_RANGE * (2 * u[2] - 1))


def colour_grid() -> Tensor:
    """(N, 3) the plain colours tried, in [0, 1]."""
    return torch.tensor(list(itertools.product(LEVELS, repeat=3)), dtype=torch.float32)


def _directions(terms: list) -> list[Tensor]:
    """Per CLIP term, the unit direction of its weighted prompts at the first step."""
    weighted = [t.targets_at(1) for t in terms]
    return [torch.nn.functional.normalize((w.embeds * w.weights[:, None]).sum(0), dim=0) for w in weighted]


@torch.no_grad()
def clip_scores(terms: list, images: Tensor, batch: int = 128) -> Tensor:
    """(N,) the ensemble's weighted similarity of each pixel image (N, 3, H, W) in [0, 1] to the
    prompt, each image seen whole at every CLIP's input size (no cutouts, no VQGAN)."""
    total = sum(t.weight for t in terms)
    scores = torch.zeros(images.shape[0])
    for t, direction in zip(terms, _directions(terms), strict=True):
        size = t.scorer.input_size
        for i, part in zip(range(0, len(images), batch), images.split(batch), strict=True):
            part = torch.nn.functional.interpolate(part, size=(size, size), mode="area").to(direction.device)
            sims = t.scorer.encode_image(part).float() @ direction
            scores[i : i + len(part)] += t.weight / total * sims.cpu()
    return scores


def distinct(colours: Tensor, order: list[int], k: int) -> list[int]:
    """The first k indices of `order` whose colours differ clearly from those already taken."""
    chosen: list[int] = []
    for i in order:
        if all((colours[i] - colours[j]).norm() >= MIN_COLOUR_GAP for j in chosen):
            chosen.append(i)
            if len(chosen) == k:
                break
    return chosen


def colour_pairs(
    terms: list, height: int, width: int, k: int = PAIRS, checkpoint: Callable[[], None] | None = None
) -> list[tuple[Tensor, Tensor]]:
    """The k (background, subject) colour pairs CLIP scores best as pixel compositions (a disc):
    the backgrounds are the plain colours it ranks best, each tried with every other colour.
    The compositions are made and scored a batch at a time (at most BATCH_BYTES of them);
    `checkpoint()` is called before each batch."""
    grid = colour_grid()
    plain = clip_scores(terms, grid[:, :, None, None].expand(-1, 3, 16, 16))
    backgrounds = distinct(grid, plain.argsort(descending=True).tolist(), BACKGROUNDS)
    pairs = [(b, s) for b in backgrounds for s in range(len(grid)) if (grid[b] - grid[s]).norm() >= MIN_COLOUR_GAP]
    batch = max(1, min(128, BATCH_BYTES // (3 * 4 * height * width)))
    scores = []
    for i in range(0, len(pairs), batch):
        if checkpoint:
            checkpoint()
        images = torch.stack([compose(grid[b], grid[s], height, width) for b, s in pairs[i : i + batch]])
        scores.append(clip_scores(terms, images))
    best = torch.cat(scores).argsort(descending=True)[:k].tolist()
    return [(grid[pairs[i][0]], grid[pairs[i][1]]) for i in best]


def _disc(y: Tensor, x: Tensor) -> Tensor:
    return y**2 + x**2 <= 1


def _box(y: Tensor, x: Tensor) -> Tensor:
    return (y.abs() <= 1) & (x.abs() <= 1)


def _triangle(y: Tensor, x: Tensor) -> Tensor:  # apex up
    return (y.abs() <= 1) & (x.abs() <= (y + 1) / 2)


def _diamond(y: Tensor, x: Tensor) -> Tensor:
    return y.abs() + x.abs() <= 1


def _wide(y: Tensor, x: Tensor) -> Tensor:  # an ellipse twice as wide as tall
    return (2 * y) ** 2 + x**2 <= 1


# silhouette name -> its region in coordinates where the subject's box is [-1, 1]^2
SILHOUETTES = {"disc": _disc, "box": _box, "triangle": _triangle, "diamond": _diamond, "wide": _wide}


def subject_mask(height: int, width: int, silhouette: str = "disc", place: Placement = Placement()) -> Tensor:
    """(height, width) bool: the silhouette, its box's half-side place.radius * the shorter side,
    centred at the image's centre moved by (place.dx, place.dy) of each side."""
    r = place.radius * min(height, width)
    y = (torch.arange(height) + 0.5 - height * (0.5 + place.dy)) / r
    x = (torch.arange(width) + 0.5 - width * (0.5 + place.dx)) / r
    return SILHOUETTES[silhouette](y[:, None], x[None, :])


def compose(
    background: Tensor,
    subject: Tensor,
    height: int,
    width: int,
    silhouette: str = "disc",
    place: Placement = Placement(),
) -> Tensor:
    """(3, height, width) in [0, 1]: a plain background and a subject of one colour each."""
    mask = subject_mask(height, width, silhouette, place)
    return torch.where(mask, subject[:, None, None], background[:, None, None])


@torch.no_grad()
def composed_start(
    drawer,
    terms: list,
    generator: torch.Generator,
    width: int,
    height: int,
    silhouettes=("disc",),
    jitter: bool = False,
    hooks: Hooks | None = None,
    device: torch.device | None = None,
    picture=None,
) -> tuple[Tensor, Tensor]:
    """The composed starting tensor of `drawer` (pixgen.drawers; for the VQGAN a latent snapped to
    the codebook) and the composition it draws (1, 3, height, width) in [0, 1] (the run's init
    image: `--init-pixel-weight` keeps the picture near it): the best colour pairs in pixel
    space, then, through the drawer (`drawer.fit_many(images)`), the best of them as a disc,
    then its best silhouette, through the drawer scored with `picture` too (score_starts). Each
    stage is a phase of `hooks` (a safe point: it may stop)."""
    hooks = hooks or Hooks()

    def best(images: list[Tensor]) -> tuple[int, Tensor]:
        starts = drawer.fit_many(torch.stack(images).to(device), generator)
        scoring = lambda: hooks.enter(Phase.COMPOSING_SCORING, "composing the start: scoring…")  # noqa: E731
        i = best_of(score_starts(drawer, terms, starts, generator, checkpoint=scoring, picture=picture))
        return i, starts[i]

    place = draw_placement(generator) if jitter else Placement()
    colours = lambda: hooks.enter(Phase.COMPOSING_COLOURS, "composing the start: colours…")  # noqa: E731
    pairs = colour_pairs(terms, height, width, checkpoint=colours)
    hooks.enter(Phase.COMPOSING_THROUGH, f"composing the start: through {drawer.title}…")
    images = [compose(b, s, height, width, silhouettes[0], place) for b, s in pairs]
    i, z = best(images)
    if len(silhouettes) > 1:
        hooks.enter(Phase.COMPOSING_SILHOUETTES, "composing the start: silhouettes…")
        images = [compose(*pairs[i], height, width, shape, place) for shape in silhouettes]
        i, z = best(images)
    return z, images[i][None].to(device)
