"""Prompt parsing: ``"text:weight:stop | other text"`` into a list of weighted prompts.

Weight and stop are read from the right and only when they are numbers, so text with colons
(URLs, Windows paths, "4:3") stays text. This module does not import torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pixgen.errors import PixgenError

_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class Prompt:
    """One target: CLIP pulls the image toward `text` with `weight` (negative pushes away).

    Once the spherical distance to the target falls below `stop`, that prompt stops
    contributing gradient.
    """

    text: str
    weight: float = 1.0
    stop: float = -math.inf

    def to_dict(self) -> dict:
        return {"text": self.text, "weight": self.weight, "stop": self.stop}


def _is_number(s: str) -> bool:
    return bool(_NUMBER.match(s))


def parse_prompt(spec: str) -> Prompt:
    """Parse one ``text[:weight[:stop]]`` item.

    Trailing numeric fields are taken as weight then stop, at most two. A numeric field is
    left in the text when the text before it would end in a digit ("a 4:3 photo", "16:9"),
    so ratios and times survive; write "a photo in 4:3 :2" to weight such text. Three
    trailing numeric fields ("cat:1:2:3") are an error.
    """
    parts = spec.split(":")
    n = 0
    while n < len(parts) - 1 and _is_number(parts[len(parts) - 1 - n]):
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
    numbers = [float(p) for p in parts[len(parts) - n :]]
    if not text:
        raise PixgenError(f"empty prompt in {spec!r}")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else -math.inf
    if not math.isfinite(weight) or weight == 0:
        raise PixgenError(f"prompt {text!r}: weight must be a non-zero finite number, got {weight}")
    return Prompt(text, weight, stop)


def parse_prompts(spec: str) -> list[Prompt]:
    """Parse ``"a | b:0.5 | c:-1"`` into prompts. An empty item or an empty spec is an error."""
    if spec is None or not spec.strip():
        raise PixgenError('empty prompt: give some text, e.g. pixgen "a red house"')
    if "\x00" in spec:
        raise PixgenError("prompt contains a NUL byte")
    return [parse_prompt(item) for item in spec.split("|")]
