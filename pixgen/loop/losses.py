"""Loss functions: pure tensor maths, tested with small tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixgen.loop.ops import resize_like


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared great-circle distance between unit-normalised a and b, along the last dim
    (the loss of Crowson's VQGAN+CLIP notebook, 2021).

    Broadcasts: a (N, 1, D) with b (1, P, D) gives (N, P). For unit vectors |a - b| is
    2 sin(angle / 2), so this is angle^2 / 2: 0 for equal vectors, pi^2 / 2 for opposite ones.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cosine similarity along the last dim (broadcasts like `spherical_distance`)."""
    return 1 - F.cosine_similarity(a, b, dim=-1)


DISTANCES = {"spherical": spherical_distance, "cosine": cosine_distance}


def prompt_loss(
    image_embeds: Tensor,
    targets: Tensor,
    weights: Tensor,
    stops: Tensor,
    distance: str = "spherical",
    share: Tensor | None = None,
) -> Tensor:
    """Weighted distance (spherical by default) of N cutout embeddings to P prompt targets.

    image_embeds (N, D), targets (P, D), weights (P,), stops (P,). A negative weight pushes
    away from its target. Once a prompt's (signed) distance for a cutout falls below its stop,
    that term keeps its value but stops giving gradient. Each prompt's distance is the mean over
    the cutouts, or, with `share` (N, P), the sum weighted by each cutout's share of that prompt
    (region prompts: `region_shares`).
    """
    d = DISTANCES[distance](image_embeds[:, None], targets[None])  # (N, P)
    signed = d * weights.sign()
    signed = torch.where(signed > stops, signed, signed.detach())
    per_prompt = signed.mean(0) if share is None else (signed * share).sum(0)
    return (per_prompt * weights.abs()).sum()


def region_shares(owner: Tensor, group: Tensor) -> Tensor:
    """(N, P) each cutout's share of each prompt: 1 / (the prompt's region's cutouts) for the
    cutouts of its region (`owner` (N,): the region of each cutout; `group` (P,): each prompt's),
    0 elsewhere, so each prompt averages over its own region's cutouts only."""
    mine = (owner[:, None] == group[None, :]).float()
    return mine / mine.sum(0).clamp(min=1)


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels. image: (B, C, H, W)."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def saturation(image: Tensor) -> Tensor:
    """Mean colourfulness: the spread between the largest and smallest channel of each pixel."""
    return (image.max(1).values - image.min(1).values).mean()


SYMMETRY_AXES = {"horizontal": (-1,), "vertical": (-2,), "both": (-1, -2)}  # the dims each mirrors


def symmetry(image: Tensor, axis: str = "horizontal") -> Tensor:
    """Mean absolute difference to the mirror image: left-right (horizontal), top-bottom
    (vertical) or both."""
    dims = SYMMETRY_AXES[axis]
    return sum((image - image.flip(d)).abs().mean() for d in dims) / len(dims)


def palette_distance(image: Tensor, colours: Tensor) -> Tensor:
    """Mean squared distance of each pixel to its nearest palette colour. colours: (K, 3) in [0, 1]."""
    pixels = image.movedim(1, -1).reshape(-1, 3)  # (N, 3)
    return torch.cdist(pixels, colours.to(pixels)).min(1).values.pow(2).mean()


def latent_anchor(z: Tensor, z0: Tensor) -> Tensor:
    """Mean squared distance from the initial latent z0 (keeps the run near its init, not near 0)."""
    return (z - z0).pow(2).mean()


def regulariser(
    z0: Tensor,
    init_image: Tensor | None,
    *,
    tv: float = 0.0,
    saturation: float = 0.0,
    symmetry: str = "none",
    symmetry_weight: float = 0.0,
    palette: list[tuple[float, float, float]] | None = None,
    palette_weight: float = 0.0,
    init_weight: float = 0.0,
    init_pixel_weight: float = 0.0,
) -> Callable[[Tensor, Tensor], Tensor] | None:
    """The weighted sum of the regularisers with a non-zero weight, as one function of (image, z),
    or None. `z0` is the initial latent and `init_image` the init image (for the anchors);
    `palette` the colours (RGB in [0, 1]) that `palette_weight` pulls toward."""

    terms = []
    if tv:
        terms.append(lambda image, z: tv * total_variation(image))
    if saturation:
        terms.append(lambda image, z: saturation * _saturation(image))
    if symmetry != "none" and symmetry_weight:
        terms.append(lambda image, z: symmetry_weight * _symmetry(image, symmetry))
    if palette and palette_weight:
        colours = torch.tensor(palette)
        terms.append(lambda image, z: palette_weight * palette_distance(image, colours))
    # resize_like: in the coarse part of the progressive schedule z and the image are half size
    if init_weight:
        terms.append(lambda image, z: init_weight * latent_anchor(z, resize_like(z0, z)))
    if init_pixel_weight and init_image is not None:
        terms.append(lambda image, z: init_pixel_weight * (image - resize_like(init_image, image)).abs().mean())
    if not terms:
        return None
    return lambda image, z: sum(term(image, z) for term in terms)


_saturation, _symmetry = saturation, symmetry  # the names regulariser's weights shadow
