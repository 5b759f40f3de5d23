"""The pixel drawer: a grid of flat cells, drawn at the image size with nearest upsampling.

With a palette each cell is snapped to its nearest palette colour with a straight-through
gradient (the forward pass shows the palette colour, the backward pass treats the snap as the
identity), so the loop keeps moving the free colours toward the colour CLIP wants."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from pixgen.declare import DRAWER, MAX_SIDE, setting
from pixgen.drawers import Drawer
from pixgen.drawers.palettes import palette_colours
from pixgen.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


def snap_to_palette(cells: Tensor, palette: Tensor) -> Tensor:
    """Each colour of `cells` (1, 3, h, w) replaced by its nearest of `palette` (K, 3) in RGB,
    with the identity's gradient."""
    flat = cells.detach().movedim(1, -1).reshape(-1, 3)
    nearest = palette.to(flat)[torch.cdist(flat, palette.to(flat)).argmin(1)]
    hard = nearest.reshape(*cells.shape[:1], *cells.shape[2:], 3).movedim(-1, 1)
    return cells + (hard - cells).detach()


def upsample_cells(cells: Tensor, height: int, width: int) -> Tensor:
    """Cells (1, 3, rows, cols) -> (1, 3, height, width), each cell a flat block (nearest
    upsampling: where the size is not a whole multiple of the grid, blocks differ by a pixel)."""
    return F.interpolate(cells, size=(height, width), mode="nearest")


def palette_tensor(settings, device) -> Tensor | None:
    """The run's --palette as a (K, 3) tensor in [0, 1]; None without one."""
    return torch.tensor(palette_colours(settings.palette), device=device) if settings.palette else None


def grid(settings) -> tuple[int, int]:
    """The grid (columns, rows): --pixel-size, else by aspect as pixray chooses (40x40 square,
    40x50 portrait, 80x45 wide), never more cells than pixels."""
    if settings.pixel_size:
        return settings.pixel_size[0], settings.pixel_size[1]
    w, h = settings.size
    cols, rows = (40, 40) if w == h else (40, 50) if h > w else (80, 45)
    return min(cols, w), min(rows, h)


class PixelDrawer(Drawer):
    name = "pixel"
    summary = "a grid of flat cells"
    lr = 0.05
    local_cells = True
    min_side = 8  # smaller images leave CLIP nothing to see and the smoothness terms nothing to compare

    class Fields:
        pixel_size: list[int] | None = setting(
            None,
            "pixel: the grid in cells, WxH (default by aspect: 40x40 square, 40x50 portrait, 80x45 wide).",
            metavar="WxH",
            lo=1,
            hi=MAX_SIDE,
            text="size",
            panel=DRAWER,
        )

    @classmethod
    def from_settings(cls, settings, decoder, device) -> PixelDrawer:
        return cls(grid(settings), (settings.height, settings.width), palette_tensor(settings, device), device)

    @classmethod
    def check(cls, settings, need) -> None:
        if settings.pixel_size is None:
            return
        size = settings.size
        need(len(settings.pixel_size) == 2, "pixel_size", f"expected [columns, rows], got {settings.pixel_size}")
        cols, rows = settings.pixel_size
        need(
            cols <= size[0] and rows <= size[1],
            "pixel_size",
            f"a {cols}x{rows} grid is larger than the {size[0]}x{size[1]} image",
        )

    def __init__(self, grid: tuple[int, int], size: tuple[int, int], palette: Tensor | None, device):
        self.cols, self.rows = grid
        self.size, self.palette, self.device = size, palette, device

    def start(self, generator: torch.Generator) -> Tensor:
        """Grey cells with a little colour noise: no colour favoured."""
        noise = torch.rand(1, 3, self.rows, self.cols, generator=generator)
        return (0.5 + 0.1 * (noise - 0.5)).to(self.device)

    def fit(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """The mean colour of each cell's block."""
        return F.adaptive_avg_pool2d(image.float(), (self.rows, self.cols)).clamp(0, 1).to(self.device)

    def cells(self, params: Tensor) -> Tensor:
        """The grid as drawn (1, 3, rows, cols): snapped to the palette when there is one."""
        return snap_to_palette(params, self.palette) if self.palette is not None else params

    def render(self, params: Tensor) -> Tensor:
        return upsample_cells(self.cells(params), *self.size)

    def clamp_(self, params: Tensor) -> None:
        with torch.no_grad():
            params.clamp_(0, 1)

    def extras(self, params: Tensor) -> dict[str, bytes]:
        """cells.png: the grid, one pixel per cell."""
        from pixgen.outputs.images import to_pil

        buf = io.BytesIO()
        with torch.no_grad():
            to_pil(self.cells(params)).save(buf, format="PNG")
        return {"cells.png": buf.getvalue()}
