"""The fft drawer: an image parameterised by its Fourier spectrum, as described for Lucid
("Differentiable Image Parameterizations", Mordvintsev et al., Distill 2018) and aphantasia.

The tensor is the real 2D spectrum (rfft2) of each of three decorrelated colour channels. Each
frequency f (cycles per pixel) is scaled by 1 / max(f, 1/side)^decay, so that a step of the
optimiser moves coarse structure more than fine detail (natural images' spectra fall as about
1/f); the inverse FFT gives the decorrelated channels, a fixed 3x3 matrix turns them into RGB,
and a sigmoid brings them into [0, 1]. The spectrum of an image is periodic: so is the image,
which makes it a seamless tile by construction.

The colour matrix: natural images' colours decorrelate along an achromatic axis and two
opponent ones, blue-yellow and red-green (Ruderman, Cronin and Chiao, 1998); the matrix is the
symmetric square root of a covariance with those axes, the achromatic one twice as spread as the
opponent ones (pixgen's choice), normalised so that no RGB channel's column exceeds 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pixgen.declare import DRAWER, setting
from pixgen.drawers import Drawer
from pixgen.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")

OPPONENT = (
    (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)),  # achromatic
    (1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)),  # blue-yellow
    (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0),  # red-green
)
SPREAD = (1.0, 0.5, 0.5)  # the standard deviation along each axis, relative
INIT_STD = 0.01  # the starting spectrum's spread: a grey image with a little noise


def colour_matrix() -> Tensor:
    """(3, 3): decorrelated channels -> RGB (before the sigmoid)."""
    u = torch.tensor(OPPONENT).T  # columns: the axes
    root = u @ torch.diag(torch.tensor(SPREAD)) @ u.T
    return root / root.norm(dim=0).max()


def spectrum_scale(height: int, width: int, decay: float) -> Tensor:
    """(height, width // 2 + 1): 1 / max(f, 1/side)^decay per rfft2 frequency, normalised to a
    root mean square of 1 (so the image's spread is about the spectrum's)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    f = (fy**2 + fx**2).sqrt().clamp(min=1 / max(height, width))
    scale = f.pow(-decay)
    return scale / scale.pow(2).mean().sqrt()


class FFTDrawer(Drawer):
    name = "fft"
    summary = "a Fourier spectrum"
    lr = 0.03
    min_side = 8  # smaller images leave CLIP nothing to see and the smoothness terms nothing to compare

    class Fields:
        fft_decay: float = setting(
            1.0, "fft: the spectrum is scaled by 1/frequency^decay (higher: smoother).", lo=0, hi=4, panel=DRAWER
        )

    @classmethod
    def from_settings(cls, settings, decoder, device) -> FFTDrawer:
        return cls((settings.height, settings.width), settings.fft_decay, device)

    def __init__(self, size: tuple[int, int], decay: float, device):
        self.size, self.device = size, device
        self.scale = spectrum_scale(*size, decay).to(device)
        self.colour = colour_matrix().to(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, 3, self.size[0], self.size[1] // 2 + 1, 2)

    def start(self, generator: torch.Generator) -> Tensor:
        return (INIT_STD * torch.randn(self.shape, generator=generator)).to(self.device)

    def render(self, params: Tensor) -> Tensor:
        spectrum = torch.view_as_complex(params.contiguous()) * self.scale
        channels = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(torch.einsum("ij,bjhw->bihw", self.colour, channels))

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """The exact inverse of `render` (colours clamped just inside (0, 1))."""
        logits = torch.logit(image.float().to(self.device).clamp(1e-3, 1 - 1e-3))
        channels = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.colour), logits)
        spectrum = torch.fft.rfft2(channels, norm="ortho") / self.scale
        return torch.view_as_real(spectrum).contiguous()
