"""Drawers: what turns the one tensor the loop optimises into the image CLIP scores.

A drawer owns its parameter tensor (its shape, its start, its valid range) and renders it to an
image (1, 3, H, W) in [0, 1], differentiably. Everything else is shared: the loop, the cutouts,
the prompts and regularisers, the outputs and the saved state (which holds the drawer's tensor).

    vqgan   a VQGAN latent through the decoder (the default; the only one that needs a VQGAN)
    pixel   a grid of flat cells, optionally snapped to a hard palette
    fft     an image parameterised by its Fourier spectrum, in a decorrelated colour space
    lines   cubic Bezier strokes on a paper colour
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from pixgen.settings import Settings


class Drawer:
    """The interface the loop draws through. `size` is the image's (height, width)."""

    name = "drawer"
    size: tuple[int, int] = (0, 0)

    def start(self, generator: torch.Generator) -> Tensor:
        """A random starting tensor, drawn on the CPU from `generator` (the same on any device)."""
        raise NotImplementedError

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """A starting tensor that draws (about) `image`, (1, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def render(self, params: Tensor) -> Tensor:
        """The tensor -> the image (1, 3, H, W) in [0, 1], with gradient."""
        raise NotImplementedError

    def clamp_(self, params: Tensor) -> None:
        """Bring the tensor back into its valid range after an optimiser step (in place)."""

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The (height, width) of the image a tensor of `shape` draws."""
        return self.size

    def extras(self, params: Tensor) -> dict[str, bytes]:
        """Files written beside final.png at the end of a run (name -> contents)."""
        return {}


def make_drawer(settings: Settings, decoder, device: torch.device) -> Drawer:
    """The run's drawer, from its resolved settings (size already fitted: `fit_factor`)."""
    from pixgen.settings import parse_palette

    s = settings
    palette = torch.tensor(parse_palette(s.palette), device=device) if s.palette else None
    if s.drawer == "vqgan":
        from pixgen.drawers.vqgan import VQGANDrawer

        return VQGANDrawer(decoder, s.tile)
    if s.drawer == "pixel":
        from pixgen.drawers.pixel import PixelDrawer
        from pixgen.settings import pixel_grid

        return PixelDrawer(pixel_grid(s), (s.height, s.width), palette, device)
    if s.drawer == "fft":
        from pixgen.drawers.fft import FFTDrawer

        return FFTDrawer((s.height, s.width), s.fft_decay, device)
    from pixgen.drawers.lines import LinesDrawer

    return LinesDrawer(s.strokes, (s.height, s.width), tuple(s.stroke_width), palette, s.tile, device)


def fit_factor(settings: Settings, decoder) -> tuple[int, int]:
    """What the image's width and height must be multiples of: the VQGAN's factor, or 1."""
    if settings.drawer == "vqgan":
        return decoder.factor, decoder.factor
    return 1, 1


def as_drawer(obj) -> Drawer:
    """A Drawer as is; a VQGAN decoder as the vqgan drawer (the loop's older callers pass one)."""
    if isinstance(obj, Drawer):
        return obj
    from pixgen.drawers.vqgan import VQGANDrawer

    return VQGANDrawer(obj)
