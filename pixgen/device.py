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


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# precision -> CLIP's autocast dtype (None: plain fp32); "auto" picks one of them per device
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for CLIP, or None for plain fp32.

    Only CLIP runs in reduced precision: measured, it keeps the gradient (cosine 0.9999 to fp32)
    while the decoder's bent (0.966), and kornia's perspective warp went non-finite under
    autocast. "auto" takes bf16 where the hardware runs it natively (CUDA with bf16, CPUs with
    AVX512-BF16/AMX) and fp32 elsewhere.
    """
    if device.type == "mps":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise PixgenError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return DTYPES[precision]
