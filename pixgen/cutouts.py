"""Cutouts: random-size square crops of the image, resized to CLIP's input size in one batched
op, then augmented per cutout with kornia."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

# name -> the kornia augmentation, from kornia.augmentation (K) and the noise std
AUGMENTATIONS = {
    "flip": lambda K, noise: K.RandomHorizontalFlip(p=0.5),
    "affine": lambda K, noise: K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="border"),
    "perspective": lambda K, noise: K.RandomPerspective(distortion_scale=0.2, p=0.7),
    "jitter": lambda K, noise: K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05, p=0.7),
    "noise": lambda K, noise: K.RandomGaussianNoise(mean=0.0, std=noise, p=0.5),
    "erasing": lambda K, noise: K.RandomErasing(scale=(0.02, 0.1), p=0.3),
    "sharpness": lambda K, noise: K.RandomSharpness(sharpness=0.3, p=0.5),
}


def _augmentation(name: str, noise: float) -> nn.Module:
    import kornia.augmentation as K

    return AUGMENTATIONS[name](K, noise)


class Cutouts(nn.Module):
    """image (1, 3, H, W) -> (cutn, 3, size, size).

    Each cutout's side is min_side + (max_side - min_side) * u**cut_pow for u ~ U(0, 1), so a
    larger cut_pow favours small cutouts. Crops are resized with roi_align, which averages
    several samples per output pixel when shrinking (no aliasing) and is differentiable.
    """

    def __init__(
        self,
        size: int,
        cutn: int,
        cut_pow: float = 1.0,
        cut_min: float = 0.0,
        augment: list[str] = (),
        noise: float = 0.1,
    ):
        super().__init__()
        self.size, self.cutn, self.cut_pow, self.cut_min = size, cutn, cut_pow, cut_min
        self.augment = nn.Sequential(*[_augmentation(a, noise) for a in augment])

    def boxes(self, height: int, width: int, generator: torch.Generator, cutn: int | None = None) -> Tensor:
        """(cutn, 4) boxes x1, y1, x2, y2 in pixels, drawn from `generator`."""
        cutn = cutn or self.cutn
        side = min(height, width)
        lo = min(side, max(self.cut_min * side, min(self.size, side) * 0.5, 1.0))
        u = torch.rand(cutn, 3, generator=generator)
        s = lo + (side - lo) * u[:, 0].pow(self.cut_pow)
        x1 = (width - s) * u[:, 1]
        y1 = (height - s) * u[:, 2]
        return torch.stack([x1, y1, x1 + s, y1 + s], 1)

    def forward(self, image: Tensor, generator: torch.Generator, cutn: int | None = None) -> Tensor:
        """`cutn` overrides the number of cutouts for this call."""
        boxes = self.boxes(image.shape[2], image.shape[3], generator, cutn).to(image)
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)  # batch index 0
        cuts = roi_align(image, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return self.augment(cuts) if len(self.augment) else cuts
