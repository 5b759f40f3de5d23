"""Device and seed: decided once, at the edge."""

from __future__ import annotations

import secrets

import torch

from pixgen.errors import PixgenError


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda, then mps, then cpu. An unavailable device is a PixgenError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PixgenError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PixgenError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PixgenError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PixgenError("device 'mps' requested but MPS is not available here; use --device cpu")
    return device


def resolve_seed(seed: int | None) -> int:
    """The given seed, or a fresh random one (recorded in the outputs so the run reproduces)."""
    return int(seed) if seed is not None else secrets.randbelow(2**31)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs (used by kornia) and return a CPU generator for pixgen's draws."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
