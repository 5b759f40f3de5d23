"""Finding and loading the two models a run needs, by name, path or built-in preset."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixgen.errors import PixgenError
from pixgen.scorer import ClipScorer
from pixgen.vqgan import VQGANDecoder


@dataclass
class Models:
    decoder: VQGANDecoder
    scorer: ClipScorer

    def to(self, device: torch.device) -> Models:
        self.decoder.to(device).eval().requires_grad_(False)
        self.scorer.to(device).eval().requires_grad_(False)
        return self


def load_decoder(name: str, config: str | None = None, ckpt: str | None = None) -> VQGANDecoder:
    """The VQGAN decoder from explicit files, a built-in model, or the cache."""
    from pixgen import vqgan

    if bool(config) != bool(ckpt):
        raise PixgenError("give both --vqgan-config and --vqgan-ckpt, or neither")
    if config and ckpt:
        return vqgan.load_vqgan(config, ckpt)
    if name == "tiny":
        return vqgan.tiny_decoder()
    if name == "shapes":
        from pixgen.shapes.models import shapes_decoder

        return shapes_decoder()
    from pixgen.weights import ensure_vqgan

    return vqgan.load_decoder_safetensors(ensure_vqgan(name))


def load_scorer(spec: str) -> ClipScorer:
    from pixgen.scorer import load_clip

    if spec == "shapes":
        from pixgen.shapes.models import shapes_clip

        return shapes_clip()
    return load_clip(spec)


def load_models(
    vqgan: str,
    clip: str,
    device: torch.device,
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
) -> Models:
    return Models(load_decoder(vqgan, vqgan_config, vqgan_ckpt), load_scorer(clip)).to(device)
