"""Candidate starts and the one function that scores them by the run's CLIP terms and the
regularisers that judge the picture.

The caller takes the best (`best_of`): the composed start, the prior's samples and `--init-draws`
all choose this way, so a start is chosen as a step would score it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pixgen.loop.losses import regulariser
from pixgen.settings import parse_palette


class Draws(Sequence):
    """`first`, then `count` starting tensors drawn from `generator` one after the other as
    `drawer.start(generator)` draws them, held one at a time: making this moves `generator`
    on exactly as the draws do, and draw i is drawn again, on demand, from the state it was first
    drawn from."""

    def __init__(self, drawer, generator: torch.Generator, count: int, first: Tensor):
        self.drawer, self.first = drawer, first
        self.states = []
        for _ in range(count):
            self.states.append(generator.get_state())
            drawer.start(generator)  # moves the generator on

    def __len__(self) -> int:
        return 1 + len(self.states)

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i == 0:
            return self.first
        return self.drawer.start(torch.Generator().set_state(self.states[i - 1]))


@torch.no_grad()
def score_starts(
    drawer,
    terms: list,
    starts: Sequence[Tensor],
    generator: torch.Generator,
    cutn: int | None = 8,
    checkpoint: Callable[[], None] | None = None,
    picture: Callable[[Tensor], Tensor] | None = None,
    look: Callable[[Tensor], None] | None = None,
) -> list[float]:
    """The CLIP terms' loss at the first step of each candidate starting tensor's image, drawn by
    `drawer`, plus `picture(image)` (the run's regularisers of the picture: `picture_loss`). Each
    is scored on the same cutouts and the same augmentations (both random streams are rewound
    before each), `cutn` of them (a first look is cheap: 8 cutouts of each start cost about what
    one step's forward pass does). `checkpoint()` is called before each candidate (a safe point:
    it may raise to stop); `starts` may be lazy (Draws). `look(image)` sees each image as it is
    scored (the prior's speck-free ranking looks for specks there)."""
    total = sum(t.weight for t in terms)
    state, global_state = generator.get_state(), torch.get_rng_state()
    losses = []
    for i in range(len(starts)):
        if checkpoint:
            checkpoint()
        z = starts[i]
        generator.set_state(state)
        torch.set_rng_state(global_state)
        image = drawer.render(z)
        if look is not None:
            look(image)
        loss = sum(t.weight / total * float(t.loss(image, 1, generator, None, cutn)) for t in terms)
        losses.append(loss + (float(picture(image)) if picture is not None else 0.0))
    return losses


def picture_weights(s) -> dict:
    """The settings' regularisers that judge the picture alone, as `loop.losses.regulariser`
    takes them."""
    return dict(
        tv=s.tv_weight,
        saturation=s.saturation_weight,
        symmetry=s.symmetry,
        symmetry_weight=s.symmetry_weight,
        palette=parse_palette(s.palette) if s.palette else None,
        palette_weight=s.palette_weight,
    )


def picture_loss(s) -> Callable[[Tensor], Tensor] | None:
    """The run's regularisers of the picture (smoothness, saturation, symmetry, palette) as one
    function of an image, or None: what a step adds to the CLIP terms, so that a palette or a
    symmetry asked for also chooses the start. The anchors to the start are left out: each
    candidate is its own start."""
    reg = regulariser(None, None, **picture_weights(s))
    return None if reg is None else (lambda image: reg(image, None))


def best_of(losses: list[float]) -> int:
    """The index of the lowest loss (the first of equals)."""
    return min(range(len(losses)), key=losses.__getitem__)
