"""Where pixgen's files are: the package's own folders (configs, presets, shipped weights) and
the cache of downloaded models. Imports nothing of pixgen."""

from __future__ import annotations

import os
from pathlib import Path

# the package folder, from however deep in it this module sits (pixgen.paths: its own folder)
PACKAGE_DIR = Path(__file__).resolve().parents[__name__.count(".") - 1]
CONFIGS_DIR = PACKAGE_DIR / "configs"
PRESETS_DIR = CONFIGS_DIR / "presets"
REGISTRY_FILE = CONFIGS_DIR / "models.yaml"
MODEL_CONFIGS_DIR = PACKAGE_DIR / "model_configs"  # open_clip configs of the shipped CLIPs
SHAPES_WEIGHTS_DIR = PACKAGE_DIR / "shapes" / "weights"  # the shipped shapes models
# the shipped shapes CLIPs by name, their files in SHAPES_WEIGHTS_DIR (pixgen/shapes/CARD.md)
SHAPES_CLIP_FILES = {"shapes": "clip.safetensors", "shapes-b": "clip_b.safetensors"}


def cache_dir() -> Path:
    """Where models live: $PIXGEN_CACHE, else the platform's user cache dir."""
    env = os.environ.get("PIXGEN_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pixgen"))
