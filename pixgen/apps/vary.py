"""`pixgen vary`: N variations of a pixgen image, subtle to strong, each a run that reproduces.

A variation is the image's own settings with `vary_strength` and a `vary_seed` of its own:
- made from the prior's sample (`--init prior`): the same sample is drawn again and its code grid
  redrawn by the prior from a point on (strength 0.25: the last quarter of the codes), then the
  run goes on as the original did (its own steps);
- otherwise: the image itself is the start (`--init-image`), mixed with fresh noise by the
  strength and fitted by the run's drawer, then `strength` of the original's steps.
Strength 0 is the original's settings unchanged: the same image again."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.phases import Hooks
from pixgen.settings import Settings, prior_start_on

MAX_VARIATIONS = 64  # like a batch job's candidates, bounded
STEPS_WITHOUT_ANY = 20  # steps at strength 1 for an image made with none (the prior start's)


@dataclass
class VaryResult:
    folder: Path
    images: list[Path]
    settings: list[Settings]
    seconds: float


def variation_settings(source: Settings, image: Path, strength: float, seed: int) -> Settings:
    """The settings of one variation of `image` (made with `source`): see the module's docstring."""
    if not 0 <= strength <= 1 or not math.isfinite(strength):
        raise PixgenError(f"--strength must be between 0 and 1, got {strength}")
    if strength == 0:
        return source
    if prior_start_on(source) and source.vary_strength == 0:
        return replace(source, vary_strength=strength, vary_seed=seed)
    steps = source.iterations or STEPS_WITHOUT_ANY
    return replace(
        source,
        init_image=str(Path(image).resolve()),
        vary_strength=strength,
        vary_seed=seed,
        iterations=max(1, math.ceil(strength * steps)),
    )


def vary(
    image: str | Path,
    strength: float = 0.5,
    count: int = 4,
    first_seed: int = 1,
    output_dir: str | Path | None = None,
    models=None,
    hooks: Hooks | None = None,
) -> VaryResult:
    """`count` variations of a pixgen PNG (vary seeds first_seed, first_seed+1, ...) in one new
    folder, variation-1, variation-2, ... (each a run folder), the models loaded once."""
    import time

    from pixgen.api import generate, prepare, settings_from_png
    from pixgen.outputs.writer import make_run_dir, slugify
    from pixgen.settings import validate

    t0 = time.perf_counter()
    if not 1 <= count <= MAX_VARIATIONS:
        raise PixgenError(f"-n must be between 1 and {MAX_VARIATIONS}, got {count}")
    source = settings_from_png(Path(image), output_dir=str(output_dir) if output_dir else None)
    settings = [variation_settings(source, Path(image), strength, first_seed + i) for i in range(count)]
    for s in settings:
        validate(s)
    folder = make_run_dir(source.output_dir, f"vary {slugify(source.prompt, 40)}")
    models = models or prepare(settings[0], hooks=hooks).models
    images = []
    for i, s in enumerate(settings, 1):
        images.append(generate(s, models=models, run_dir=folder / f"variation-{i}", hooks=hooks).image)
    return VaryResult(folder, images, settings, time.perf_counter() - t0)
