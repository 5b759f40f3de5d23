"""Scenes of several shapes, asked region by region, and an exact pixel judge of them (no learned
model): the composition benchmark's tasks, named as GenEval names them.

A scene is a list of `Asked` (a world combination and the box it was asked in, in fractions of
the image). The judge reads each box as the single-object judge reads an image (background: the
nearest world colour of most of the box's border; subject: the most common other colour, its
largest blob, its shape by how much of its bounding box it fills), and the whole image for what
spills, where things are and how many there are.

- two objects: every box holds its subject in its colour and shape on its background, and no
  subject's colour spills into another's box;
- position: each subject's largest blob (searched in the whole image) of its colour has its
  centre inside its own box, and its shape;
- counting: exactly as many blobs of the subject's colour as boxes, each of its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixgen.regions import Box, pixel_box
from pixgen.shapes.judge import _NAMES, MIN_BLOB, classify_shape, components, palette_labels
from pixgen.shapes.world import Combo

SPILL_SHARE = 0.02  # of a box's area: more of another subject's colour than this is a spill


@dataclass(frozen=True)
class Asked:
    combo: Combo
    box: Box


def read_box(labels: np.ndarray, box: Box) -> Combo:
    """(shape, colour, background) of the part of a labelled image (palette_labels) in `box`."""
    x0, y0, x1, y1 = pixel_box(box, labels.shape[1], labels.shape[0])
    part = labels[y0:y1, x0:x1]
    border = np.concatenate([part[0], part[-1], part[:, 0], part[:, -1]])
    bg = np.bincount(border, minlength=len(_NAMES)).argmax()
    counts = np.bincount(part.ravel(), minlength=len(_NAMES))
    counts[bg] = 0
    fg = counts.argmax()
    if not counts[fg]:
        return Combo("none", "none", _NAMES[bg])
    blob = max(components(part == fg), key=len)
    mask = np.zeros(part.shape, bool)
    mask[tuple(np.array(blob).T)] = True
    return Combo(classify_shape(mask), _NAMES[fg], _NAMES[bg])


def blobs(labels: np.ndarray, colour: str) -> list[np.ndarray]:
    """The 4-connected blobs of at least MIN_BLOB pixels of a world colour, as boolean masks."""
    found = []
    for blob in components(labels == _NAMES.index(colour)):
        if len(blob) >= MIN_BLOB:
            mask = np.zeros(labels.shape, bool)
            mask[tuple(np.array(blob).T)] = True
            found.append(mask)
    return found


def spills(labels: np.ndarray, scene: list[Asked]) -> bool:
    """Whether some subject's colour covers more than SPILL_SHARE of another box (where that box
    asked for neither it as subject nor as background), outside its own box."""
    h, w = labels.shape
    for a in scene:
        mine = np.zeros((h, w), bool)
        ax0, ay0, ax1, ay1 = pixel_box(a.box, w, h)
        mine[ay0:ay1, ax0:ax1] = True
        for b in scene:
            if b is a or a.combo.colour in (b.combo.colour, b.combo.background):
                continue
            x0, y0, x1, y1 = pixel_box(b.box, w, h)
            part = (labels[y0:y1, x0:x1] == _NAMES.index(a.combo.colour)) & ~mine[y0:y1, x0:x1]
            if part.sum() > SPILL_SHARE * part.size:
                return True
    return False


def two_objects(image: np.ndarray, scene: list[Asked]) -> dict[str, bool]:
    labels = palette_labels(image[..., :3])
    pairs = [(read_box(labels, a.box), a.combo) for a in scene]
    marks = {
        "colours": all(r.colour == c.colour for r, c in pairs),
        "objects": all((r.colour, r.shape) == (c.colour, c.shape) for r, c in pairs),
        "backgrounds": all(r.background == c.background for r, c in pairs),
        "spill": spills(labels, scene),
    }
    marks["all"] = marks["objects"] and marks["backgrounds"] and not marks["spill"]
    return marks


def position(image: np.ndarray, scene: list[Asked]) -> dict[str, bool]:
    labels = palette_labels(image[..., :3])
    h, w = labels.shape
    placed = shaped = True
    for a in scene:
        found = blobs(labels, a.combo.colour)
        if not found:
            placed = shaped = False
            continue
        largest = max(found, key=lambda m: m.sum())
        ys, xs = np.nonzero(largest)
        x0, y0, x1, y1 = pixel_box(a.box, w, h)
        placed &= bool(x0 <= xs.mean() + 0.5 <= x1 and y0 <= ys.mean() + 0.5 <= y1)
        shaped &= classify_shape(largest) == a.combo.shape
    return {"placed": placed, "shapes": shaped, "all": placed and shaped}


def counting(image: np.ndarray, scene: list[Asked]) -> dict[str, bool]:
    labels = palette_labels(image[..., :3])
    found = blobs(labels, scene[0].combo.colour)
    count = len(found) == len(scene)
    shaped = all(classify_shape(m) == scene[0].combo.shape for m in found)
    return {"count": count, "shapes": shaped, "all": count and shaped}


TASKS = {"two_objects": two_objects, "position": position, "counting": counting}


def render_scene(scene: list[Asked], size: int = 64) -> np.ndarray:
    """The scene drawn exactly (each subject centred in its box at 60% of the box's shorter side,
    on the first subject's background, each box on its own): what the judge must read right."""
    from pixgen.shapes.world import COLOURS, shape_mask

    image = np.empty((size, size, 3), np.uint8)
    image[:] = COLOURS[scene[0].combo.background]
    for a in scene:
        x0, y0, x1, y1 = pixel_box(a.box, size, size)
        image[y0:y1, x0:x1] = COLOURS[a.combo.background]
        side = 0.6 * min(x1 - x0, y1 - y0)
        mask = shape_mask(a.combo.shape, (x0 + x1) / 2, (y0 + y1) / 2, side, size)
        image[mask] = COLOURS[a.combo.colour]
    return image
