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


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list = []
    for sy, sx in zip(*np.nonzero(mask), strict=True):
        if seen[sy, sx]:
            continue
        blob, queue = [], deque([(sy, sx)])
        seen[sy, sx] = True
        while queue:
            y, x = queue.popleft()
            blob.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(blob) > len(best):
            best = blob
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
