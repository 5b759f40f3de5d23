"""The vqgan drawer: a latent quantised to the codebook and decoded by the VQGAN.

Everything of the VQGAN lives here: its starts (tokens, flat, mean), `fit` through the encoder
(init images, the composed start, restyle), `render`, the clamp to the codebook's range, circular
padding for tiles, and the zoom warp of the zoom video mode. The encoder is loaded only when a
`fit` or the zoom needs it (`prepare_fit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pixgen.drawers import Drawer
from pixgen.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

torch = LazyModule("torch")
nn = LazyModule("torch.nn")
ops = LazyModule("pixgen.loop.ops")


def _tokens(codebook: Tensor, h: int, w: int, generator: torch.Generator) -> Tensor:
    codes = torch.randint(codebook.shape[0], (1, h, w), generator=generator)
    return ops.codes_to_latent(codes.to(codebook.device), codebook).clone()


def _flat(codebook: Tensor, h: int, w: int, generator: torch.Generator) -> Tensor:
    codes = torch.randint(codebook.shape[0], (1, 1, 1), generator=generator).expand(1, h, w)
    return ops.codes_to_latent(codes.to(codebook.device), codebook).clone()


def _mean(codebook: Tensor, h: int, w: int, generator: torch.Generator) -> Tensor:
    return codebook.mean(0).view(1, -1, 1, 1).expand(1, -1, h, w).clone()


# settings.init -> the starting latent; "composed" and "prior" need CLIP (pixgen.starts), so the
# run replaces this neutral placeholder once its CLIP terms exist
INITS = {"tokens": _tokens, "flat": _flat, "mean": _mean, "composed": _mean, "prior": _mean}


def init_latent(decoder, width: int, height: int, generator: torch.Generator, mode: str = "tokens") -> Tensor:
    """The starting latent: random codebook entries (tokens), one random entry everywhere (flat),
    or the codebook's mean everywhere (mean: a neutral start that favours no colour).

    Drawn on the CPU from `generator`, so the same seed gives the same start on any device.
    """
    f = decoder.factor
    return INITS[mode](decoder.codebook, height // f, width // f, generator)


def render(decoder, z: Tensor) -> Tensor:
    """Latent -> image in [0, 1], through the same quantisation the loop uses."""
    return ops.clamp_with_grad(decoder(ops.quantize_st(z, decoder.codebook)).add(1).div(2))


def encode(encoder, image01: Tensor) -> Tensor:
    """Image in [0, 1] -> continuous latent in codebook space."""
    with torch.no_grad():
        return encoder(image01 * 2 - 1)


def set_tile(module, on: bool) -> None:
    """Make every padded convolution of `module` pad circularly (a seamless tile) or with zeros."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and any(p > 0 for p in conv.padding):
            conv.padding_mode = "circular" if on else "zeros"


# where the zoom also tries the moved picture, in pixels (x, y), when it must not draw a speck
ZOOM_OFFSETS = ((0, 0), (0.5, 0), (0, 0.5), (-0.5, 0), (0, -0.5), (0.5, 0.5), (-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5))


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


class VQGANDrawer(Drawer):
    name = "vqgan"
    summary = "a VQGAN latent"
    title = "the VQGAN"
    lr = 0.1
    needs_vqgan = True
    takes_codes = True
    can_halve = True
    can_zoom = True
    local_cells = True

    @classmethod
    def from_settings(cls, settings, decoder, device) -> VQGANDrawer:
        """The run's VQGAN drawer; its encoder (the one that belongs to the run's VQGAN) is
        loaded on `device` when a fit or the zoom first needs it."""
        s = settings

        def load_encoder():
            from pixgen.models.loading import load_encoder  # torch-heavy: only once a fit needs it

            return load_encoder(s.vqgan, s.vqgan_config, s.vqgan_ckpt).to(device)

        return cls(decoder, s.tile, (s.height, s.width), load_encoder, s.init)

    @classmethod
    def size_factor(cls, decoder) -> tuple[int, int]:
        return decoder.factor, decoder.factor

    def __init__(
        self,
        decoder,
        tile: bool = False,
        size: tuple[int, int] | None = None,
        load_encoder: Callable[[], object] | None = None,
        init: str = "tokens",
    ):
        """`size` is the image's (height, width) (a multiple of the factor); `load_encoder()` gives
        the VQGAN's encoder on the run's device, called once, when a `fit` or the zoom needs it;
        `init` is the random start (tokens, flat, mean: INITS)."""
        self.decoder, self.load_encoder, self.encoder, self.init = decoder, load_encoder, None, init
        self.size = size or (decoder.factor, decoder.factor)
        set_tile(decoder, tile)  # the models may be shared between runs: set either way
        self.lo = decoder.codebook.min(0).values.view(1, -1, 1, 1)  # per-channel codebook range
        self.hi = decoder.codebook.max(0).values.view(1, -1, 1, 1)

    @property
    def factor(self) -> int:
        return self.decoder.factor

    def start(self, generator: torch.Generator) -> Tensor:
        h, w = self.size
        return init_latent(self.decoder, w, h, generator, self.init)

    @property
    def fit_ready(self) -> bool:
        return self.encoder is not None

    def prepare_fit(self) -> None:
        if self.encoder is None:
            if self.load_encoder is None:
                raise ValueError("this VQGAN drawer was made without an encoder")
            self.encoder = self.load_encoder()

    def fit(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The encoder's continuous latent of `image` (1, 3, H, W) in [0, 1], cut to the run's grid."""
        self.prepare_fit()
        rows, cols = self.size[0] // self.factor, self.size[1] // self.factor
        return encode(self.encoder, image)[..., :rows, :cols].contiguous()

    def fit_many(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Images (N, 3, H, W) encoded in one batch and snapped to the codebook: one latent each."""
        self.prepare_fit()
        codebook = self.decoder.codebook
        with torch.no_grad():
            latents = self.encoder(images.to(codebook.device) * 2 - 1)
            return list(ops.codes_to_latent(ops.nearest_codes(latents, codebook), codebook).split(1))

    def render(self, params: Tensor) -> Tensor:
        return render(self.decoder, params)

    def clamp_(self, params: Tensor) -> None:
        with torch.no_grad():
            params.copy_(torch.maximum(torch.minimum(params, self.hi), self.lo))

    def image_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return shape[-2] * self.factor, shape[-1] * self.factor

    def zoom(self, z: Tensor, scale: float = 1.0, shift=(0.0, 0.0), rotate: float = 0.0, specks=None) -> Tensor:
        """The latent of the drawn image after one zoom/pan movement (the zoom video mode). With
        `specks` (a picture (3, H, W) -> how many specks it carries), the moved picture is
        also encoded moved by half a pixel more (ZOOM_OFFSETS, in turn) until an encoding draws
        without a speck, else the one with the fewest: the encoder gives some moved pictures a code
        layout the decoder draws with a speck, and the same picture half a pixel away another."""
        self.prepare_fit()
        best = None
        with torch.no_grad():
            picture = render(self.decoder, z)
            for dx, dy in ZOOM_OFFSETS if specks is not None else ZOOM_OFFSETS[:1]:
                image = warp(picture, scale, (shift[0] + dx, shift[1] + dy), rotate).clamp(0, 1)
                out = encode(self.encoder, image)[..., : z.shape[-2], : z.shape[-1]]
                if specks is None:
                    return out
                found = specks(render(self.decoder, out)[0])
                if best is None or found < best[0]:
                    best = (found, out)
                if found == 0:
                    break
        return best[1]

    def halve(self, z: Tensor) -> Tensor:
        """A latent at half the height and width (the progressive schedule's coarse part)."""
        return ops.halve_latent(z)
