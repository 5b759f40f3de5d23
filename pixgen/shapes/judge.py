"""An independent judge for the shapes world: exact pixel analysis, no learned model.

Background colour: the palette colour nearest to most border pixels. Shape colour: the most
common other palette colour. Shape: the largest connected blob of that colour, read by how much
of its bounding box it fills (square about 1.0, circle about 0.79, triangle about 0.5).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from pixgen.shapes.world import COLOURS, Combo

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], np.float32)
MIN_BLOB = 40  # pixels: a smaller blob is no shape


def palette_labels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) index of the nearest palette colour."""
    d = ((image[..., None, :].astype(np.float32) - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


_FOUR = ((1, 0), (-1, 0), (0, 1), (0, -1))
_EIGHT = _FOUR + ((1, 1), (1, -1), (-1, 1), (-1, -1))


def components(mask: np.ndarray, steps=_FOUR) -> list[list[tuple[int, int]]]:
    """The connected components of a boolean mask (4-connected by default; `_EIGHT` for
    8-connected), each as its list of (y, x) pixels."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    found = []
    for sy, sx in zip(*np.nonzero(mask), strict=True):
        if seen[sy, sx]:
            continue
        blob, queue = [], deque([(sy, sx)])
        seen[sy, sx] = True
        while queue:
            y, x = queue.popleft()
            blob.append((y, x))
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(blob)
    return found


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    best = max(components(mask), key=len, default=[])
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


def classify_shape(blob: np.ndarray) -> str:
    area = int(blob.sum())
    if area < MIN_BLOB:
        return "none"
    ys, xs = np.nonzero(blob)
    fill = area / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    if fill > 0.9:
        return "square"
    return "circle" if fill > 0.64 else "triangle"


def judge(image: np.ndarray) -> Combo:
    """Read (shape, colour, background) from an RGB uint8 image of any size (resized to 64)."""
    if image.shape[:2] != (64, 64):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).convert("RGB").resize((64, 64), Image.BILINEAR))
    labels = palette_labels(image[..., :3])
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = np.bincount(border, minlength=len(_NAMES)).argmax()
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    counts[bg] = 0
    fg = counts.argmax()
    shape = classify_shape(largest_blob(labels == fg)) if counts[fg] else "none"
    return Combo(shape, _NAMES[fg] if counts[fg] else "none", _NAMES[bg])


def subject_box(image: np.ndarray) -> tuple[float, float, float] | None:
    """Where the subject sits, as the judge sees it: the centre (x, y) of the largest blob of the
    foreground colour and the square root of its area, in pixels of a 64x64 image; None when
    there is no subject."""
    if image.shape[:2] != (64, 64):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).convert("RGB").resize((64, 64), Image.BILINEAR))
    got = judge(image)
    if got.colour == "none":
        return None
    blob = largest_blob(palette_labels(image[..., :3]) == _NAMES.index(got.colour))
    ys, xs = np.nonzero(blob)
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5), float(np.sqrt(blob.sum()))


OFF_PALETTE_DISTANCE = 60.0  # RGB distance (of 441) beyond which a pixel is no palette colour
OFF_PALETTE_SHARE = 0.05  # an image is off-palette when more of its flat pixels than this are


def off_palette_share(image: np.ndarray) -> float:
    """Share of the image's flat pixels (all four neighbours read as the same palette colour,
    so edges, where soft transitions are expected, do not count) that are further than
    OFF_PALETTE_DISTANCE from every palette colour: muddy mixtures such as orange or cyan."""
    image = image[..., :3].astype(np.float32)
    labels = palette_labels(image)
    dist = np.sqrt(((image - _PALETTE[labels]) ** 2).sum(-1))
    inner = labels[1:-1, 1:-1]
    flat = (
        (inner == labels[:-2, 1:-1])
        & (inner == labels[2:, 1:-1])
        & (inner == labels[1:-1, :-2])
        & (inner == labels[1:-1, 2:])
    )
    if not flat.any():
        return 1.0
    return float((dist[1:-1, 1:-1][flat] > OFF_PALETTE_DISTANCE).mean())


def off_palette(image: np.ndarray) -> bool:
    """Whether the shape or the background shows a colour outside the world's six."""
    return off_palette_share(image) > OFF_PALETTE_SHARE


SPECK_PIXELS = (2, 24)  # a speck: this many pixels at least and at most (a larger group is a region)


def _segment_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each colour in x (..., 3) to the segment of colours from a to b."""
    ab = b - a
    t = np.clip(((x - a) @ ab) / max(float(ab @ ab), 1e-6), 0, 1)
    return np.linalg.norm(x - (a + t[..., None] * ab), axis=-1)


def stray_pixels(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose colour is further than OFF_PALETTE_DISTANCE from every world
    colour and from every blend of the image's background and subject colours (the soft edge
    between the two, which a decoder is expected to draw)."""
    x = image[..., :3].astype(np.float32)
    got = judge(image)
    far = np.sqrt(((x[..., None, :] - _PALETTE) ** 2).sum(-1)).min(-1) > OFF_PALETTE_DISTANCE
    if got.colour == "none":
        return far
    bg, fg = _PALETTE[_NAMES.index(got.background)], _PALETTE[_NAMES.index(got.colour)]
    return far & (_segment_distance(x, bg, fg) > OFF_PALETTE_DISTANCE)


def specks(image: np.ndarray) -> int:
    """How many specks an image (64x64) carries: 8-connected groups of SPECK_PIXELS stray
    pixels (`stray_pixels`), the few multi-coloured pixels a person sees at once and the
    off-palette share (a share of the image) misses."""
    lo, hi = SPECK_PIXELS
    return sum(lo <= len(c) <= hi for c in components(stray_pixels(image), _EIGHT))
