"""Strokes: cubic Bézier strokes rasterised differentiably in pure torch, and written as SVG.

A stroke is a cubic Bézier (4 control points in pixel units), a width and a colour. It is drawn
through a soft distance field, as "Differentiable Drawing and Sketching" (Mihai & Hare 2021,
arXiv 2103.16194) describes: the curve is sampled into a polyline, each pixel's coverage is a
sigmoid of half the width less the pixel's distance to the polyline, and the strokes are
composited over a paper colour in order. Pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5), as in SVG, so x runs over [0, width] and y over [0, height].

Speed: the canvas is cut into TILE x TILE tiles and each stroke is measured only on the tiles it
can reach; coverage below sigmoid(-CUTOFF) = 3.4e-4 is dropped. Each pixel's nearest segment is
found without autograd, then only that segment's distance is recomputed with it, so the graph
holds one distance per pixel of a reached tile, not one per segment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TILE = 8  # tile side in pixels
CUTOFF = 8.0  # coverage is dropped this many softnesses outside a stroke's edge
CHUNK = 1 << 21  # elements per intermediate in the no-autograd passes (8 MB in fp32)


def bernstein(samples: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The cubic Bernstein basis at `samples` evenly spaced t in [0, 1]: (samples, 4). Its first and
    last rows are exactly (1, 0, 0, 0) and (0, 0, 0, 1), so curves start and end on their end points."""
    t = torch.linspace(0, 1, samples, dtype=dtype, device=device)[:, None]
    s = 1 - t
    return torch.cat([s**3, 3 * s**2 * t, 3 * s * t**2, t**3], dim=1)


def sample_curves(points: Tensor, samples: int) -> Tensor:
    """points (N, 4, 2) control points of N cubic Béziers in pixel units (x, y) -> (N, samples, 2)
    points along each curve, at evenly spaced t from 0 to 1 (both end points included)."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    return torch.einsum("sk,nkd->nsd", bernstein(samples, points.dtype, points.device), points)


def segment_distance2(px: Tensor, py: Tensor, ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
    """Squared distance from points p to segments a-b; all arguments broadcast together."""
    abx, aby = bx - ax, by - ay
    apx, apy = px - ax, py - ay
    t = ((apx * abx + apy * aby) / (abx * abx + aby * aby).clamp_min(1e-12)).clamp(0, 1)
    ex, ey = apx - t * abx, apy - t * aby
    return ex * ex + ey * ey


def _periods(lo: Tensor, hi: Tensor, reach: Tensor, size: int) -> Tensor:
    """Every integer k for which some interval [lo, hi], shifted by k * size and widened by
    `reach`, can meet [0, size]: the periodic copies of the strokes that may show."""
    k_min = math.floor(((-hi - reach) / size).min().item())
    k_max = math.ceil(((size - lo + reach) / size).max().item())
    return torch.arange(k_min, k_max + 1, device=lo.device)


def _into_canvas(points: Tensor, height: int, width: int) -> Tensor:
    """On a periodic canvas: each stroke moved by whole periods so its first point lies on the
    canvas, which keeps the number of copies to consider small. The shift carries no gradient."""
    period = points.new_tensor([width, height])
    return points - (torch.floor(points[:, :1].detach() / period) * period)


def _copies(points: Tensor, reach: Tensor, height: int, width: int, wrap: bool) -> tuple[Tensor, Tensor]:
    """The copies of each stroke that can show: stroke index (V,) and shift in pixels (V, 2).
    Without wrap, each stroke once, unshifted."""
    n = len(points)
    if not wrap or n == 0:
        return torch.arange(n, device=points.device), points.new_zeros(n, 2)
    lo, hi = points.detach().amin(1), points.detach().amax(1)  # (N, 2) bounding boxes of the hulls
    kx, ky = _periods(lo[:, 0], hi[:, 0], reach, width), _periods(lo[:, 1], hi[:, 1], reach, height)
    size = points.new_tensor([width, height])
    shifts = torch.cartesian_prod(kx, ky).to(points.dtype) * size  # (K, 2)
    lo_k, hi_k = lo[:, None] + shifts - reach[:, None, None], hi[:, None] + shifts + reach[:, None, None]
    meets = ((hi_k > 0) & (lo_k < size)).all(-1)  # (N, K)
    stroke, k = meets.nonzero(as_tuple=True)
    return stroke, shifts[k]


def _tile_pixels(height: int, width: int, tile: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel centres of each tile of a grid that covers the canvas: x and y, each (T, tile * tile),
    tiles in row-major order and pixels row-major within a tile."""
    ty, tx = -(-height // tile), -(-width // tile)
    offset = torch.arange(tile, dtype=like.dtype, device=like.device) + 0.5
    y0 = (torch.arange(ty, dtype=like.dtype, device=like.device) * tile)[:, None, None, None]
    x0 = (torch.arange(tx, dtype=like.dtype, device=like.device) * tile)[None, :, None, None]
    y = (y0 + offset[:, None]).expand(ty, tx, tile, tile)
    x = (x0 + offset).expand(ty, tx, tile, tile)
    return x.reshape(ty * tx, tile * tile), y.reshape(ty * tx, tile * tile)


@torch.no_grad()
def _reached_tiles(curves: Tensor, reach: Tensor, px: Tensor, py: Tensor, tile: int) -> tuple[Tensor, Tensor]:
    """Pairs (copy, tile) whose tile has a pixel within `reach` of the copy's polyline, by the
    distance from the tile's centre less its half diagonal. curves (V, S, 2), reach (V,)."""
    cx, cy = px.mean(1), py.mean(1)  # (T,)
    within = (reach + (tile - 1) / math.sqrt(2)).clamp_min(0) ** 2
    per = max(1, CHUNK // (curves.shape[1] * len(cx)))
    copies, tiles = [cx.new_zeros(0, dtype=torch.long)], [cx.new_zeros(0, dtype=torch.long)]
    for v0 in range(0, len(curves), per):
        c = curves[v0 : v0 + per, :, None]  # (v, S, 1, 2)
        d2 = segment_distance2(cx, cy, c[:, :-1, :, 0], c[:, :-1, :, 1], c[:, 1:, :, 0], c[:, 1:, :, 1])
        v, t = (d2.amin(1) <= within[v0 : v0 + per, None]).nonzero(as_tuple=True)
        copies.append(v + v0)
        tiles.append(t)
    return torch.cat(copies), torch.cat(tiles)


@torch.no_grad()
def _nearest_segments(curves: Tensor, copy: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Index of the nearest segment of `curves[copy]` to each pixel: (P, tile * tile), by a
    running minimum over the segments, so no intermediate is larger than (P, tile * tile)."""
    c = curves[copy, :, None]  # (P, S, 1, 2)
    best = torch.full_like(px, math.inf)
    nearest = torch.zeros(px.shape, dtype=torch.long, device=px.device)
    for i in range(curves.shape[1] - 1):
        d2 = segment_distance2(px, py, c[:, i, :, 0], c[:, i, :, 1], c[:, i + 1, :, 0], c[:, i + 1, :, 1])
        nearer = d2 < best
        best = torch.where(nearer, d2, best)
        nearest.masked_fill_(nearer, i)
    return nearest


def layers(stroke: Tensor, tile: Tensor, tiles: int) -> tuple[Tensor, int]:
    """For (stroke, tile) entries, each one's layer on its tile, (E,): its rank among the entries
    on that tile by stroke order. And the number of layers: the most entries on any tile."""
    n = int(stroke.max()) + 1 if len(stroke) else 0
    order = torch.argsort(tile * n + stroke)
    count = torch.bincount(tile, minlength=tiles)
    first = count.cumsum(0) - count  # where each tile's entries start in `order`
    layer = torch.empty_like(order)
    layer[order] = torch.arange(len(order), device=order.device) - first[tile[order]]
    return layer, int(count.max())


def composite(alpha: Tensor, colours: Tensor, paper: Tensor) -> Tensor:
    """Layers over paper, later on top: alpha (..., L, P) coverage, colours (..., L, 3), paper (3,)
    -> (..., 3, P). Each layer lerps the image toward its colour by its alpha ("over")."""
    image = paper.to(alpha.dtype)[:, None].expand(*alpha.shape[:-2], 3, alpha.shape[-1])
    # unbound once: indexing a layer per step would cost a full-size zero gradient per layer
    for a, c in zip(alpha.unbind(-2), colours.unbind(-2), strict=True):
        image = torch.lerp(image, c[..., None], a[..., None, :])
    return image


def coverage(
    points: Tensor, widths: Tensor, height: int, width: int, wrap: bool, softness: float, samples: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each stroke's coverage on the tiles it reaches, as entries: stroke (E,), tile (E,) and
    coverage (E, TILE * TILE) in [0, 1]; tiles row-major over a grid that covers the canvas."""
    side = TILE
    tiles = -(-height // side) * -(-width // side)
    if wrap:
        points = _into_canvas(points, height, width)
    reach = (widths.detach() / 2 + CUTOFF * softness).clamp_min(0)  # (N,) farthest a stroke shows
    stroke, shift = _copies(points, reach, height, width, wrap)  # (V,), (V, 2)
    curves = sample_curves(points, samples)[stroke] + shift[:, None]  # (V, S, 2)
    px, py = _tile_pixels(height, width, side, points)  # (T, side * side) each
    copy, tile = _reached_tiles(curves.detach(), reach[stroke], px, py, side)  # (P,) pairs
    px, py = px[tile], py[tile]  # (P, side * side)
    nearest = _nearest_segments(curves.detach(), copy, px, py)
    # the distance to the nearest segment again, now with autograd: (P, side * side)
    a, b = curves[copy[:, None], nearest], curves[copy[:, None], nearest + 1]  # (P, side * side, 2)
    d = segment_distance2(px, py, a[..., 0], a[..., 1], b[..., 0], b[..., 1]).clamp_min(1e-12).sqrt()
    cover = torch.sigmoid((widths[stroke[copy], None] / 2 - d) / softness)
    # copies of one stroke on one tile merge, the nearer (more covering) winning
    entry, index = torch.unique(stroke[copy] * tiles + tile, return_inverse=True)
    index = index[:, None].expand_as(cover)
    cover = cover.new_zeros(len(entry), side * side).scatter_reduce(0, index, cover, "amax", include_self=False)
    return entry // tiles, entry % tiles, cover


def rasterise(
    points: Tensor,
    widths: Tensor,
    colours: Tensor,
    paper: Tensor,
    height: int,
    width: int,
    wrap: bool = False,
    softness: float = 1.0,
    samples: int = 16,
) -> Tensor:
    """points (N, 4, 2) pixel coordinates; widths (N,) stroke widths in pixels; colours (N, 3) in [0,1]
    (or (N, 4) with alpha); paper (3,) in [0,1] -> image (1, 3, height, width) in [0,1],
    differentiable w.r.t. points, widths and colours (and paper).

    A pixel at distance d from a stroke's polyline (`samples` points on the curve) is covered by
    sigmoid((width / 2 - d) / softness), times the alpha if there is one; so the edge is half
    covered and `softness` pixels is the blur of the edge. Strokes are composited over the paper
    in order (later strokes on top). `wrap=True`: the canvas is a torus: a pixel's distance is the
    least over the stroke's periodic copies, so a stroke leaving one edge continues on the
    opposite edge and the image tiles seamlessly. Inputs are not clamped: the caller chooses how
    its parameters map to valid widths and colours.
    """
    if points.ndim != 3 or points.shape[1:] != (4, 2):
        raise ValueError(f"points must be (N, 4, 2), got {tuple(points.shape)}")
    if softness <= 0:
        raise ValueError(f"softness must be positive, got {softness}")
    side = TILE
    ty, tx = -(-height // side), -(-width // side)
    stroke, tile, cover = coverage(points, widths, height, width, wrap, softness, samples)
    if colours.shape[1] == 4:
        cover = cover * colours[stroke, 3:]
    layer, depth = layers(stroke, tile, ty * tx)
    depth = max(depth, 1)  # an empty layer when no stroke shows keeps the image in the strokes' graph
    alpha = cover.new_zeros(ty * tx, depth, side * side).index_put((tile, layer), cover)
    colour = colours.new_zeros(ty * tx, depth, 3).index_put((tile, layer), colours[stroke, :3])
    image = composite(alpha, colour, paper)  # (T, 3, side * side)
    image = image.reshape(ty, tx, 3, side, side).permute(2, 0, 3, 1, 4).reshape(1, 3, ty * side, tx * side)
    return image[..., :height, :width]


def random_strokes(
    n: int, height: int, width: int, generator: torch.Generator, width_range=(1.0, 5.0)
) -> tuple[Tensor, Tensor, Tensor]:
    """N random short strokes (points (N,4,2), widths (N,), colours (N,3)) drawn from `generator` on CPU.

    As CLIPDraw starts: the first control point anywhere on the canvas, each next one within a
    tenth of the canvas of the one before. Drawn in a fixed order (points, widths, colours), so a
    seed gives the same strokes."""
    size = torch.tensor([width, height], dtype=torch.float32)
    start = torch.rand(n, 1, 2, generator=generator) * size
    steps = (torch.rand(n, 3, 2, generator=generator) * 2 - 1) * 0.1 * size
    points = torch.cat([start, start + steps.cumsum(1)], dim=1)
    lo, hi = width_range
    widths = lo + (hi - lo) * torch.rand(n, generator=generator)
    colours = torch.rand(n, 3, generator=generator)
    return points, widths, colours


def _number(x: float) -> str:
    """A coordinate as short, deterministic SVG text: two decimals, no trailing zeros."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02x}" for c in rgb)


def to_svg(points, widths, colours, paper, height: int, width: int, wrap: bool = False) -> str:
    """The same strokes as an SVG document (path d="M x y C ..." per stroke, stroke-width, stroke colour,
    stroke-linecap round, a paper-coloured rect behind). With wrap, strokes that cross an edge are
    also drawn shifted by ±width/±height so the SVG looks like the PNG. Deterministic text.

    An alpha (colours (N, 4)) becomes stroke-opacity. The SVG draws the true curve with crisp
    edges, where the PNG draws `samples` points of it with edges `softness` soft."""
    points = torch.as_tensor(points).detach().to("cpu", torch.float64)
    widths = torch.as_tensor(widths).detach().to("cpu", torch.float64)
    colours = torch.as_tensor(colours).detach().to("cpu", torch.float64)
    paper = torch.as_tensor(paper).detach().to("cpu", torch.float64)
    if wrap and len(points):
        points = _into_canvas(points, height, width)
    reach = (widths / 2).clamp_min(0)
    stroke, shift = _copies(points, reach, height, width, wrap)
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="{_hex(paper.tolist())}"/>',
    ]
    for i, offset in zip(stroke.tolist(), shift.tolist(), strict=True):
        (x0, y0), *rest = (points[i] + torch.tensor(offset, dtype=points.dtype)).tolist()
        d = f"M {_number(x0)} {_number(y0)} C " + " ".join(f"{_number(x)} {_number(y)}" for x, y in rest)
        colour = colours[i].tolist()
        opacity = f' stroke-opacity="{_number(colour[3])}"' if len(colour) == 4 else ""
        lines.append(
            f'<path d="{d}" fill="none" stroke="{_hex(colour[:3])}"{opacity} '
            f'stroke-width="{_number(widths[i].item())}" stroke-linecap="round" stroke-linejoin="round"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"
