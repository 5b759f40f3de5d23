"""Cutouts: random-size square crops of the image, resized to CLIP's input size in one batched
op, then augmented per cutout with kornia."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# name -> the kornia augmentation, from kornia.augmentation (K) and the noise std
AUGMENTATIONS = {
    "flip": lambda K, noise: K.RandomHorizontalFlip(p=0.5),
    "affine": lambda K, noise: K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="border"),
    "perspective": lambda K, noise: K.RandomPerspective(distortion_scale=0.2, p=0.7),
    "jitter": lambda K, noise: ColourJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05, p=0.7),
    "noise": lambda K, noise: K.RandomGaussianNoise(mean=0.0, std=noise, p=0.5),
    "erasing": lambda K, noise: K.RandomErasing(scale=(0.02, 0.1), p=0.3),
    "sharpness": lambda K, noise: K.RandomSharpness(sharpness=0.3, p=0.5),
}


# luma weights and the RGB -> YIQ matrix (NTSC): a hue shift is a rotation about YIQ's Y axis
LUMA = (0.299, 0.587, 0.114)
YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class ColourJitter(nn.Module):
    """Brightness, contrast, saturation and hue jitter per cutout, with probability `p`, as one
    3x3 colour matrix and offset per cutout, then a clamp to [0, 1].

    Brightness scales by b in [1 - brightness, 1 + brightness]; contrast moves each pixel away
    from the cutout's mean luma by c; saturation away from the pixel's own luma by s; hue turns
    the colour about the grey axis by h turns (in YIQ), h in [-hue, hue]. Each keeps grey grey,
    so together they are A x + d with A = b c H S and d = b (1 - c) mean_luma. Drawn from torch's
    global generator, as kornia draws. kornia's ColorJitter goes through HSV with about 130
    masked selects: 0.49 s of a 0.56 s augmentation pass at 32 cutouts of 224x224 (issue 22).
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float):
        super().__init__()
        self.amounts = (brightness, contrast, saturation, hue)
        self.p = p
        yiq = torch.tensor(YIQ)
        self.register_buffer("yiq", yiq, persistent=False)
        self.register_buffer("rgb", torch.linalg.inv(yiq), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA), persistent=False)

    def matrices(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From uniform draws u (n, 4): the (n, 3, 3) colour matrices without the contrast's
        offset, the brightness b and the contrast c, each (n,)."""
        b, c, s, h = ((2 * u[:, i] - 1) * a for i, a in enumerate(self.amounts))
        b, c, s, angle = 1 + b, 1 + c, 1 + s, 2 * torch.pi * h
        eye = torch.eye(3, device=u.device)
        sat = s[:, None, None] * eye + (1 - s)[:, None, None] * self.luma.expand(3, 3)
        turn = eye.repeat(len(u), 1, 1)
        turn[:, 1, 1], turn[:, 1, 2], turn[:, 2, 1], turn[:, 2, 2] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
        matrix = (b * c)[:, None, None] * (self.rgb @ turn @ self.yiq @ sat)
        return matrix, b, c

    def forward(self, x: Tensor) -> Tensor:
        u = torch.rand(x.shape[0], 5, device=x.device)
        matrix, b, c = self.matrices(u[:, 1:])
        mean_luma = torch.einsum("c,nchw->n", self.luma.to(x.dtype), x) / (x.shape[2] * x.shape[3])
        offset = (b * (1 - c) * mean_luma)[:, None, None, None]
        out = (torch.einsum("nij,njhw->nihw", matrix.to(x.dtype), x) + offset).clamp(0, 1)
        return torch.where((u[:, 0] < self.p)[:, None, None, None], out, x)


def _augmentation(name: str, noise: float) -> nn.Module:
    import kornia.augmentation as K

    return AUGMENTATIONS[name](K, noise)


class Cutouts(nn.Module):
    """image (1, 3, H, W) -> (cutn, 3, size, size).

    Each cutout's side is min_side + (max_side - min_side) * u**cut_pow for u ~ U(0, 1), so a
    larger cut_pow favours small cutouts. Crops are resized as torchvision's ``roi_align``
    (aligned, adaptive sampling) resizes them: several bilinear samples averaged per output
    pixel when shrinking, so no aliasing. That resampling is separable, so it runs as two
    batched matmuls with interpolation matrices (`resample_weights`): the same values (tested),
    and a backward that is a matmul too, where roi_align's CPU backward is a single-threaded
    scatter (7% of a bf16 step, issue 22).
    """

    def __init__(
        self,
        size: int,
        cutn: int,
        cut_pow: float = 1.0,
        cut_min: float = 0.0,
        augment: list[str] = (),
        noise: float = 0.1,
        wrap: bool = False,
    ):
        super().__init__()
        self.size, self.cutn, self.cut_pow, self.cut_min = size, cutn, cut_pow, cut_min
        self.wrap = wrap
        self.augment = nn.Sequential(*[_augmentation(a, noise) for a in augment])

    def boxes(self, height: int, width: int, generator: torch.Generator, cutn: int | None = None) -> Tensor:
        """(cutn, 4) boxes x1, y1, x2, y2 in pixels, drawn from `generator`."""
        return self.boxes_within((0.0, 0.0, float(width), float(height)), generator, cutn or self.cutn)

    def boxes_within(self, area: tuple[float, float, float, float], generator: torch.Generator, cutn: int) -> Tensor:
        """(cutn, 4) square boxes x1, y1, x2, y2 in pixels inside `area` (x0, y0, x1, y1 in
        pixels), their sides relative to the area's shorter side, drawn from `generator`."""
        left, top, right, bottom = area
        width, height = right - left, bottom - top
        side = min(height, width)
        lo = min(side, max(self.cut_min * side, min(self.size, side) * 0.5, 1.0))
        u = torch.rand(cutn, 3, generator=generator)
        s = lo + (side - lo) * u[:, 0].pow(self.cut_pow)
        x1 = left + (width - s) * u[:, 1]
        y1 = top + (height - s) * u[:, 2]
        return torch.stack([x1, y1, x1 + s, y1 + s], 1)

    def forward(self, image: Tensor, generator: torch.Generator, cutn: int | None = None) -> Tensor:
        """`cutn` overrides the number of cutouts for this call. With `wrap` (a seamless tile) the
        image is first rolled by a random offset, so that cutouts cross its edges and CLIP sees
        the seams."""
        height, width = image.shape[2], image.shape[3]
        if self.wrap:
            dy, dx = (int(torch.randint(n, (), generator=generator)) for n in (height, width))
            image = image.roll((dy, dx), (2, 3))
        return self.crop(image, self.boxes(height, width, generator, cutn))

    def regional(
        self, image: Tensor, generator: torch.Generator, regions: list, cutn: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cutouts shared among `regions` (boxes x0, y0, x1, y1 in fractions of the image, or None
        for the whole image): the step's `cutn` are split evenly among them (at least one each),
        each region's drawn inside its box at sizes relative to it. Returns the cutouts and, for
        each, the index of its region. A region pins a place, so a tile is not rolled here."""
        height, width = image.shape[2], image.shape[3]
        cutn, k = cutn or self.cutn, len(regions)
        boxes, owner = [], []
        for i, region in enumerate(regions):
            count = max(1, cutn // k + (i < cutn % k))
            x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, 1.0, 1.0)
            boxes.append(self.boxes_within((x0 * width, y0 * height, x1 * width, y1 * height), generator, count))
            owner += [i] * count
        return self.crop(image, torch.cat(boxes)), torch.tensor(owner, device=image.device)

    def crop(self, image: Tensor, boxes: Tensor) -> Tensor:
        """The cutouts of `image` (1, 3, H, W) at `boxes` (n, 4) in pixels, resized and augmented."""
        height, width = image.shape[2], image.shape[3]
        boxes = boxes.to(image)
        rows = resample_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], self.size, height)
        cols = resample_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], self.size, width)
        n, c = rows.shape[0], image.shape[1]
        # rows: one (n * size, H) @ (H, c * W) matmul; then columns: a batched (size * c, W) @ (W, size)
        t = (rows.reshape(-1, height) @ image[0].permute(1, 0, 2).reshape(height, c * width)).view(n, -1, width)
        cuts = (t @ cols.transpose(1, 2)).view(n, self.size, c, self.size).permute(0, 2, 1, 3).contiguous()
        return self.augment(cuts) if len(self.augment) else cuts


def resample_weights(start: Tensor, length: Tensor, out: int, size: int) -> Tensor:
    """(n, out, size): along one axis, the weights with which ``roi_align(aligned=True,
    sampling_ratio=-1)`` makes each of `out` output pixels from the `size` input pixels, for n
    boxes starting at `start` and `length` pixels long. Each output bin averages
    ceil(length / out) bilinear samples at the bin's evenly spaced points; a sample beyond the
    image's border (by more than one pixel) counts zero, one just outside takes the edge pixel."""
    n = start.shape[0]
    bin_size = length / out
    grid = torch.ceil(bin_size).clamp(min=1)  # samples per bin, per box
    i = torch.arange(int(grid.max()), dtype=start.dtype, device=start.device)
    bins = torch.arange(out, dtype=start.dtype, device=start.device)
    pos = (start - 0.5)[:, None, None] + bins[:, None] * bin_size[:, None, None]
    pos = pos + (i + 0.5) * (bin_size / grid)[:, None, None]  # (n, out, samples)
    share = ((i < grid[:, None, None]) & (pos >= -1) & (pos <= size)) / grid[:, None, None]
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=size - 1)
    frac = torch.where(low >= size - 1, 0.0, pos - low)
    high = (low + 1).clamp(max=size - 1)
    weights = start.new_zeros(n, out, size)
    weights.scatter_add_(2, low.long(), (1 - frac) * share)
    weights.scatter_add_(2, high.long(), frac * share)
    return weights
