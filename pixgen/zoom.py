"""The zoom/pan video mode: between segments of the run, the image is zoomed, shifted and
rotated about its centre, and the result is encoded by the VQGAN encoder as the new latent."""

from __future__ import annotations

import torch
from torch import Tensor

from pixgen.init import encode
from pixgen.optimise import render
from pixgen.vqgan import VQGANDecoder, VQGANEncoder


def warp(image: Tensor, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0), rotate: float = 0.0) -> Tensor:
    """(N, C, H, W) -> the same size, content scaled by `scale` and rotated by `rotate` degrees
    (counter-clockwise) about the centre, then moved by `shift` = (x, y) pixels (right, down).
    Edges uncovered by a zoom-out or shift are filled by reflection."""
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    n, _, h, w = image.shape
    centre = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], dtype=image.dtype, device=image.device).expand(n, 2)
    angle = torch.full((n,), float(rotate), dtype=image.dtype, device=image.device)
    scales = torch.full((n, 2), float(scale), dtype=image.dtype, device=image.device)
    matrix = get_rotation_matrix2d(centre, angle, scales)
    matrix[..., 0, 2] += float(shift[0])
    matrix[..., 1, 2] += float(shift[1])
    return warp_affine(image, matrix, (h, w), mode="bilinear", padding_mode="reflection", align_corners=True)


class Zoom:
    """z -> the latent of the decoded image after one zoom/pan movement."""

    def __init__(
        self,
        decoder: VQGANDecoder,
        encoder: VQGANEncoder,
        scale: float = 1.0,
        shift: tuple[float, float] = (0.0, 0.0),
        rotate: float = 0.0,
    ):
        self.decoder, self.encoder = decoder, encoder
        self.scale, self.shift, self.rotate = scale, tuple(shift), rotate

    @torch.no_grad()
    def __call__(self, z: Tensor) -> Tensor:
        image = warp(render(self.decoder, z), self.scale, self.shift, self.rotate).clamp(0, 1)
        return encode(self.encoder, image)[..., : z.shape[-2], : z.shape[-1]]
