"""The vqgan drawer: a latent quantised to the codebook and decoded by the VQGAN."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixgen.drawers import Drawer
from pixgen.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")
nn = LazyModule("torch.nn")


def set_tile(module, on: bool) -> None:
    """Make every padded convolution of `module` pad circularly (a seamless tile) or with zeros."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and any(p > 0 for p in conv.padding):
            conv.padding_mode = "circular" if on else "zeros"


class VQGANDrawer(Drawer):
    name = "vqgan"
    summary = "a VQGAN latent"
    lr = 0.1
    needs_vqgan = True
    takes_codes = True
    can_halve = True
    can_zoom = True

    @classmethod
    def from_settings(cls, settings, decoder, device) -> VQGANDrawer:
        return cls(decoder, settings.tile)

    @classmethod
    def size_factor(cls, decoder) -> tuple[int, int]:
        return decoder.factor, decoder.factor

    def __init__(self, decoder, tile: bool = False):
        self.decoder = decoder
        set_tile(decoder, tile)  # the models may be shared between runs: set either way
        self.lo = decoder.codebook.min(0).values.view(1, -1, 1, 1)  # per-channel codebook range
        self.hi = decoder.codebook.max(0).values.view(1, -1, 1, 1)

    @property
    def factor(self) -> int:
        return self.decoder.factor

    def render(self, params: Tensor) -> Tensor:
        from pixgen.optimise import render

        return render(self.decoder, params)

    def clamp_(self, params: Tensor) -> None:
        with torch.no_grad():
            params.copy_(torch.maximum(torch.minimum(params, self.hi), self.lo))

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return shape[-2] * self.factor, shape[-1] * self.factor
