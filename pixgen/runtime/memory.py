"""Memory: a rough estimate of a run's peak, the check that refuses a run that won't fit, and
the peak actually reached. The decoder and the scorers report their own activation sizes."""

from __future__ import annotations

import resource
from collections.abc import Callable

import torch

from pixgen.errors import PixgenError

LOW_MEMORY_CHUNK = 8  # cutouts per CLIP forward and backward with --low-memory


Work = Callable[[int, int], int]  # (width, height) -> float32 values a drawer's render holds


def estimate_bytes(
    models, width: int, height: int, cutn: int, low_memory: bool = False, drawer: Work | None = None
) -> int:
    """A rough peak-memory estimate for one step: decoder activations plus CLIP's per cutout.
    `low_memory` keeps about a quarter of the decoder's (checkpointing) and CLIP's for one batch
    of `LOW_MEMORY_CHUNK` cutouts (measured at 256x256, cutn 32: BENCHMARKS.md). Models cast to
    bf16 (pixgen.runtime.precision) count two bytes a value. `drawer(width, height)`: the float32 values
    the run's drawer holds to render (Drawer.work_floats; the lines drawer's strokes)."""
    floats = models.decoder.arch.activation_floats(width, height) if models.decoder is not None else 0
    if low_memory:
        floats //= 4
    clip_floats = sum(cutn * scorer.activation_floats() for scorer in models.scorers)
    floats += clip_floats * min(cutn, LOW_MEMORY_CHUNK) // cutn if low_memory else clip_floats
    size = models.dtype.itemsize  # bf16 models keep 2-byte weights and activations
    return size * (floats + models.parameters) + 4 * (drawer(width, height) if drawer else 0)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device (CUDA) or in the machine (MemAvailable), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(
    models,
    width: int,
    height: int,
    cutn: int,
    have: int | None,
    low_memory: bool = False,
    drawer: Work | None = None,
    drawer_words: str = "the drawer",
) -> None:
    """Refuse, naming what would fit, a run estimated not to fit in `have` free bytes."""
    need = estimate_bytes(models, width, height, cutn, low_memory, drawer)
    if have is None or need <= have:
        return
    side = max(width, height)
    factor = models.decoder.factor if models.decoder is not None else 1
    while side > factor and estimate_bytes(models, side, side, cutn, low_memory, drawer) > have:
        side = int(side * 0.8)
    hint = f"about {side}x{side} would fit"
    if not low_memory and estimate_bytes(models, width, height, cutn, True, drawer) <= have:
        hint = "--low-memory would fit it (slower), or " + hint
    drawing = 4 * drawer(width, height) if drawer else 0
    if drawing > need / 2:  # the drawer's own work: its settings are the remedy, not the size alone
        hint = f"{drawer_words} needs about {drawing / 2**30:.1f} GiB of it; " + hint
    raise PixgenError(
        f"setting 'size': {width}x{height} with cutn {cutn} needs about {need / 2**30:.1f} GiB but "
        f"only {have / 2**30:.1f} GiB is free; {hint} (--force runs it anyway)"
    )


def peak_memory_mb(device: torch.device) -> float:
    """The peak reached so far: CUDA's allocator peak, or the process's maximum RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
