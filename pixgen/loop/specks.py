"""Specks: a few pixels of a colour that is no blend of a flat picture's two colours.

A decoder can leave a small multi-coloured group of pixels at a subject's edge (the shapes
VQGAN's decoder does on some of the code layouts its prior draws: BENCHMARKS.md, issue 29). A
person sees it at once; a loss over the whole picture hardly does. These functions find such
groups in the picture alone, with no knowledge of the world it belongs to, so that a ranking of
pictures of flat colours can put a picture with specks after those without (`prior_speck_free`),
and so that the steps may not add one to a picture without (`SpeckGuard`, `speck_guard`).
They mean nothing for a photograph, whose colours are no blend of two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STRAY_DISTANCE = 50 / 255  # a colour further than this from every blend of the two is stray
SPECK_PIXELS = (2, 24)  # a speck has this many pixels at least and at most; more is a region
LEVELS = 6  # per channel, for finding the two colours that most pixels share


def two_colours(image: Tensor) -> tuple[Tensor, Tensor]:
    """The colours (3,) of `image` (3, H, W) in [0, 1] that most of its pixels share: the mean of
    the most common coarse colour's pixels, and of the most common one among the pixels far from
    it (the first again for a picture of one colour)."""
    flat = image.flatten(1).T  # (H*W, 3)
    bins = (flat * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)
    keys = (bins * torch.tensor([LEVELS * LEVELS, LEVELS, 1])).sum(1)
    first = flat[keys == keys.bincount().argmax()].mean(0)
    rest = (flat - first).norm(dim=1) > 2 * STRAY_DISTANCE
    if not rest.any():
        return first, first
    second = flat[rest][keys[rest] == keys[rest].bincount().argmax()].mean(0)
    for _ in range(2):  # each the median of the pixels close to it
        pair = torch.stack([first, second])
        near = torch.cdist(flat, pair)
        first, second = (flat[near[:, i] < STRAY_DISTANCE].median(0).values for i in (0, 1))
    return first, second


def nearest_blend(images: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Each pixel of `images` (N, 3, H, W) replaced by the nearest blend of its picture's two
    colours `a` and `b` (N, 3): the nearest point of the segment of colours between them."""
    a, ab = a[:, :, None, None], (b - a)[:, :, None, None]
    t = ((images - a) * ab).sum(1, keepdim=True) / (ab * ab).sum(1, keepdim=True).clamp_min(1e-12)
    return a + t.clamp(0, 1) * ab


def stray_pixels(image: Tensor) -> Tensor:
    """(H, W) bool: the pixels of `image` (3, H, W) in [0, 1] further than STRAY_DISTANCE from
    every blend of its two colours (`two_colours`); a soft edge between the two is no stray."""
    a, b = two_colours(image)
    return (image - nearest_blend(image[None], a[None], b[None])[0]).norm(dim=0) > STRAY_DISTANCE


def group_labels(masks: Tensor) -> Tensor:
    """The 8-connected groups of boolean masks (N, H, W), labelled at once: (N, H, W), each pixel
    of a group holding the group's label (1 to H*W, unique within its mask), 0 outside the masks."""
    _, h, w = masks.shape
    labels = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w) * masks
    while True:  # every pixel of a group takes the group's largest label
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * masks
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def group_sizes(masks: Tensor) -> Tensor:
    """The sizes of the 8-connected groups of boolean masks (N, H, W): (N, H*W + 1), the size of
    each group at its label's place, zero elsewhere."""
    n, h, w = masks.shape
    offset = (torch.arange(n) * (h * w + 1)).view(n, 1, 1)
    return (group_labels(masks) + offset)[masks].bincount(minlength=n * (h * w + 1)).view(n, -1)


def _speck_sized(sizes: Tensor) -> Tensor:
    """Whether each group size is a speck's (SPECK_PIXELS)."""
    lo, hi = SPECK_PIXELS
    return (sizes >= lo) & (sizes <= hi)


def speck_counts(masks: Tensor) -> Tensor:
    """How many specks each of the stray-pixel masks (N, H, W) (`stray_pixels`) holds: groups of
    SPECK_PIXELS pixels; (N,)."""
    return _speck_sized(group_sizes(masks)).sum(1)


def speck_count(image: Tensor) -> int:
    """How many specks `image` (3, H, W) in [0, 1] carries."""
    return int(speck_counts(stray_pixels(image.float())[None])[0])


def speck_pixels(image: Tensor) -> Tensor:
    """(H, W) bool: the pixels of the specks `image` (3, H, W) in [0, 1] carries."""
    stray = stray_pixels(image.float())
    labels = group_labels(stray[None])[0]
    return stray & _speck_sized(labels[stray].bincount(minlength=stray.numel() + 1))[labels]


class SpeckGuard:
    """Steps that may not add a speck (the setting speck_guard), for a drawer of `local_cells`.

    It keeps a picture without a speck without one. Before a step scores the picture of its
    tensor `z`, if the picture before had no speck, the cells under each speck go back to their
    values in the tensor the last step scored (`clean`), with the cells around them: one cell
    away, then 2, 4 (a decoder reads its neighbours), then every cell (a decoder with attention
    reads them all), until the picture shows no speck. The step goes on from the picture held back. While
    the picture has a speck the guard waits (a start with one, a noisy or random start, a zoom's
    re-encoded picture): going back to a picture with specks would win nothing, and it would
    hold every step of a noisy start, each of which draws new specks. Steps that keep pushing a
    clean picture through speckled layouts (a palette far from its colours, say) are slowed down
    or held: that is the price of the guard (`--no-speck-guard`). `clean` (the tensor the last
    step scored) and `seen` (the cells under its picture's specks) are part of the loop's state."""

    REACHES = (1, 2, 4)  # then every cell

    def __init__(self, drawer, z: Tensor):
        self.drawer = drawer
        self.reset(z)

    def reset(self, z: Tensor) -> None:
        """Start again from `z` (of a new shape, perhaps), whose picture is not looked at yet: the
        first step looks and holds nothing back."""
        self.clean = z.detach().clone()
        self.seen = torch.ones(1, 1, *z.shape[-2:], dtype=torch.bool, device=z.device)

    def flagged(self, image: Tensor, shape: tuple[int, ...]) -> Tensor:
        """(1, 1, rows, cols) bool: the cells under the specks of `image` (1, 3, H, W)."""
        return self.drawer.cells_under(speck_pixels(image[0].detach().cpu()), shape).to(self.seen.device)

    def held(self, z: Tensor, flags: Tensor, render) -> tuple[Tensor, Tensor, Tensor]:
        """`z` held back where `flags` (the cells under the specks of its picture) are, if the
        picture before had none (`seen` is empty); the cells held back (1, 1, rows, cols); and the
        cells under the specks of the picture the tensor returned draws."""
        cells = torch.zeros_like(flags)
        if not flags.any() or self.seen.any():
            return z, cells, flags
        for reach in (*self.REACHES, max(flags.shape[-2:])):
            cells = F.max_pool2d(flags.float(), 2 * reach + 1, 1, reach) > 0
            held = torch.where(cells, self.clean, z)
            after = self.flagged(render(held), z.shape)
            if not after.any():
                break
        return held, cells, after

    @torch.no_grad()
    def check(self, z: Tensor, image: Tensor, render) -> Tensor:
        """The picture the step scores: `image` (of `z`), or, where the step added a speck, the
        picture of `z` held back there (`z` changed in place, `render(z)` drawing it again)."""
        held, cells, self.seen = self.held(z.detach(), self.flagged(image, z.shape), render)
        if cells.any():
            z.copy_(held)
            with torch.enable_grad():
                image = render(z)
        self.clean = z.detach().clone()
        return image

    @torch.no_grad()
    def final(self, z: Tensor, render) -> Tensor:
        """The tensor the run keeps, `z` (after the last step, unchecked), held back where it adds
        a speck; the guard's memory is left as it is (a resumed run goes on from it)."""
        return self.held(z.detach(), self.flagged(render(z), z.shape), render)[0]
