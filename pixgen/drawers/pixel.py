"""The pixel drawer: a grid of flat cells, drawn at the image size with nearest upsampling.

With a palette each cell is snapped to its nearest palette colour with a straight-through
gradient (the forward pass shows the palette colour, the backward pass treats the snap as the
identity), so the loop keeps moving the free colours toward the colour CLIP wants."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import Tensor

from pixgen.drawers import Drawer


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


class PixelDrawer(Drawer):
    name = "pixel"

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
        from pixgen.images import to_pil

        buf = io.BytesIO()
        with torch.no_grad():
            to_pil(self.cells(params)).save(buf, format="PNG")
        return {"cells.png": buf.getvalue()}
