"""All prompt syntax, parsed once into a `PromptPlan`: ``"text:weight:stop | other text"``,
regions ``"a red house @left | a lake @bottom:0.5"``, story-mode phases ``"a ^ b"``, negatives,
image prompts ``PATH:w``, noise prompts ``SEED:w`` and the CLIP ensemble ``SPEC:w``.

Weight and stop are read from the right and only when they are numbers, so text with colons
(URLs, Windows paths, "4:3") stays text. A region is read the same way: ``@name`` or
``@x0,y0,x1,y1`` as the text's last word, and only when it is a known region or a box, so an
e-mail address, "@home" or "meet @ noon" stays text. This module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pixgen.errors import PixgenError
from pixgen.regions import Box, is_number, split_region
from pixgen.settings import DEFAULT_CLIP, Settings

MAX_PHASES = 32  # story-mode phrases ("a ^ b ^ ...")
MAX_PROMPTS = 64  # weighted parts of one phrase ("a | b | ..."); each is encoded before the first step
MAX_REGIONS = 16  # distinct regions of one phrase: each takes a share of a step's cutouts


@dataclass(frozen=True)
class Prompt:
    """One target: CLIP pulls the image toward `text` with `weight` (negative pushes away).

    Once the spherical distance to the target falls below `stop`, that prompt stops
    contributing gradient.
    """

    text: str
    weight: float = 1.0
    stop: float = -math.inf
    region: Box | None = None  # where it applies (fractions of the image); None: the whole image

    def to_dict(self) -> dict:
        out = {"text": self.text, "weight": self.weight, "stop": self.stop}
        return out if self.region is None else dict(out, region=list(self.region))


def parse_prompt(spec: str) -> Prompt:
    """Parse one ``text[ @region][:weight[:stop]]`` item (regions: `split_region`).

    Trailing numeric fields are taken as weight then stop, at most two. A numeric field is
    left in the text when the text before it would end in a digit ("a 4:3 photo", "16:9"),
    so ratios and times survive; write "a photo in 4:3 :2" to weight such text. Three
    trailing numeric fields ("cat:1:2:3") are an error.
    """
    text, region, fields = split_region(spec)
    if region is not None:  # the region ends the text: what follows it is weight and stop
        return _weighted(text, [float(f) for f in fields], spec, region)
    parts = spec.split(":")
    n = 0
    while n < len(parts) - 1 and is_number(parts[len(parts) - 1 - n]):
        n += 1
    if n > 2:
        raise PixgenError(f"prompt {spec.strip()!r} has {n} ':number' fields; expected text[:weight[:stop]]")
    while n > 0:
        text = ":".join(parts[: len(parts) - n])
        if not text.strip():
            raise PixgenError(f"empty prompt in {spec!r}")
        if not text[-1].isdigit():
            break
        n -= 1  # "4:3" or "at 10:30": the colon belongs to the text
    text = ":".join(parts[: len(parts) - n]).strip()
    return _weighted(text, [float(p) for p in parts[len(parts) - n :]], spec)


def _weighted(text: str, numbers: list[float], spec: str, region: Box | None = None) -> Prompt:
    if not text:
        raise PixgenError(f"empty prompt in {spec!r}")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else -math.inf
    if not math.isfinite(weight) or weight == 0:
        raise PixgenError(f"prompt {text!r}: weight must be a non-zero finite number, got {weight}")
    return Prompt(text, weight, stop, region)


def parse_prompts(spec: str) -> list[Prompt]:
    """Parse ``"a | b:0.5 | c:-1"`` into prompts. An empty item or an empty spec is an error."""
    if spec is None or not spec.strip():
        raise PixgenError('empty prompt: give some text, e.g. pixgen "a red house"')
    if "\x00" in spec:
        raise PixgenError("prompt contains a NUL byte")
    return [parse_prompt(item) for item in spec.split("|")]


def split_weight(item: str, key: str) -> tuple[str, float]:
    """``"path/to.png:0.5"`` -> ("path/to.png", 0.5); no numeric suffix means weight 1."""
    head, sep, tail = str(item).rpartition(":")
    if sep and is_number(tail):
        if not head.strip():
            raise PixgenError(f"setting {key!r}: {item!r} has a weight but nothing to weigh")
        weight = float(tail)
        if weight == 0:
            raise PixgenError(f"setting {key!r}: weight 0 in {item!r} has no effect")
        return head, weight
    if not str(item).strip():
        raise PixgenError(f"setting {key!r}: empty entry")
    return str(item), 1.0


@dataclass(frozen=True)
class PromptPlan:
    """Everything a run steers by, parsed once: the text prompts of each story phase, the
    negatives, image prompts (path, weight), noise prompts (seed, weight) and the CLIP
    ensemble (spec, weight)."""

    phases: tuple[tuple[Prompt, ...], ...]
    negatives: tuple[Prompt, ...] = ()
    images: tuple[tuple[str, float], ...] = ()
    noises: tuple[tuple[int, float], ...] = ()
    clip: tuple[tuple[str, float], ...] = ()

    @property
    def has_regions(self) -> bool:
        """Whether any prompt or negative applies inside a region rather than to the whole image."""
        return any(p.region is not None for phase in self.phases for p in (*phase, *self.negatives))

    @property
    def final(self) -> tuple[Prompt, ...]:
        """The prompts of the last phase: what the finished image is steered toward."""
        return self.phases[-1]

    def record(self) -> list[dict]:
        """The text prompts as recorded in run.json and the PNG; in story mode each names its phase."""
        if len(self.phases) == 1:
            return [p.to_dict() for p in self.phases[0]]
        return [dict(p.to_dict(), phase=k) for k, phase in enumerate(self.phases) for p in phase]


def parse_prompt_spec(spec: str) -> tuple[tuple[Prompt, ...], ...]:
    """``"a | b:0.5 ^ c"`` -> the prompts of each story phase (at most MAX_PHASES phases of
    MAX_PROMPTS prompts each)."""
    parse_prompts(spec)  # the whole text: empty, NUL
    phrases = spec.split("^")
    if len(phrases) > MAX_PHASES:
        raise PixgenError(f"setting 'prompt': at most {MAX_PHASES} story phrases (a ^ b), got {len(phrases)}")
    most = max(phrase.count("|") + 1 for phrase in phrases)
    if most > MAX_PROMPTS:
        raise PixgenError(f"setting 'prompt': at most {MAX_PROMPTS} prompts (a | b) per phrase, got {most}")
    phases = tuple(tuple(parse_prompts(phrase)) for phrase in phrases)
    regions = max(len({p.region for p in phase if p.region is not None}) for phase in phases)
    if regions > MAX_REGIONS:
        why = f"at most {MAX_REGIONS} regions (@left, @x0,y0,x1,y1) per phrase, got {regions}"
        raise PixgenError(f"setting 'prompt': {why}")
    return phases


def negative_prompt(text: str) -> Prompt:
    """A `--negative` text, weight -1, over the whole image or, ending in ``@region``, inside it."""
    if not str(text).strip():
        raise PixgenError("setting 'negative': a negative prompt is empty")
    words, region, numbers = split_region(text)
    if region is None or numbers:
        return Prompt(text, -1.0)
    return Prompt(words, -1.0, region=region)


def clip_specs(items: list[str]) -> tuple[tuple[str, float], ...]:
    """CLIP ensemble entries ``SPEC[:weight]`` -> (spec, weight) pairs, weights positive."""
    if not items or not all(isinstance(c, str) and c.strip() for c in items):
        raise PixgenError(f"setting 'clip': must name at least one CLIP model, e.g. {DEFAULT_CLIP}")
    specs = tuple(split_weight(item, "clip") for item in items)
    for item, (_, w) in zip(items, specs, strict=True):
        if w <= 0:
            raise PixgenError(f"setting 'clip': an ensemble weight must be positive, got {item!r}")
    return specs


def plan_prompts(settings: Settings) -> PromptPlan:
    """Parse every prompt-like setting once; a bad one is a PixgenError naming its setting."""
    negatives = tuple(negative_prompt(t) for t in settings.negative)
    noises = []
    for item in settings.noise_prompts:
        seed, w = split_weight(item, "noise_prompts")
        if not seed.isdigit():
            raise PixgenError(f"setting 'noise_prompts': expected SEED[:weight] with an integer seed, got {item!r}")
        noises.append((int(seed), w))
    return PromptPlan(
        phases=parse_prompt_spec(settings.prompt),
        negatives=negatives,
        images=tuple(split_weight(item, "image_prompts") for item in settings.image_prompts),
        noises=tuple(noises),
        clip=clip_specs(settings.clip),
    )
