"""The shipped shapes models: architectures and loaders (the same loaders as real models)."""

from __future__ import annotations

from pathlib import Path

from pixgen.models.vqgan import VQGANArch
from pixgen.paths import SHAPES_CLIP_FILES, SHAPES_WEIGHTS_DIR

WEIGHTS_DIR = SHAPES_WEIGHTS_DIR
VQGAN_FILE = WEIGHTS_DIR / "vqgan.safetensors"  # pixgen.models.cache names these two files too
ENCODER_FILE = WEIGHTS_DIR / "vqgan_encoder.safetensors"
SHAPES_CLIPS = {name: WEIGHTS_DIR / file for name, file in SHAPES_CLIP_FILES.items()}
CLIP_FILE = SHAPES_CLIPS["shapes"]
CLIP_ARCH = "pixgen-shapes"

VQGAN_ARCH = VQGANArch(
    kind="vq",
    embed_dim=32,
    n_embed=1024,
    ddconfig=dict(
        double_z=False,
        z_channels=64,
        resolution=64,
        in_channels=3,
        out_ch=3,
        ch=32,
        ch_mult=[1, 1, 2, 2],
        num_res_blocks=1,
        attn_resolutions=[],
        dropout=0.0,
    ),
)


def shapes_decoder(path: Path = VQGAN_FILE):
    from pixgen.models.vqgan import load_decoder_safetensors

    return load_decoder_safetensors(path)


def shapes_clip(name: str = "shapes"):
    """A shipped shapes CLIP by name (SHAPES_CLIPS)."""
    from pixgen.models.scorer import load_clip_file

    scorer = load_clip_file(CLIP_ARCH, SHAPES_CLIPS[name])
    scorer.name = name
    return scorer
