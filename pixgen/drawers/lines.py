"""The lines drawer: N cubic Bezier strokes on a paper colour, CLIPDraw-style, rasterised in pure
torch by pixgen.drawers.strokes (a soft distance field to each curve) and written as SVG too.

The tensor packs, per stroke, its 4 control points as fractions of the image's width and height,
its width as a fraction of the --stroke-width range and its colour, then the paper colour: all in
[0, 1], so one learning rate suits them all. With --tile the canvas is a torus (strokes wrap
around the edges); with a palette the strokes and the paper snap to it, straight through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixgen.declare import DRAWER, MAX_SIDE, setting
from pixgen.drawers import Drawer
from pixgen.drawers.pixel import palette_tensor, snap_to_palette
from pixgen.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")

PER_STROKE = 4 * 2 + 1 + 3  # control points, width, colour
SOFTNESS = 1.0  # pixels of edge blur (pixgen.drawers.strokes)
SAMPLES = 16  # points per curve
INK = 0.25  # fit: a pixel further than this from the paper colour (in any channel) is drawn
FLOATS_PER_PIXEL = 16  # float32 values a render and its backward hold per pixel of a tile a stroke reaches
# (measured: 64 to 1024 strokes, 64x64 and 128x128, widths 5 to 128, with and without --tile)


class LinesDrawer(Drawer):
    name = "lines"
    summary = "Bezier strokes"
    lr = 0.01
    min_side = 8  # one tile of the rasteriser (pixgen.drawers.strokes.TILE)

    class Fields:
        strokes: int = setting(64, "lines: how many Bezier strokes.", lo=1, hi=4096, panel=DRAWER)
        stroke_width: list[float] = setting(
            [1.0, 5.0],
            "lines: the stroke widths' range in pixels, MIN,MAX.",
            metavar="MIN,MAX",
            text="pair",
            panel=DRAWER,
        )

    @classmethod
    def from_settings(cls, settings, decoder, device) -> LinesDrawer:
        s, palette = settings, palette_tensor(settings, device)
        return cls(s.strokes, (s.height, s.width), tuple(s.stroke_width), palette, s.tile, device)

    @classmethod
    def check(cls, settings, need) -> None:
        width = settings.stroke_width
        lo, hi = width if len(width) == 2 else (0, 0)
        need(0 < lo <= hi <= MAX_SIDE, "stroke_width", f"expected MIN,MAX with 0 < MIN <= MAX, got {width}")
        if settings.drawer == cls.name and len(settings.size) == 2:
            # wider strokes draw nothing more, and their work grows with the square of the width
            side = max(settings.size)
            need(hi <= side, "stroke_width", f"at most the image's longer side ({side} pixels), got MAX {hi:g}")

    @classmethod
    def work_floats(cls, settings, width: int, height: int) -> int:
        """Every pixel of each tile within reach of a stroke (its width / 2 and the soft edge) of
        a stroke as long as the image's longer side, FLOATS_PER_PIXEL each. With --tile a stroke
        wider than the canvas reaches its tiles again through its periodic copies."""
        from pixgen.drawers.strokes import CUTOFF, TILE

        reach = settings.stroke_width[-1] / 2 + CUTOFF * SOFTNESS
        across = 2 * reach / TILE + 2  # tiles across a stroke
        reached = (max(width, height) / TILE + across) * across
        if not settings.tile:
            reached = min(reached, -(-width // TILE) * -(-height // TILE))
        return int(settings.strokes * reached * TILE * TILE * FLOATS_PER_PIXEL)

    def __init__(self, strokes: int, size: tuple[int, int], widths, palette: Tensor | None, wrap: bool, device):
        self.n, self.size, self.widths = strokes, size, widths
        self.palette, self.wrap, self.device = palette, wrap, device

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The tensor -> points (N, 4, 2) in pixels, widths (N,) in pixels, colours (N, 3) and
        paper (3,), colours snapped to the palette when there is one."""
        h, w = self.size
        strokes, paper = params[:-3].view(self.n, PER_STROKE), params[-3:]
        points = strokes[:, :8].reshape(self.n, 4, 2) * strokes.new_tensor([w, h])
        lo, hi = self.widths
        widths = lo + (hi - lo) * strokes[:, 8]
        colours = strokes[:, 9:]
        if self.palette is not None:
            colours = snap_to_palette(colours.T[None, :, :, None], self.palette)[0, :, :, 0].T
            paper = snap_to_palette(paper.view(1, 3, 1, 1), self.palette).view(3)
        return points, widths, colours, paper

    def pack(self, points: Tensor, widths: Tensor, colours: Tensor, paper: Tensor) -> Tensor:
        """The inverse of `split` (before the palette): pixels and widths in pixels -> the tensor."""
        h, w = self.size
        lo, hi = self.widths
        unit = ((widths - lo) / max(hi - lo, 1e-6)).clamp(0, 1)
        points = points / points.new_tensor([w, h])
        strokes = torch.cat([points.reshape(self.n, 8), unit[:, None], colours[:, :3]], 1)
        return torch.cat([strokes.reshape(-1), paper]).float().to(self.device)

    def start(self, generator: torch.Generator) -> Tensor:
        """Random short strokes of random colours (as CLIPDraw starts) on white paper."""
        points, widths, colours = self._random(generator)
        return self.pack(points, widths, colours, torch.ones(3))

    def _random(self, generator: torch.Generator):
        from pixgen.drawers.strokes import random_strokes

        return random_strokes(self.n, *self.size, generator, self.widths)

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """A drawing of `image`, for a start: paper of the colour of the image's border (its
        median), and the pixels that differ from it filled band by band, as a scanner would: each
        band of rows a little narrower than the widest stroke, each run of ink across it one
        straight stroke of its median colour (the strokes' soft edges overlap the next band's).
        The largest runs are drawn, and strokes to spare repeat them; with no ink, random short
        strokes anywhere, each of the image's colour under its centre."""
        image = image[0].float().cpu()
        border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], 1)
        paper = border.median(1).values
        ink = (image - paper[:, None, None]).abs().amax(0) > INK
        runs = sorted(self._runs(image, ink), key=lambda run: -run[0])[: self.n]
        if not runs:
            return self._scatter(image, paper, generator)
        runs = [runs[i % len(runs)] for i in range(self.n)]  # the largest first, then again
        along = torch.linspace(0, 1, 4)[:, None]
        points = torch.stack([start + (end - start) * along for _, start, end, _ in runs])
        widths = torch.full((self.n,), float(self.widths[1]))
        return self.pack(points, widths, torch.stack([colour for *_, colour in runs]), paper)

    def _runs(self, image: Tensor, ink: Tensor) -> list[tuple[int, Tensor, Tensor, Tensor]]:
        """Each band's runs of ink: (its ink pixels, its stroke's two ends in pixels, its colour)."""
        band = max(1, int(self.widths[1] - 2 * SOFTNESS))
        found = []
        for top in range(0, ink.shape[0], band):
            rows = ink[top : top + band]
            across = torch.cat([rows.any(0).int(), rows.new_zeros(1).int()])
            edges = torch.diff(torch.cat([across.new_zeros(1), across])).nonzero()[:, 0].tolist()
            y = top + rows.shape[0] / 2
            for a, e in zip(edges[::2], edges[1::2], strict=True):
                drawn = rows[:, a:e]
                half = min(band, e - a) / 2  # the stroke's round ends reach the run's ends
                colour = image[:, top : top + band, a:e][:, drawn].median(1).values
                ends = torch.tensor([[a + half, y], [e - half, y]])
                found.append((int(drawn.sum()), ends[0], ends[1], colour))
        return found

    def _scatter(self, image: Tensor, paper: Tensor, generator: torch.Generator) -> Tensor:
        """Random short strokes anywhere, each of the image's colour under its centre."""
        points, widths, _ = self._random(generator)
        at = torch.multinomial(torch.ones(image[0].numel()), self.n, replacement=True, generator=generator)
        w = self.size[1]
        centre = torch.stack([at % w, at // w], 1).float() + 0.5
        points = points - points.mean(1, keepdim=True) + centre[:, None]
        colours = image.flatten(1)[:, at].T
        return self.pack(points if self.wrap else self._onto(points), widths, colours, paper)

    def _onto(self, points: Tensor) -> Tensor:
        h, w = self.size
        return torch.stack([points[..., 0].clamp(0, w), points[..., 1].clamp(0, h)], -1)

    def render(self, params: Tensor) -> Tensor:
        from pixgen.drawers.strokes import rasterise

        points, widths, colours, paper = self.split(params)
        return rasterise(points, widths, colours, paper, *self.size, self.wrap, SOFTNESS, SAMPLES).clamp(0, 1)

    def clamp_(self, params: Tensor) -> None:
        """Colours, widths and the paper into [0, 1]; the points onto the canvas (with --tile
        they may leave it: the canvas wraps, but each stays within one canvas of its stroke's
        first point, so that a stroke has few periodic copies to draw)."""
        with torch.no_grad():
            strokes = params[:-3].view(self.n, PER_STROKE)
            if self.wrap:
                first = strokes[:, :2].repeat(1, 3)
                strokes[:, 2:8] = torch.minimum(torch.maximum(strokes[:, 2:8], first - 1), first + 1)
            else:
                strokes[:, :8].clamp_(0, 1)
            strokes[:, 8:].clamp_(0, 1)
            params[-3:].clamp_(0, 1)

    def extras(self, params: Tensor) -> dict[str, bytes]:
        """final.svg: the same strokes as an SVG document."""
        from pixgen.drawers.strokes import to_svg

        with torch.no_grad():
            points, widths, colours, paper = self.split(params)
        return {"final.svg": to_svg(points, widths, colours, paper, *self.size, self.wrap).encode()}
