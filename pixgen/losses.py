"""Loss functions: pure tensor maths, tested with small tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared great-circle distance between unit-normalised a and b, along the last dim.

    Broadcasts: a (N, 1, D) with b (1, P, D) gives (N, P). For unit vectors |a - b| is
    2 sin(angle / 2), so this is angle^2 / 2: 0 for equal vectors, pi^2 / 2 for opposite ones.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def prompt_loss(image_embeds: Tensor, targets: Tensor, weights: Tensor, stops: Tensor) -> Tensor:
    """Weighted spherical distance of N cutout embeddings to P prompt targets.

    image_embeds (N, D), targets (P, D), weights (P,), stops (P,). A negative weight pushes
    away from its target. Once a prompt's (signed) distance for a cutout falls below its stop,
    that term keeps its value but stops giving gradient.
    """
    d = spherical_distance(image_embeds[:, None], targets[None])  # (N, P)
    signed = d * weights.sign()
    signed = torch.where(signed > stops, signed, signed.detach())
    return (signed.mean(0) * weights.abs()).sum()


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels. image: (B, C, H, W)."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()
