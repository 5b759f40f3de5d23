"""Init images and noise: the pictures a start is fitted to (through the drawer's `fit`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixgen.outputs.images import open_rgb

# init_fit -> how the scale is chosen: cover fills the frame (crops), contain fits it (pads),
# stretch (None) resizes to the exact size
FITS = {"cover": max, "contain": min, "stretch": None}


def fit_image(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Resize to width x height: cover (fill, crop the centre), contain (fit, pad), stretch."""
    pick = FITS[mode]
    if pick is None:
        return image.resize((width, height), Image.LANCZOS)
    scale = pick(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resized = image.resize((w, h), Image.LANCZOS)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(resized, ((width - w) // 2, (height - h) // 2))
    return canvas


def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _perlin_octave(height: int, width: int, size: int, generator: torch.Generator) -> Tensor:
    """One octave of Perlin gradient noise with lattice spacing `size` pixels."""
    gy, gx = math.ceil(height / size) + 1, math.ceil(width / size) + 1
    angles = torch.rand(gy, gx, generator=generator) * 2 * math.pi
    grads = torch.stack([angles.cos(), angles.sin()], -1)  # (gy, gx, 2) unit gradients
    y, x = torch.arange(height) / size, torch.arange(width) / size
    y0, x0 = y.floor().long(), x.floor().long()
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    dots = {}
    for dy in (0, 1):
        for dx in (0, 1):
            g = grads[(y0 + dy)[:, None], (x0 + dx)[None, :]]  # (H, W, 2)
            dots[dy, dx] = g[..., 0] * (fx - dx) + g[..., 1] * (fy - dy)
    u, v = _fade(fx), _fade(fy)
    top = dots[0, 0] * (1 - u) + dots[0, 1] * u
    bottom = dots[1, 0] * (1 - u) + dots[1, 1] * u
    return top * (1 - v) + bottom * v


def perlin(height: int, width: int, generator: torch.Generator, octaves: int = 4, cell: int = 32) -> Tensor:
    """(height, width) fractal Perlin noise in about [-1, 1]: octaves halve in size and weight."""
    out = sum(0.5**o * _perlin_octave(height, width, max(2, cell >> o), generator) for o in range(octaves))
    return out / sum(0.5**o for o in range(octaves)) * 2


def _pixels(width: int, height: int, generator: torch.Generator) -> Tensor:
    return torch.rand(1, 3, height, width, generator=generator)


def _gradient(width: int, height: int, generator: torch.Generator) -> Tensor:
    a, b = torch.rand(2, 3, 1, 1, generator=generator)
    angle = torch.rand((), generator=generator) * 2 * math.pi
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    t = ((x * angle.cos() + y * angle.sin()) / 2 + 0.5).clamp(0, 1)
    return (a * (1 - t) + b * t)[None]


def _perlin_rgb(width: int, height: int, generator: torch.Generator) -> Tensor:
    return torch.stack([perlin(height, width, generator) for _ in range(3)])[None].mul(0.5).add(0.5).clamp(0, 1)


NOISES = {"pixels": _pixels, "gradient": _gradient, "perlin": _perlin_rgb}  # init_noise -> its image


def noise_image(kind: str, width: int, height: int, generator: torch.Generator) -> Tensor:
    """(1, 3, height, width) in [0, 1]: uniform pixels, a random two-colour gradient, or Perlin."""
    return NOISES[kind](width, height, generator)


def initial_image(
    path: str | None, fit: str, noise: str | None, width: int, height: int, generator: torch.Generator
) -> Tensor | None:
    """The init image at `path` fitted (`fit`: cover, contain, stretch), or the `noise` image,
    (1, 3, height, width) in [0, 1]; None when neither is asked for."""
    if path:
        img = fit_image(open_rgb(path), width, height, fit)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    if noise:
        return noise_image(noise, width, height, generator)
    return None
