"""A run's course from its first step to its planned last: the Loop, and the events that
restart it at fixed steps. With the progressive schedule the latent starts at half size and is
upsampled (nearest: the same codes) after `coarse_until` steps; with the zoom video mode the
image is zoomed and re-encoded every `zoom_every` steps, but not after the last; in a story with
keyframes (pixgen.loop.story) the latent travels to each phrase's keyframe. Steps always carry
the image at full size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from torch import Tensor

from pixgen.loop.optimise import Loop, Objective, Step
from pixgen.loop.story import Story


class Course:
    def __init__(
        self,
        loop: Loop,
        iterations: int,
        full_shape: tuple[int, ...],
        coarse_until: int = 0,
        zoom: Callable[[Tensor], Tensor] | None = None,
        zoom_every: int = 0,
        story: Story | None = None,
    ):
        self.loop, self.iterations, self.full_shape = loop, iterations, tuple(full_shape)
        self.coarse_until, self.zoom, self.zoom_every = coarse_until, zoom, zoom_every
        self.story = story

    @property
    def objective(self) -> Objective:
        return self.loop.loss

    @property
    def coarse(self) -> bool:
        """Whether the latent is at half size (the first part of the progressive schedule)."""
        return tuple(self.loop.z.shape) != self.full_shape

    @property
    def image_size(self) -> tuple[int, int]:
        return self.loop.drawer.image_size(self.full_shape)

    def run(self, until: int) -> Iterator[Step]:
        for step in self.loop.run(until):
            if step.ok:
                self._restarts(step.i)
            image = step.image
            if image.shape[-2:] != self.image_size:
                image = torch.nn.functional.interpolate(image, size=self.image_size, mode="bilinear").clamp(0, 1)
            yield replace(step, image=image)

    def _restarts(self, i: int) -> None:
        """The events due after good step `i`."""
        if self.coarse and i >= self.coarse_until:
            z = torch.nn.functional.interpolate(self.loop.z.detach(), size=self.full_shape[-2:], mode="nearest")
            self.loop.restart(z)
        if self.zoom is not None and self.zoom_every and i % self.zoom_every == 0 and i < self.iterations:
            self.loop.restart(self.zoom(self.loop.z.detach()))
        pull = self.story.pull(i) if self.story is not None else None
        if pull is not None:
            keyframe, share = pull
            if keyframe.shape != self.loop.z.shape:  # the coarse part of the progressive schedule
                keyframe = self.loop.drawer.halve(keyframe)
            self.loop.pull(keyframe, share)

    # the rest is read from the loop (z, step, good, generator, result(), state_dict()...) and,
    # failing that, from its objective (terms, clip_dtype)

    def loss(self, image: Tensor, step: int) -> Tensor:
        """The objective at the current latent."""
        return self.objective(image, self.loop.z, step)

    @property
    def extra_loss(self):
        return self.objective.extra

    def __getattr__(self, name: str):
        if name == "loop":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        try:
            return getattr(self.loop, name)
        except AttributeError:
            return getattr(self.loop.loss, name)
