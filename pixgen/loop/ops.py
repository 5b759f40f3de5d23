"""Differentiable helpers for the latent: straight-through quantisation and clamping."""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row for each latent vector. z: (B, C, H, W) -> (B, H, W)."""
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])  # (B*H*W, C)
    d = (
        flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)[None]
    )  # (B*H*W, n_codes) squared distances
    return d.argmin(1).view(z.shape[0], *z.shape[2:])


def codes_to_latent(codes: Tensor, codebook: Tensor) -> Tensor:
    """Codebook rows for integer codes. codes: (B, H, W) -> (B, C, H, W)."""
    return codebook[codes].movedim(-1, 1)


def quantize_st(z: Tensor, codebook: Tensor) -> Tensor:
    """Snap z to its nearest codebook vectors; the gradient passes straight through to z
    (the straight-through estimator of VQ-VAE, van den Oord et al. 2017)."""
    zq = codes_to_latent(nearest_codes(z, codebook), codebook)
    return z + (zq - z).detach()


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # Pass the gradient unless it would push an out-of-range value further out.
        outside = x - x.clamp(ctx.lo, ctx.hi)
        keep = (grad * outside) >= 0
        return grad * keep, None, None


def clamp_with_grad(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """Clamp to [lo, hi]; out-of-range values still get the gradient that brings them back
    (ClampWithGrad of Crowson's VQGAN+CLIP notebook, 2021)."""
    return _ClampWithGrad.apply(x, lo, hi)


def resize_like(x: Tensor, like: Tensor) -> Tensor:
    """`x` (N, C, h, w) area-resized to `like`'s height and width (itself when they match)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return torch.nn.functional.interpolate(x, size=like.shape[-2:], mode="area")


def halve_latent(z: Tensor) -> Tensor:
    """A latent at half the height and width (rounded up): the mean of each 2x2 block of codes."""
    h, w = z.shape[-2:]
    return torch.nn.functional.adaptive_avg_pool2d(z, ((h + 1) // 2, (w + 1) // 2))
