"""Story mode's keyframes: each phrase of "a ^ b ^ c" has its own picture (with `--init prior`,
the prior's best sample for that phrase), and the run travels from one to the next through the
latent while the CLIP steps steer.

Phase k (k >= 1) spends its first `TRAVEL` share of steps travelling: after each of those steps
the latent moves part of the way to keyframe k, the share that leaves the rest of the way evenly
to the remaining steps of the travel (1/(t - j + 1) after the j-th of t), so without CLIP the
path is the straight line from where phase k began to its keyframe, and its last step lands on
the keyframe exactly. The rest of the phase the CLIP steps refine that picture. A move depends
on the latent and the step only, so a resumed run moves as an uninterrupted one does."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

TRAVEL = 0.5  # the share of each later phase spent travelling to its keyframe


def phase_spans(phrases: int, every: int, iterations: int) -> list[tuple[int, int]]:
    """The first and last 1-based step of each story phase, as `PromptSchedule.phase` assigns the
    steps (`every` steps each, the last to the end; 0: spread evenly over `iterations`). A phase
    that gets no step spans (first, first - 1)."""
    if every:
        firsts = [k * every + 1 for k in range(phrases)]
    else:
        firsts = [-(-k * iterations // phrases) + 1 for k in range(phrases)]
    lasts = [min(f - 1, iterations) for f in firsts[1:]] + [iterations]
    return [(f, max(last, f - 1)) for f, last in zip(firsts, lasts, strict=True)]


def pull_at(step: int, spans: list[tuple[int, int]], travel: float = TRAVEL) -> tuple[int, float] | None:
    """After good step `step`: (k, w), move the latent the share w of the way to keyframe k; None
    outside the travels."""
    for k, (first, last) in enumerate(spans[1:], 1):
        steps = max(1, math.ceil(travel * (last - first + 1)))
        j = step - first + 1
        if last >= first and 1 <= j <= steps:
            return k, 1 / (steps - j + 1)
    return None


@dataclass
class Story:
    """The keyframes of a story (one latent per phrase; the first is the start) and its phases'
    spans of steps (`phase_spans`)."""

    keyframes: list[Tensor]
    spans: list[tuple[int, int]]
    travel: float = TRAVEL

    def pull(self, step: int) -> tuple[Tensor, float] | None:
        """After good `step`: the keyframe to move toward and the share of the way, or None."""
        due = pull_at(step, self.spans, self.travel)
        return None if due is None else (self.keyframes[due[0]], due[1])
