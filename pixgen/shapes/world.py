"""A deterministic generator of 64x64 images: one flat shape in one colour on a plain
background of another colour, with captions. Some combinations are held out of all training."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 230),
    "yellow": (245, 225, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {background} background with a {colour} {shape}",
    "{colour} {shape}",
    "a {colour} {shape}",
    "a {colour} {shape} in front of {background}",
)
SIZE_RANGE = (18, 41)


@dataclass(frozen=True)
class Combo:
    shape: str
    colour: str
    background: str

    def caption(self, template: int = 0) -> str:
        return TEMPLATES[template].format(shape=self.shape, colour=self.colour, background=self.background)


ALL_COMBOS = tuple(Combo(s, c, b) for s, c, b in itertools.product(SHAPES, COLOURS, COLOURS) if c != b)
HELD_OUT = (  # never seen by any trained model; the adherence benchmark uses them
    Combo("circle", "red", "blue"),
    Combo("square", "green", "yellow"),
    Combo("triangle", "blue", "white"),
    Combo("circle", "yellow", "black"),
    Combo("square", "white", "red"),
    Combo("triangle", "black", "green"),
    Combo("circle", "green", "white"),
    Combo("square", "blue", "black"),
    Combo("triangle", "red", "yellow"),
    Combo("circle", "white", "green"),
)
TRAIN_COMBOS = tuple(c for c in ALL_COMBOS if c not in HELD_OUT)


def shape_mask(shape: str, cx: float, cy: float, side: float, size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at (cx, cy) with bounding side `side`."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    r = side / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    if shape == "triangle":  # apex up, base at the bottom of the box
        top = cy - r
        return (y >= top) & (y <= cy + r) & (np.abs(x - cx) <= (y - top) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def render(combo: Combo, cx: float, cy: float, side: float, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of `combo`."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = COLOURS[combo.background]
    img[shape_mask(combo.shape, cx, cy, side, size)] = COLOURS[combo.colour]
    return img


def sample(rng: np.random.Generator, combo: Combo, size: int = SIZE) -> np.ndarray:
    """`combo` at a random size and position, fully inside the image."""
    side = rng.uniform(*SIZE_RANGE)
    cx, cy = rng.uniform(side / 2, size - side / 2, size=2)
    return render(combo, cx, cy, side, size)


def batch(rng: np.random.Generator, n: int, combos=TRAIN_COMBOS, unique: bool = False):
    """n images (n, size, size, 3) uint8, their combos, and a random caption for each."""
    idx = rng.choice(len(combos), size=n, replace=not unique or n > len(combos))
    chosen = [combos[i] for i in idx]
    images = np.stack([sample(rng, c) for c in chosen])
    captions = [c.caption(int(rng.integers(len(TEMPLATES)))) for c in chosen]
    return images, chosen, captions
