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
    """The interface the loop and the starts draw through. `size` is the image's (height, width).

    What a drawer can do is declared, not found by its name: `takes_codes` (its tensor is a
    VQGAN latent: the prior start and `--init-draws` work), `can_halve` (the progressive
    schedule), `can_zoom` (the zoom video mode), `needs_vqgan` (the run loads a VQGAN for it)."""

    name = "drawer"
    size: tuple[int, int] = (0, 0)
    needs_vqgan = False
    takes_codes = False
    can_halve = False
    can_zoom = False

    @property
    def title(self) -> str:
        """The drawer in words, for status lines ("the pixel drawer")."""
        return f"the {self.name} drawer"

    def start(self, generator: torch.Generator, mode: str = "tokens") -> Tensor:
        """A random starting tensor, drawn on the CPU from `generator` (the same on any device).
        `mode` is the start asked for (settings.init); a drawer with one kind of start ignores it."""
        raise NotImplementedError

    @property
    def fit_ready(self) -> bool:
        """Whether `fit` can run without loading anything first (see `prepare_fit`)."""
        return True

    def prepare_fit(self) -> None:
        """Load what `fit` needs (the VQGAN's encoder); the caller announces it first."""

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """A starting tensor that draws (about) `image`, (1, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def fit_many(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """Starting tensors for a batch of images (N, 3, H, W), as the composed start takes them."""
        return [self.fit(image[None], generator) for image in images]

    def render(self, params: Tensor) -> Tensor:
        """The tensor -> the image (1, 3, H, W) in [0, 1], with gradient."""
        raise NotImplementedError

    def clamp_(self, params: Tensor) -> None:
        """Bring the tensor back into its valid range after an optimiser step (in place)."""

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The (height, width) of the image a tensor of `shape` draws."""
        return self.size

    def halve(self, params: Tensor) -> Tensor:
        """The tensor at half resolution (only where `can_halve`)."""
        raise NotImplementedError(f"the {self.name} drawer cannot be halved")

    def zoom(self, params: Tensor, scale: float, shift, rotate: float) -> Tensor:
        """The tensor of the drawn image after one zoom/pan movement (only where `can_zoom`)."""
        raise NotImplementedError(f"the {self.name} drawer cannot zoom")

    def extras(self, params: Tensor) -> dict[str, bytes]:
        """Files written beside final.png at the end of a run (name -> contents)."""
        return {}


def make_drawer(settings: Settings, decoder, device: torch.device, load_encoder=None) -> Drawer:
    """The run's drawer, from its resolved settings (size already fitted: `fit_factor`).
    `load_encoder()` gives the VQGAN's encoder when a fit or the zoom first needs it."""
    from pixgen.settings import parse_palette

    s = settings
    palette = torch.tensor(parse_palette(s.palette), device=device) if s.palette else None
    if s.drawer == "vqgan":
        from pixgen.drawers.vqgan import VQGANDrawer

        return VQGANDrawer(decoder, s.tile, (s.height, s.width), load_encoder)
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
