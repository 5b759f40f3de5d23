"""Validation of resolved settings: declared choices and ranges, finite numbers, list lengths,
and the checks that relate settings to each other (the drawers' capabilities asked). Values
only: the prompts and the prior class are checked by the stages that own them."""

from __future__ import annotations

import math
import re

from pixgen.declare import FLOAT32_TINY, MAX_SIDE
from pixgen.drawers import drawer_class, drawer_classes
from pixgen.errors import PixgenError
from pixgen.settings.fields import DEVICE_RE, FIELDS, MAX_PROMPT_CHARS, Settings


def parse_palette(colours: list[str]) -> list[tuple[float, float, float]]:
    """``["#ff0000", "00f"]`` or ``["gameboy"]`` -> RGB triples in [0, 1]; a bad colour or an
    unknown palette name is a PixgenError (pixgen.drawers.palettes)."""
    from pixgen.drawers.palettes import palette_colours

    return palette_colours(colours)


SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """A memory size in bytes: ``1.5G``, ``800M``, ``2GiB``, ``4096`` (K, M, G, T are powers of 1024);
    anything else is a PixgenError naming the memory_budget setting."""
    m = SIZE_RE.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise PixgenError(f"setting 'memory_budget': expected a size such as 1.5G or 800M, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def zoom_on(s: Settings) -> bool:
    """The zoom/pan video mode is on when any of its movements is."""
    return s.zoom_scale != 1 or any(s.zoom_shift) or s.zoom_rotate != 0


def prior_start_on(s: Settings) -> bool:
    """The run starts from the prior's best sample (`--init prior`, no init image; init noise is
    mixed into the sample)."""
    return s.init == "prior" and not s.init_image


def loads_vqgan(s: Settings) -> bool:
    """The run loads a VQGAN decoder: its drawer draws through one, or its start is the prior's
    (whose codes the VQGAN decodes, ranked, before the best is fitted into another drawer)."""
    return drawer_class(s.drawer).needs_vqgan or prior_start_on(s)


def _check_capabilities(s: Settings, need) -> None:
    """The drawers' own checks, and what only some drawers can do (asked of the run's drawer)."""
    cls = drawer_class(s.drawer)
    w, h, small = *s.size, cls.min_side
    need(min(w, h) >= small, "size", f"{w}x{h} is too small for {cls.title} (at least {small}x{small})")
    for each in drawer_classes().values():
        each.check(s, need)
    need(not (s.tile and zoom_on(s)), "tile", "a seamless tile cannot be zoomed or moved (drop --zoom-*)")

    def needs(able: str) -> str:
        drawers = " or ".join(f"--drawer {name}" for name, c in drawer_classes().items() if getattr(c, able))
        return f"needs {drawers} (drawer {s.drawer} {'cannot' if cls.needs_vqgan else 'has no VQGAN'})"

    if not cls.can_zoom:
        need(not zoom_on(s), "drawer", f"the zoom video mode re-encodes through the VQGAN: it {needs('can_zoom')}")
    if not cls.can_halve:
        need(s.schedule == "plain", "schedule", f"progressive halves the VQGAN latent: it {needs('can_halve')}")
    if not cls.local_cells:
        cells = " or ".join(name for name, c in drawer_classes().items() if c.local_cells)
        need(not s.speck_guard, "speck_guard", f"it holds a drawer's cells back: --drawer {cells}, not {s.drawer}")
    if not cls.takes_codes:
        need(s.init_draws == 1, "init_draws", f"drawing several starting latents {needs('takes_codes')}")


def _range_error(meta: dict, value: float) -> str | None:
    """Why `value` is outside the declared range, or None."""
    lo, hi = meta["lo"], meta["hi"]
    low = lo is not None and (value <= lo if meta["open_lo"] else value < lo)
    high = hi is not None and (value >= hi if meta["open_hi"] else value > hi)
    if not (low or high):
        return None
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}{' (exclusive)' if meta['open_lo'] or meta['open_hi'] else ''}"
    if lo is not None:
        return f"must be {'above' if meta['open_lo'] else 'at least'} {lo}"
    return f"must be {'below' if meta['open_hi'] else 'at most'} {hi}"


def _check_declared(s: Settings) -> None:
    """Every field against its declared choices and range."""
    for key, f in FIELDS.items():
        meta, value = f.metadata, getattr(s, key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            if meta["choices"] and item not in meta["choices"]:
                allowed = ", ".join(meta["choices"])
                raise PixgenError(f"setting {key!r}: unknown value {item!r} (choose from {allowed})")
            if isinstance(item, int | float) and not isinstance(item, bool):
                why = _range_error(meta, item)
                if why:
                    raise PixgenError(f"setting {key!r}: {why}, got {item}")


def _number_error(meta: dict, value: float) -> str | None:
    """Why a number is no value of its setting whatever its range (NaN, +-inf, float32 underflow), or None."""
    if math.isnan(value):
        return "must be a number, got nan"
    if math.isinf(value) and not meta["infinite"]:
        return f"must be a finite number, got {value}"
    if meta["float32"] and 0 < abs(value) < FLOAT32_TINY:
        return f"rounds to 0 in float32 (its smallest normal number is {FLOAT32_TINY:.3g}), got {value:g}"
    return None


def _check_numbers(s: Settings) -> None:
    """Every float, and every float of a list, is finite (unless declared `infinite`) and, where
    declared `float32`, does not round to 0 in float32: a comparison with NaN is always false, so
    NaN would pass every range check below."""
    for key, f in FIELDS.items():
        value = getattr(s, key)
        for item in value if isinstance(value, list) else [value]:
            why = _number_error(f.metadata, item) if isinstance(item, float) else None
            if why:
                raise PixgenError(f"setting {key!r}: {why}")


def _check_declared_lengths(s: Settings) -> None:
    """Every list against its declared longest (before anything parses the items)."""
    for key, f in FIELDS.items():
        most, value = f.metadata["max_items"], getattr(s, key)
        if most is not None and isinstance(value, list) and len(value) > most:
            raise PixgenError(f"setting {key!r}: at most {most} entries, got {len(value)}")


def validate(s: Settings) -> None:
    """Declared choices and ranges, and the checks that relate settings to each other.
    Raises PixgenError naming the key. Values only: the prompts' syntax and --prior-class are
    checked by the stages that own them (pixgen.needs.check_run), still before anything loads."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            error = PixgenError(f"setting {key!r}: {msg}")
            error.key = key  # load_settings says where the value came from
            raise error

    need(len(str(s.prompt)) <= MAX_PROMPT_CHARS, "prompt", f"at most {MAX_PROMPT_CHARS} characters")
    _check_declared_lengths(s)
    _check_numbers(s)
    need(len(s.size) == 2, "size", f"expected [width, height] in pixels, got {s.size}")
    need(all(type(v) is int for v in s.size), "size", f"width and height must be whole numbers, got {s.size}")
    need(all(v > 0 for v in s.size), "size", f"width and height must be positive, got {s.size}")
    need(max(s.size) <= MAX_SIDE, "size", f"{s.size[0]}x{s.size[1]} is too large (max side {MAX_SIDE})")
    _check_declared(s)
    need(bool(DEVICE_RE.match(s.device)), "device", f"unknown device {s.device!r} (auto, cpu, cuda, cuda:N, mps)")
    if s.memory_budget is not None:
        parse_bytes(s.memory_budget)
    need(bool(s.init_silhouettes), "init_silhouettes", "give at least one silhouette (e.g. disc)")
    need(len(s.zoom_shift) == 2, "zoom_shift", f"expected [x, y] in pixels, got {s.zoom_shift}")
    need(
        all(abs(v) <= max(s.size) for v in s.zoom_shift),
        "zoom_shift",
        f"a shift of {s.zoom_shift} pixels moves the image out of its {s.size[0]}x{s.size[1]} frame",
    )
    parse_palette(s.palette)
    need(s.prior_rank <= s.prior_samples, "prior_rank", f"rank {s.prior_rank} of only {s.prior_samples} samples")
    vary = s.vary_strength == 0 or prior_start_on(s) or bool(s.init_image)
    need(vary, "vary_strength", "a variation redraws a start: it needs --init prior or --init-image")
    _check_capabilities(s, need)
