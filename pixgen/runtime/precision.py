"""Precision, decided once at the edge: the dtype the models compute in on this device.

- **fp32**: everything in float32.
- **bf16**: the decoder's and CLIP's weights are cast to bfloat16 once, when the run starts, and
  their activations follow (the decoder in channels_last, so oneDNN takes its AMX convolution
  kernels). The latent, the codebook, the quantisation, the cutouts and augmentations, the
  optimiser and the loss stay float32.
- **fp16** (CUDA only): CLIP under fp16 autocast, the decoder in float32.

``auto`` is decided by what the machine does, not by a flag alone: on CUDA bf16 where the card
has it, else fp16; on a CPU bf16 only where oneDNN has native bf16 (AVX512-BF16 or AMX) *and* a
short calibration (a step's matmul and convolution shapes, forward and backward, in both dtypes)
measured it faster here, cached per CPU, thread count and torch version; fp32 everywhere else.
The same calibration decides for models of every size: small models (the shapes models, 64x64)
were measured faster in bf16 too, where it says bf16 is (BENCHMARKS.md, issue 29).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pixgen.errors import PixgenError
from pixgen.files import atomic_write
from pixgen.paths import cache_dir

log = logging.getLogger("pixgen")

# auto takes bf16 on a CPU only when the calibration measured it at least this much faster
MIN_SPEEDUP = 1.25


@dataclass(frozen=True)
class Precision:
    """What a run computes in: `weights`, the dtype the models are cast to once; `autocast`, CLIP's
    autocast dtype (fp16 on CUDA) or None; `why`, how `auto` decided (for run.json)."""

    name: str
    weights: torch.dtype = torch.float32
    autocast: torch.dtype | None = None
    why: str = ""

    def record(self) -> dict:
        return {"precision": self.name, "precision_why": self.why}


FP32 = Precision("fp32", why="asked")
# the explicit choices of the `precision` setting (besides "auto")
CHOICES = ("fp32", "bf16", "fp16")


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The run's Precision for the `precision` setting on `device`."""
    if precision not in (*CHOICES, "auto"):
        raise PixgenError(f"setting 'precision': {precision!r} is not one of auto, {', '.join(CHOICES)}")
    if device.type == "mps":
        return Precision("fp32", why="MPS: fp32")
    if precision == "fp32":
        return FP32
    if precision == "fp16":
        if device.type != "cuda":
            raise PixgenError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return Precision("fp16", autocast=torch.float16, why="asked")
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            log.warning(
                "precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so it is emulated: "
                "a bf16 matmul measured %.0fx slower than fp32 here; --precision fp32 is faster",
                emulated_slowdown(),
            )
        return Precision("bf16", torch.bfloat16, why="asked")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", torch.bfloat16, why="auto: CUDA with bf16")
        return Precision("fp16", autocast=torch.float16, why="auto: CUDA without bf16")
    native = cpu_has_fast_bf16()
    return auto_on_cpu(native, calibration() if native else None)


def auto_on_cpu(native_bf16: bool, timings: dict | None) -> Precision:
    """`auto` on a CPU, from what was found here: fp32 without native bf16 (nothing measured:
    `timings` None); else bf16 when the calibration's timings {"fp32": s, "bf16": s} make it at
    least MIN_SPEEDUP times faster, whatever the models' size."""
    if not native_bf16:
        return Precision("fp32", why="auto: no native bf16 on this CPU")
    speedup = timings["fp32"] / max(timings["bf16"], 1e-12)
    if speedup < MIN_SPEEDUP:
        return Precision("fp32", why=f"auto: bf16 measured {speedup:.2f}x fp32 here")
    return Precision("bf16", torch.bfloat16, why=f"auto: bf16 measured {speedup:.2f}x fp32 here")


def emulated_slowdown() -> float:
    """How many times slower a small bf16 matmul runs than fp32 here (emulated bf16: ~100x)."""
    return _time_matmul(torch.bfloat16, 256, 3) / max(_time_matmul(torch.float32, 256, 3), 1e-9)


def _time_matmul(dtype: torch.dtype, n: int, reps: int) -> float:
    a = torch.randn(n, n).to(dtype)
    a @ a
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ a
    return time.perf_counter() - t0


def calibration_key() -> str:
    """What the calibration depends on: the CPU, its capability, the thread count, torch."""
    return "|".join(
        [
            _cpu_name(),
            torch.backends.cpu.get_cpu_capability(),
            f"threads={torch.get_num_threads()}",
            f"torch={torch.__version__}",
        ]
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _calibration_file() -> Path:
    return cache_dir() / "calibration.json"


PIN = "PIXGEN_BF16_SPEEDUP"  # a number: the calibration's answer, given instead of measured


def calibration() -> dict:
    """{"fp32": s, "bf16": s, "speedup": fp32 / bf16} for this machine, measured once (about a
    second) and cached in the cache dir under `calibration_key()`; $PIXGEN_BF16_SPEEDUP, when
    set, is the answer instead (a machine whose timings are too noisy to trust, and the test
    suite, which must not depend on how loaded the machine is)."""
    pinned = os.environ.get(PIN)
    if pinned is not None:
        try:
            speedup = float(pinned)
        except ValueError:
            speedup = float("nan")
        if not math.isfinite(speedup) or speedup <= 0:
            raise PixgenError(f"${PIN}: a positive number (bf16's speed-up over fp32 here), got {pinned!r}")
        return {"fp32": speedup, "bf16": 1.0, "speedup": speedup}
    key, path = calibration_key(), _calibration_file()
    try:
        cached = json.loads(path.read_text()).get(key)
        if cached:
            return cached
    except (OSError, ValueError, AttributeError):  # none yet, or unreadable: measure again
        pass
    result = measure()
    _store(path, key, result)
    return result


def _store(path: Path, key: str, result: dict) -> None:
    """Add `result` under `key`, atomically; a cache that cannot be written is only a warning."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1).encode())
    except OSError as e:
        log.warning("could not cache the precision calibration in %s: %s", path, e.strerror or e)
    except PixgenError as e:  # atomic_write's own line names the file
        log.warning("could not cache the precision calibration: %s", e)


def measure(reps: int = 3) -> dict:
    """Seconds for a small workload shaped like a real step (a ViT-B MLP layer on 32 cutouts and a
    128-channel 3x3 decoder convolution at 64x64, forward and input-gradient backward) in fp32
    and in bf16 as a run would cast it; the best of `reps`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1600, 768, generator=g)
    w = torch.randn(3072, 768, generator=g) * 0.02
    img = torch.randn(1, 128, 64, 64, generator=g)
    k = torch.randn(128, 128, 3, 3, generator=g) * 0.02
    times = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        fmt = torch.channels_last if dtype != torch.float32 else torch.contiguous_format
        wd, kd = w.to(dtype), k.to(dtype).contiguous(memory_format=fmt)
        best = float("inf")
        for _ in range(reps + 1):  # the first pass warms oneDNN's kernel cache
            t0 = time.perf_counter()
            xi = x.clone().requires_grad_(True)
            ii = img.clone().requires_grad_(True)
            y = torch.nn.functional.linear(xi.to(dtype), wd)
            c = torch.nn.functional.conv2d(ii.to(dtype).contiguous(memory_format=fmt), kd, padding=1)
            (y.float().mean() + c.float().mean()).backward()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    return {"fp32": times["fp32"], "bf16": times["bf16"], "speedup": times["fp32"] / times["bf16"]}
