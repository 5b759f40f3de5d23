"""Memory: an estimate of a run's peak (`estimate_bytes`), the levers that trade speed for it and
the choice among them for a budget (`choose_levers`), the check that refuses a run that won't
fit, and the peak actually reached. The decoder and the scorers report their own activation sizes.

The estimate is the process's peak: on a CPU its resident memory, libraries included; on CUDA
the allocator's peak on the device. Its constants were fitted to the peaks measured on the
real architectures and the tiny models (BENCHMARKS.md, "Memory (issue 32)")."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from pixgen.errors import PixgenError

LOW_MEMORY_CHUNK = 8  # cutouts per CLIP forward and backward with --low-memory
ALL_LEVELS = 99  # checkpoint every level of the decoder
# torch, open_clip, kornia... resident before any model (CPU), by torch's build: the CUDA build
# loads and initialises its CUDA libraries at import, GPU or not (0.37 GB more resident here, and
# about 0.31 GB more at a run's peak: BENCHMARKS.md, "Memory (issue 32)", fourth round)
LIBRARY_BYTES = {"cuda": 560 * 2**20, "cpu": 240 * 2**20}
# A CPU process's step beyond the activations (fitted to the measured peaks, BENCHMARKS.md): a
# fixed part (lazily loaded code, oneDNN's primitives, the allocator's arenas), a part per image
# pixel, what loading leaves beside the weights (the casts' leftovers and the libraries loading
# imports: open_clip brings torchvision and timm), and a quarter of CLIP's activations (CLIP's
# are mostly freed before the decoder's backward, where the peak is)
RUNTIME_BYTES = 400 * 2**20
RUNTIME_PIXEL_BYTES = 3300
LOAD_LEFT = 1.25
CLIP_AT_PEAK = 0.25
CUT_FLOATS = 3 * 6  # float32 values per cutout pixel: the cutout and its augmentations' intermediates
VIDEO_BYTES = 96 * 2**20  # the video encoder's buffers beside the frames it holds (--video)
MIB = 2**20

Work = Callable[[int, int], int]  # (width, height) -> float32 values a drawer's render holds


@dataclass(frozen=True)
class Levers:
    """What a run trades speed for memory with: `checkpoint` decoder levels, from the
    full-resolution one, recompute their blocks in backward; CLIP scores `clip_chunk` cutouts at a
    time (0: all at once), each chunk's gradient taken before the next."""

    checkpoint: int = 0
    clip_chunk: int = 0
    recompute_norms: bool = False  # GroupNorm and SiLU recomputed in backward (VQGANDecoder.norms)

    @property
    def norms(self) -> str:
        """What the decoder's GroupNorms keep under these levers (VQGANDecoder.norms)."""
        return "recompute" if self.recompute_norms else "auto"

    def words(self) -> str:
        parts = ["GroupNorm+SiLU recomputed"] if self.recompute_norms else []
        if self.checkpoint:
            top = {1: "the top level", ALL_LEVELS: "every level"}.get(
                self.checkpoint, f"the top {self.checkpoint} levels"
            )
            parts.append(f"decoder checkpointing ({top})")
        if self.clip_chunk:
            parts.append(f"CLIP {self.clip_chunk} cutouts at a time")
        return " + ".join(parts) or "no levers"


def resolve_norms(norms: str, dtype: torch.dtype) -> str:
    """What a decoder of `dtype` keeps for its GroupNorms (VQGANDecoder.norms) with `norms`:
    "auto" is "recompute" in float32, where it costs nothing measurable, and "bf16" (the island
    keeping its reduced-dtype input) in a reduced dtype, where recomputing costs about 3.5%."""
    if norms != "auto":
        return norms
    return "recompute" if dtype == torch.float32 else "bf16"


# On a CPU, the most of CLIP's activations a step keeps at once: beyond it CLIP scores the cutouts
# in halves (quarters...) by default. ViT-B/32 at 32 cutouts keeps about 1.4 GB in float32 (16 at a
# time: 2.7 -> 2.2-2.3 GB at the peak for 1.02x the step) and 0.7 GB in bf16, where halving lowered
# the tensors' peak but not the process's (BENCHMARKS.md, "Memory (issue 32)")
CLIP_AT_ONCE = 2**30


def cpu_chunk(levers: Levers, cutn: int, bytes_per_cutout: int) -> Levers:
    """`levers` on a CPU: where they leave CLIP all `cutn` cutouts at once and those would keep
    more than CLIP_AT_ONCE bytes of activations (`bytes_per_cutout` each, every CLIP together),
    CLIP scores them in the largest halving of `cutn` that keeps within it."""
    chunk = cutn
    while chunk > 1 and chunk * bytes_per_cutout > CLIP_AT_ONCE:
        chunk = (chunk + 1) // 2
    return levers if levers.clip_chunk or chunk >= cutn else replace(levers, clip_chunk=chunk)


# Each lever combination with its step time against none: CPU time at one thread, measured at
# 256x256, cutn 32 on the f16 16384 decoder and ViT-B/32 in bf16, paired in one run
# (benchmarks/memory_budget.py; BENCHMARKS.md, "Memory (issue 32)"), fastest first; "est." rows
# were not timed on their own and are the sum of their parts. CLIP 16 cutouts at a time alone is
# not offered: in bf16 it lowered the tensors' peak but not the process's (glibc keeps what a step
# frees); a float32 CPU run has it by default (cpu_chunk).
LEVER_CHOICES: tuple[tuple[Levers, float], ...] = (
    (Levers(), 1.00),
    (Levers(recompute_norms=True), 1.035),  # bf16; float32 decoders recompute them by default
    (Levers(checkpoint=1), 1.09),
    (Levers(1, 8, True), 1.12),  # est.
    (Levers(ALL_LEVELS, LOW_MEMORY_CHUNK, True), 1.13),  # --low-memory
    (Levers(ALL_LEVELS, 4, True), 1.17),  # est.
)
LOW_MEMORY = Levers(ALL_LEVELS, LOW_MEMORY_CHUNK, True)
RECOMPUTED_NORMS_KEEP = 0.75  # of the decoder's activations at the peak, GroupNorm+SiLU recomputed (measured)


def choose_levers(need: Callable[[Levers], int], budget: int) -> tuple[Levers, float] | None:
    """The fastest lever combination (LEVER_CHOICES) whose estimate `need(levers)` fits in
    `budget` bytes, with its step time against none; None when none fits."""
    return next(((lv, cost) for lv, cost in LEVER_CHOICES if need(lv) <= budget), None)


def smallest_need(need: Callable[[Levers], int]) -> int:
    """The least any lever combination needs: what a budget must be at least."""
    return min(need(lv) for lv, _ in LEVER_CHOICES)


def decoder_floats(arch, width: int, height: int, checkpoint: int) -> int:
    """The values the decoder keeps for backward at this size: each level's (VQGANArch), an
    eighth of it where the level is checkpointed (the blocks' inputs) plus one block recomputed."""
    per_level = arch.level_floats(width, height)
    kept, again = 0, 0
    for level, floats in enumerate(per_level):
        if level < checkpoint:
            kept += floats // 8
            again = max(again, floats // (arch.ddconfig["num_res_blocks"] + 1))
        else:
            kept += floats
    return kept + again


def estimate_parts(
    models,
    width: int,
    height: int,
    cutn: int,
    levers: Levers | bool = False,
    drawer: Work | None = None,
    extra: dict | None = None,
    cpu: bool = False,
) -> dict[str, int]:
    """The estimate's parts in bytes: weights, decoder and CLIP activations (those kept at the
    peak), cutouts, the drawer's work and `extra` ({"prior": ..., "video": ...}: `prior_bytes`,
    VIDEO_BYTES); on a `cpu`, the process's libraries and its runtime (RUNTIME_*, LOAD_LEFT)."""
    levers = LOW_MEMORY if levers is True else levers or Levers()
    size = models.dtype.itemsize  # bf16 models keep 2-byte weights and activations
    dec, weights = models.decoder, size * models.parameters
    # a run that loaded its own models has freed CLIP's text towers before its first step
    parts = {"weights": weights - (size * models.text_parameters() if models.owned else 0)}
    parts["decoder"] = size * decoder_floats(dec.arch, width, height, levers.checkpoint) if dec is not None else 0
    if dec is not None and resolve_norms(levers.norms, dec.dtype) == "recompute":  # float32's default too
        parts["decoder"] = int(parts["decoder"] * RECOMPUTED_NORMS_KEEP)
    at_once = min(cutn, levers.clip_chunk) if levers.clip_chunk else cutn
    clip = size * at_once * sum(s.activation_floats() for s in models.scorers)
    parts["clip"] = int(clip * (CLIP_AT_PEAK if cpu else 1))
    parts["cutouts"] = 4 * cutn * CUT_FLOATS * sum(s.input_size**2 for s in models.scorers)
    parts["drawer"] = 4 * drawer(width, height) if drawer else 0
    if cpu:
        parts["libraries"] = library_bytes(torch.version.cuda is not None)
        parts["runtime"] = RUNTIME_BYTES + RUNTIME_PIXEL_BYTES * width * height + int(LOAD_LEFT * weights)
    return {**parts, **(extra or {})}


def library_bytes(cuda_build: bool) -> int:
    """What the libraries of a CPU process hold resident with torch's CUDA build or its CPU build."""
    return LIBRARY_BYTES["cuda" if cuda_build else "cpu"]


def estimate_bytes(parts: dict[str, int], libraries: bool = True) -> int:
    """The run's estimated peak in bytes: the sum of its `estimate_parts`. Without `libraries`,
    what a CPU process needs beyond the libraries it holds."""
    return sum(parts.values()) - (0 if libraries else parts.get("libraries", 0))


def prior_bytes(arch, batch: int, itemsize: int, guided: bool = False) -> int:
    """A prior's weights and the key/value cache of one batch (twice the rows when guided)."""
    d, layers = arch.n_embd, arch.n_layer
    weights = 12 * layers * d * d + (2 * arch.vocab_size + arch.block_size) * d
    rows = batch * (2 if guided else 1)
    return itemsize * (weights + 2 * layers * rows * arch.block_size * d)


def prior_batch(arch, itemsize: int, budget: int | None, guided: bool = False, most: int = 16) -> int:
    """The largest batch up to `most` whose weights and cache fit `budget` bytes (at least 1)."""
    if budget is None:
        return most
    batch = most
    while batch > 1 and prior_bytes(arch, batch, itemsize, guided) > budget:
        batch //= 2
    return batch


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


def resident_bytes() -> int:
    """This process's resident memory now (what a CPU run has already taken of its estimate)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def check_memory(
    need: Callable[[Levers], int],
    levers: Levers,
    have: int | None,
    words: str,
    hint: Callable[[int], str] | None = None,
) -> None:
    """Refuse a run whose estimate with `levers` is over `have` bytes, in one line: `words` (what
    was asked), what it needs, and a way out (`hint(have)`, and --low-memory when that fits)."""
    needed = need(levers)
    if have is None or needed <= have:
        return
    ways = []
    if levers != LOW_MEMORY and need(LOW_MEMORY) <= have:
        ways.append("--low-memory would fit it (slower)")
    if hint:
        ways.append(hint(have))
    ways.append("--force runs it anyway")
    raise PixgenError(
        f"{words} needs about {needed / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free; {'; '.join(ways)}"
    )


def peak_memory_mb(device: torch.device) -> float:
    """The peak reached so far: CUDA's allocator peak, or the process's maximum RSS (Linux: this
    process image's high-water mark, VmHWM; `ru_maxrss` keeps a parent's peak across a vfork and
    exec, so a run started from a large process would report that process's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
