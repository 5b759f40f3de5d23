"""Starts for region prompts (``"a red circle @left | a blue square @right"``): each region's
subject is drawn on its own, for its own words, and placed inside its box on one canvas, which
the run's drawer then fits (for the VQGAN: encodes).

A model that draws one subject well cannot be asked for two at once: the prior draws one
picture per caption, and the composed start one subject per picture. So each region is asked
alone (its prompts, and the negatives that apply everywhere), ranked by its own CLIP terms seen
whole, and fitted into its box with the shape it was drawn at (the rest of the box takes the
picture's border colour). A picture on a plain background is first trimmed to its subject
(`trim`), so that a subject keeps the size it was drawn at where its box holds it, rather than
shrinking with its empty margins. Prompts without a region draw the background picture; without
any, the canvas takes the border colour of the largest region's picture.

The drawer's fit of the composition is then refined (`refine`): the shapes VQGAN, trained on
pictures of one subject, encodes two subjects of two colours as a muddy second one, and a few
steps toward the composition's pixels bring its colour back. Encoding blurs what the prior drew,
so a drawer that takes codes is also offered the prior's own codes: each region's sample's code
grid pasted into its box (`paste_codes`), and the run's CLIP terms choose between the two
(`codes_or_fit`). Pasted codes keep each subject's edges as drawn; the decoder draws them in the
whole canvas's context, which can shift a subject's colour where the subjects differ in colour.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil

import torch
import torch.nn.functional as F
from torch import Tensor

from pixgen.loop.ops import codes_to_latent, nearest_codes
from pixgen.loop.prompts import Prompt
from pixgen.phases import Hooks, Phase
from pixgen.prior.start import codes_drawer, draw_and_rank, native_drawer, picture, prior_name
from pixgen.regions import Box, in_order, pixel_box
from pixgen.starts.candidates import score_starts
from pixgen.starts.composed import clip_scores, colour_grid, colour_pairs, compose


def phase_regions(prompts: tuple[Prompt, ...]) -> list[Box | None]:
    """The distinct regions of a phrase's positive prompts, None (the whole image) first when a
    positive prompt has no region; empty when none has a region."""
    regions = {p.region for p in prompts if p.weight > 0}
    if regions <= {None}:
        return []
    return in_order(regions)


def region_terms(terms: list, phase: int, region: Box | None) -> list:
    """The CLIP terms aimed at one region of story phase `phase` alone, seen whole: its own
    prompts and the negatives of the whole image (for None: every target without a region)."""
    out = []
    for t in terms:
        targets = t.for_phase(phase).targets_at(1)
        regions = targets.regions or (None,) * len(targets)
        keep = [
            i for i, r in enumerate(regions) if r == region or (r is None and float(targets.weights[i]) < 0)
        ]  # fmt: skip
        out.append(replace(t, targets=targets.select(keep)))
    return out


def border_colour(image: Tensor) -> Tensor:
    """(3,) the median colour of the outermost pixels of `image` (1, 3, H, W)."""
    edge = torch.cat([image[0, :, 0], image[0, :, -1], image[0, :, :, 0], image[0, :, :, -1]], dim=1)
    return edge.median(dim=1).values


FIT_STEPS = 20  # steps that refine the drawer's fit of the composition (`refine`)
FIT_LR = 0.1
TRIM_TOLERANCE = 0.12  # a pixel this far (in any channel, of 1) from the border colour is content
TRIM_MARGIN = 0.06  # of the picture's shorter side, kept around the content


def trim(image: Tensor) -> Tensor:
    """`image` (1, 3, H, W) cut to the box around the pixels that differ from its border colour,
    with a small margin: a subject on a plain background without the empty background around
    it. A picture without a plain border (a photograph) is returned whole."""
    h, w = image.shape[-2:]
    content = (image[0] - border_colour(image)[:, None, None]).abs().amax(0) > TRIM_TOLERANCE
    if not content.any():
        return image
    ys, xs = content.nonzero(as_tuple=True)
    m = max(1, round(TRIM_MARGIN * min(h, w)))
    y0, y1 = max(0, int(ys.min()) - m), min(h, int(ys.max()) + 1 + m)
    x0, x1 = max(0, int(xs.min()) - m), min(w, int(xs.max()) + 1 + m)
    return image[..., y0:y1, x0:x1]


def letterbox(image: Tensor, width: int, height: int, most: float | None = None) -> Tensor:
    """`image` (1, 3, h, w) scaled to fit inside width x height with its shape kept (at most by
    `most`), centred, the rest filled with its border colour: (1, 3, height, width)."""
    h, w = image.shape[-2:]
    scale = min(width / w, height / h, most if most is not None else float("inf"))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    fitted = F.interpolate(image.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    out = border_colour(image).float().view(1, 3, 1, 1).expand(1, 3, height, width).clone()
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    out[..., top : top + size[0], left : left + size[1]] = fitted.clamp(0, 1)
    return out


def place(canvas: Tensor, pictures: list[tuple[Box, Tensor]]) -> Tensor:
    """`canvas` (1, 3, H, W) with each picture trimmed to its subject and letterboxed into its
    box, in order (a later one covers an earlier one where boxes overlap). A subject is not
    enlarged beyond the scale at which its whole picture would fill its box's shorter side, nor
    below the size it was drawn at."""
    out = canvas.clone()
    height, width = out.shape[-2:]
    for box, image in pictures:
        x0, y0, x1, y1 = pixel_box(box, width, height)
        most = max(1.0, min(x1 - x0, y1 - y0) / min(image.shape[-2:]))
        out[..., y0:y1, x0:x1] = letterbox(trim(image.to(out)), x1 - x0, y1 - y0, most)
    return out


def canvas_for(pictures: list[tuple[Box, Tensor]], background: Tensor | None, width: int, height: int) -> Tensor:
    """The background picture, else a plain canvas in the border colour of the largest region's."""
    if background is not None:
        return background
    largest = max(pictures, key=lambda item: (item[0][2] - item[0][0]) * (item[0][3] - item[0][1]))[1]
    return border_colour(largest).view(1, 3, 1, 1).expand(1, 3, height, width).clone()


def refine(drawer, z: Tensor, image: Tensor, hooks: Hooks, steps: int = FIT_STEPS, lr: float = FIT_LR) -> Tensor:
    """`z` after `steps` steps of Adam toward the drawer drawing `image` (mean absolute pixel
    error), each a safe point of `hooks`: a fit that the drawer's one-shot `fit` gets close to."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            hooks.checkpoint()
            opt.zero_grad(set_to_none=True)
            (drawer.render(z) - image.to(z.device)).abs().mean().backward()
            opt.step()
            drawer.clamp_(z)
    return z.detach()


def paste_codes(codes: Tensor, grids: list[tuple[Box, Tensor]], factor: int) -> Tensor | None:
    """The canvas's code grid `codes` (rows, columns) with each region's code grid (h, w) pasted
    at the centre of the whole codes inside its box, in order (a later one covers an earlier one),
    for a picture `factor` pixels per code; None when a box does not hold its grid."""
    out = codes.clone()
    rows, columns = out.shape
    for box, grid in grids:
        x0, y0, x1, y1 = pixel_box(box, columns * factor, rows * factor)
        x0, y0, x1, y1 = ceil(x0 / factor), ceil(y0 / factor), x1 // factor, y1 // factor
        h, w = grid.shape
        if y1 - y0 < h or x1 - x0 < w:
            return None
        top, left = y0 + (y1 - y0 - h) // 2, x0 + (x1 - x0 - w) // 2
        out[top : top + h, left : left + w] = grid
    return out


@torch.no_grad()
def codes_or_fit(drawer, terms: list, generator: torch.Generator, fitted: Tensor, encoded: Tensor, grids, **score):
    """The start of a composition and how it was made: the drawer's refined fit of the composed
    picture (`fitted`, "fit"), or, for a drawer that takes codes, the composed picture's encoding
    (`encoded`) snapped to the codebook with each region's sample's codes pasted into its box
    (`paste_codes`, "codes"), whichever the CLIP terms and `score`'s regularisers (score_starts)
    score better; the fit where the codes do not fit their boxes."""
    if not drawer.takes_codes or not grids:
        return fitted, "fit"
    codebook = drawer.decoder.codebook
    pasted = paste_codes(nearest_codes(encoded, codebook)[0], grids, drawer.factor)
    if pasted is None:
        return fitted, "fit"
    codes = codes_to_latent(pasted[None], codebook).to(fitted.dtype)
    losses = score_starts(drawer, terms, [fitted, codes], generator, **score)
    return (fitted, "fit") if losses[0] <= losses[1] else (codes, "codes")


@torch.no_grad()
def prior_regions(run, terms: list, generator: torch.Generator, hooks: Hooks, phase: int = 0):
    """The prior start of a phrase with regions: the picture (1, 3, H, W) in [0, 1], what
    run.json records, and each boxed region's sample as a code grid [(box, (h, w))]. Each
    region's samples are drawn from its own prompts at the prior's own size and ranked by its own
    terms; the `prior_rank`th best is placed in the box."""
    s, name = run.settings, prior_name(run.settings)
    prompts = run.plan.phases[phase]
    pictures, records, grids, background = [], [], [], None
    for region in phase_regions(prompts):
        own = tuple(p for p in prompts if p.region == region and p.weight > 0)
        hooks.enter(Phase.PRIOR_REGION, f"drawing {' | '.join(p.text for p in own)!r} for its region…")
        ranker = native_drawer(run) if region is not None else codes_drawer(run)
        # by loss alone: ranking a subject with a speck last cost two-object scenes 13 right and
        # gained 2 of 120, paired (BENCHMARKS.md, issue 29), where the whole picture's start lost none
        terms_here = region_terms(terms, phase, region)
        ranked = draw_and_rank(run, ranker, terms_here, generator, hooks, phase, own, speck_free=False)
        best = ranked.order[s.prior_rank - 1]
        z = ranked.starts[best]
        size = (s.width, s.height) if region is None else (ranker.size[1], ranker.size[0])
        image = picture(ranker, z, *size)
        records.append(dict(ranked.record(name, s.prior_rank), region=list(region) if region else None))
        if region is None:
            background = image
        else:
            pictures.append((region, image))
            grids.append((region, ranked.starts.codes[best]))
    canvas = place(canvas_for(pictures, background, s.width, s.height), pictures)
    return canvas.to(run.device), {"prior": name, "regions": records}, grids


@torch.no_grad()
def composed_regions(run, terms: list, hooks: Hooks, phase: int = 0) -> Tensor:
    """The composed start of a phrase with regions (pixgen.starts.composed, per region): each
    region's best (background, subject) colour pair and silhouette, chosen in pixel space by its
    own terms, drawn at its box's size inside its box; prompts without a region choose the
    canvas's colour. Returns the picture (1, 3, H, W) in [0, 1] for the drawer to fit."""
    s = run.settings
    grid, pictures, canvas = colour_grid(), [], None
    for region in phase_regions(run.plan.phases[phase]):
        own = region_terms(terms, phase, region)
        hooks.enter(Phase.COMPOSING_COLOURS, "composing the start: colours of a region…")
        if region is None:
            plain = clip_scores(own, grid[:, :, None, None].expand(-1, 3, 16, 16))
            canvas = grid[int(plain.argmax())].view(1, 3, 1, 1).expand(1, 3, s.height, s.width).clone()
            continue
        x0, y0, x1, y1 = pixel_box(region, s.width, s.height)
        (bg, fg), *_ = colour_pairs(own, y1 - y0, x1 - x0, k=1)
        shapes = torch.stack([compose(bg, fg, y1 - y0, x1 - x0, shape) for shape in s.init_silhouettes])
        best = int(clip_scores(own, shapes).argmax()) if len(shapes) > 1 else 0
        pictures.append((region, shapes[best][None]))
    canvas = canvas if canvas is not None else canvas_for(pictures, None, s.width, s.height)
    return place(canvas, pictures).to(run.device)
