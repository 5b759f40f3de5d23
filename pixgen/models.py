"""Finding and loading the models a run needs, by name, path or built-in preset: one VQGAN
decoder and one or more CLIP scorers (an ensemble, each with a weight)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pixgen.errors import PixgenError
from pixgen.scorer import ClipScorer
from pixgen.vqgan import VQGANDecoder


@dataclass
class Models:
    decoder: VQGANDecoder
    scorers: list[ClipScorer]
    clip_weights: list[float] = field(default_factory=list)  # one per scorer; empty: all 1

    def __post_init__(self):
        if not self.clip_weights:
            self.clip_weights = [1.0] * len(self.scorers)
        if len(self.clip_weights) != len(self.scorers):
            raise ValueError("one weight per CLIP scorer")

    @property
    def scorer(self) -> ClipScorer:
        """The first (or only) CLIP model: the one the CLIP tools use."""
        return self.scorers[0]

    def to(self, device: torch.device) -> Models:
        self.decoder.to(device).eval().requires_grad_(False)
        for scorer in self.scorers:
            scorer.to(device).eval().requires_grad_(False)
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
    clip: str | list[str],
    device: torch.device,
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Models:
    """The decoder and the CLIP ensemble; `clip` entries are SPEC[:weight]. `on_status(text)`
    hears what is being loaded (for a status line)."""
    from pixgen.settings import split_weight

    say = on_status or (lambda text: None)
    specs = [split_weight(c, "clip") for c in ([clip] if isinstance(clip, str) else clip)]
    say(f"loading VQGAN {vqgan_ckpt or vqgan}…")
    decoder = load_decoder(vqgan, vqgan_config, vqgan_ckpt)
    scorers = []
    for spec, _ in specs:
        say(f"loading CLIP {spec}…")
        scorers.append(load_scorer(spec))
    return Models(decoder, scorers, [w for _, w in specs]).to(device)
