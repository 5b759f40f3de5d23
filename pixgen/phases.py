"""The phases of a run and the hooks a caller gives it. No torch, no other pixgen module.

A phase is a value (`Phase`), never a message: a caller that wants to stop a run somewhere names
the phase. Entering a phase is two things, kept apart: the *report* (`Hooks.report`, the text shown
to people, worded as the run likes) and the *checkpoint* (`Hooks.checkpoint`, where a stop asked by
`should_stop()` is honoured). Like a k-diffusion sampler's `callback`, the hooks are one object
that every stage takes, instead of a tail of loose parameters."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from pixgen.errors import Interrupted


class Phase(enum.Enum):
    """Where a run is. Before the first step, a stop at a checkpoint keeps nothing (Interrupted(None));
    while writing the outputs, it skips the renders not yet begun."""

    LOADING_VQGAN = "loading VQGAN"
    LOADING_CLIP = "loading CLIP"
    LOADING_PRIOR = "loading the prior"
    LOADING_ENCODER = "loading the VQGAN encoder"
    NO_VQGAN = "no VQGAN needed"
    MEMORY = "estimating the memory"
    PROMPTS = "encoding prompts"
    ENCODING_START = "encoding the start"
    DRAWING_STARTS = "drawing starts"
    SCORING_STARTS = "scoring the starts"
    COMPOSING = "composing the start"
    COMPOSING_COLOURS = "composing the start: colours"
    COMPOSING_THROUGH = "composing the start: through the drawer"
    COMPOSING_SCORING = "composing the start: scoring"
    COMPOSING_SILHOUETTES = "composing the start: silhouettes"
    PRIOR_CLASS = "choosing the class"
    PRIOR_DRAWING = "drawing samples from the prior"
    PRIOR_BATCH = "drawing a batch of samples"
    PRIOR_RANKING = "ranking the samples"
    PRIOR_REGION = "drawing a region's subject"
    RESTYLE_FRAMES = "restyling a frame"
    WRITING_SAMPLES = "writing the samples"
    WRITING_GIF = "writing progress.gif"
    WRITING_VIDEO = "writing progress.mp4"
    WRITING_SMOOTH_VIDEO = "writing progress-smooth.mp4"


@dataclass
class Hooks:
    """What a caller hears of a run and how it stops it.

    `on_phase(phase, text)` hears each phase as it begins, `text` worded for people (a status
    line); `on_step(step, total)` hears every step; `should_stop()` is asked at every checkpoint
    and after every step; `offline`: never touch the network (a model that is not cached is an
    error at once)."""

    on_phase: Callable[[Phase, str], None] | None = None
    on_step: Callable | None = None
    should_stop: Callable[[], bool] | None = None
    offline: bool = False

    def report(self, phase: Phase, text: str | None = None) -> None:
        """Say that `phase` begins (the text shown to people; by default the phase's own)."""
        if self.on_phase:
            self.on_phase(phase, text or phase.value + "…")

    def stop_requested(self) -> bool:
        return bool(self.should_stop and self.should_stop())

    def checkpoint(self) -> None:
        """A safe point before the first step: a stop asked for ends the run here, keeping nothing."""
        if self.stop_requested():
            raise Interrupted(None)

    def enter(self, phase: Phase, text: str | None = None) -> None:
        """Report `phase`, then honour a stop there (before the first step)."""
        self.report(phase, text)
        self.checkpoint()

    def stopping(self, phase: Phase, text: str | None = None) -> bool:
        """Report `phase` and say whether to stop there (after the steps: the caller skips what is left)."""
        self.report(phase, text)
        return self.stop_requested()
