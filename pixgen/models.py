"""Finding and loading the two models a run needs, by name, path or built-in preset."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pixgen.errors import PixgenError
from pixgen.scorer import ClipScorer
from pixgen.vqgan import VQGANDecoder


def cache_dir() -> Path:
    """Where models live: $PIXGEN_CACHE, else the platform's user cache dir."""
    env = os.environ.get("PIXGEN_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pixgen"))


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
    folder = cache_dir() / "vqgan" / name
    yaml_path, ckpt_path = folder / "model.yaml", folder / "last.ckpt"
    if not (yaml_path.is_file() and ckpt_path.is_file()):
        missing = ckpt_path if yaml_path.is_file() else yaml_path
        raise PixgenError(
            f"VQGAN {name!r} is not available: missing {missing}. Put the taming model.yaml and "
            f"last.ckpt there, or pass --vqgan-config PATH --vqgan-ckpt PATH "
            "(or try offline: --preset shapes)"
        )
    return vqgan.load_vqgan(yaml_path, ckpt_path)


def load_scorer(spec: str) -> ClipScorer:
    from pixgen.scorer import load_clip

    if spec == "shapes":
        from pixgen.shapes.models import shapes_clip

        return shapes_clip()
    return load_clip(spec, cache_dir() / "clip")


def load_models(
    vqgan: str,
    clip: str,
    device: torch.device,
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
) -> Models:
    return Models(load_decoder(vqgan, vqgan_config, vqgan_ckpt), load_scorer(clip)).to(device)
