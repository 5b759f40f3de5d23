"""The CLIP scorer: an adapter over open_clip.

The input size and normalisation come from the model itself. Text targets are encoded once,
without gradients. Weights come from open_clip's pretrained tags, a local file, or (for the
offline "tiny" and "shapes" models) pixgen's own configs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixgen.errors import PixgenError
from pixgen.models import vit
from pixgen.models.cache import clip_weights_file
from pixgen.paths import MODEL_CONFIGS_DIR, SHAPES_CLIP_FILES
from pixgen.weights_io import load_strict

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
# the built-in CLIPs' open_clip architectures (pixgen/model_configs)
CLIP_ARCHS = {"tiny": "pixgen-tiny", **dict.fromkeys(SHAPES_CLIP_FILES, "pixgen-shapes")}
# open_clip's text tower, as attributes of its CLIP (CustomTextCLIP keeps it all under "text")
TEXT_PARTS = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "text")


class ClipScorer(nn.Module):
    """Frozen CLIP: images in [0, 1] and texts -> unit-norm embeddings."""

    def __init__(self, model: nn.Module, tokenizer, name: str):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", OPENAI_DATASET_MEAN)
        std = cfg.get("std", OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.fast = vit.supports(model.visual)
        self.attention = "auto"  # pixgen.models.vit.attention's kernel: auto, math or sdpa
        self.text_released = False  # release_text freed the text tower

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def cast(self, dtype: torch.dtype) -> ClipScorer:
        """Cast CLIP's weights to `dtype` (once, at the edge); images and embeddings stay float32."""
        self.model.to(dtype)
        return self

    def encode_image(self, images: Tensor) -> Tensor:
        """(N, 3, s, s) float32 in [0, 1] at s = input_size -> (N, D) float32 unit vectors.

        Normalised in float32, then run in CLIP's own dtype; open_clip's ViTs through
        `pixgen.models.vit` (the same function, without the copies of its attention's layout)."""
        x = ((images - self.mean) / self.std).to(self.dtype)
        visual = self.model.visual
        features = vit.forward(visual, x, self.attention) if self.fast else self.model.encode_image(x)
        return F.normalize(features.float(), dim=-1)

    def activation_floats(self) -> int:
        """Roughly how many floats the image tower keeps for backward, per cutout."""
        visual = self.model.visual
        width = getattr(visual, "width", None) or 768
        layers = len(getattr(getattr(visual, "transformer", None), "resblocks", [])) or 12
        patch = getattr(visual, "patch_size", (32, 32))
        patch = patch[0] if isinstance(patch, tuple | list) else patch
        tokens = (self.input_size // patch) ** 2 + 1
        return tokens * width * layers * 24

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        if self.text_released:
            raise PixgenError(f"CLIP {self.name}: its text tower was released after the run's prompts were encoded")
        tokens = self.tokenizer(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def release_text(self) -> None:
        """Free the text tower (a run that owns its models needs only the image tower once its
        prompts are encoded: 63M of ViT-B/32's 151M parameters)."""
        for name in TEXT_PARTS:
            if getattr(self.model, name, None) is not None:
                setattr(self.model, name, None)
        self.text_released = True

    def text_parameters(self) -> int:
        """The text tower's parameters (what `release_text` frees)."""
        return sum(p.numel() for n, p in self.model.named_parameters() if n.split(".")[0] in TEXT_PARTS)


def _register_configs() -> None:
    import open_clip

    if "pixgen-tiny" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS_DIR)


def _create(arch: str, seed: int | None, meta: bool, **kwargs) -> nn.Module:
    """open_clip's `create_model` without weights, quietly: random (seeded) or on the meta device."""
    import contextlib

    import open_clip

    _register_configs()
    if arch not in open_clip.list_models():
        raise PixgenError(f"unknown CLIP architecture {arch!r} (see open_clip.list_models())")
    quiet = logging.getLogger()  # open_clip warns on the root logger about random weights
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta") if meta else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            return open_clip.create_model(arch, pretrained=None, device="meta" if meta else "cpu", **kwargs)
    finally:
        quiet.setLevel(level)


def build_clip(arch: str, seed: int | None = 0) -> ClipScorer:
    """An open_clip model of architecture `arch` with random weights (seeded)."""
    import open_clip

    return ClipScorer(_create(arch, seed, meta=False), open_clip.get_tokenizer(arch), arch)


def _materialise_buffers(model: nn.Module) -> bool:
    """Give the non-persistent buffers of a model built on the meta device their values.
    Only open_clip's causal text mask is known; False if any other meta tensor is left."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                if name != "attn_mask" or buf.ndim != 2 or buf.shape[0] != buf.shape[1]:
                    return False
                module._buffers[name] = torch.full(tuple(buf.shape), float("-inf"), dtype=buf.dtype).triu_(1)
    return not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def clip_from_state_dict(arch: str, sd: dict, source: str, **kwargs) -> nn.Module:
    """open_clip architecture `arch` holding `sd`, built on the meta device so no time is spent
    on a random initialisation that the weights would overwrite. Strict: a mismatch is a
    PixgenError naming `source`."""
    model = _create(arch, None, meta=True, **kwargs)
    own = model.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}
    load_strict(model, sd, source)
    if not _materialise_buffers(model):  # an architecture with other computed buffers: build it fully
        model = _create(arch, None, meta=False, **kwargs)
        load_strict(model, sd, source)
    return model


def read_clip_weights(path: str | Path) -> dict:
    """A CLIP state dict from .safetensors or a torch file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise PixgenError(f"CLIP weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:
            raise PixgenError(f"CLIP weights {path} are unreadable: {str(e).splitlines()[0]}") from None
    else:
        from pixgen.models.checkpoints import read_state_dict

        sd = read_state_dict(path, "CLIP checkpoint")
    if not isinstance(sd, dict):
        raise PixgenError(f"CLIP weights {path} hold no state dict")
    if "pixgen.token_ids" in sd:  # compact form: only the token rows that were trained
        ids, rows = sd.pop("pixgen.token_ids").long(), sd.pop("pixgen.token_rows")
        vocab = int(sd.pop("pixgen.vocab_size").item())
        full = torch.zeros(vocab, rows.shape[1], dtype=rows.dtype)
        full[ids] = rows
        sd["token_embedding.weight"] = full
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_clip_file(arch: str, path: str | Path) -> ClipScorer:
    """open_clip architecture `arch` with weights from a local file, loaded strictly."""
    import open_clip

    model = clip_from_state_dict(arch, read_clip_weights(path), f"CLIP weights {path}")
    return ClipScorer(model, open_clip.get_tokenizer(arch), arch)


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """``"ViT-B-32:openai"`` -> ("ViT-B-32", "openai"); a path after the colon stays whole."""
    name, _, rest = spec.partition(":")
    return name.strip(), (rest.strip() or None)


def looks_like_path(ref: str) -> bool:
    return ref.endswith(WEIGHT_SUFFIXES) or "/" in ref or "\\" in ref or Path(ref).exists()


def load_clip(spec: str, offline: bool = False) -> ClipScorer:
    """Load CLIP from ``NAME:TAG`` (open_clip pretrained, cached), ``NAME:PATH`` or ``tiny``."""
    if spec == "tiny":
        return build_clip("pixgen-tiny", seed=0)
    name, ref = parse_clip_spec(spec)
    if ref is None:
        raise PixgenError(f"CLIP {spec!r}: give a pretrained tag or a file, e.g. {name}:openai")
    if looks_like_path(ref):
        return load_clip_file(name, ref)
    return load_pretrained_clip(name, ref, offline)


def load_pretrained_clip(name: str, tag: str, offline: bool = False) -> ClipScorer:
    """open_clip's pretrained `name:tag` from pixgen's cache (downloaded first if needed)."""
    import open_clip

    if (name, tag) not in set(open_clip.list_pretrained()):
        raise PixgenError(f"unknown CLIP {name}:{tag}; `pixgen models list --clip` shows the known tags")
    path = clip_weights_file(name, tag, offline)
    cfg = open_clip.get_pretrained_cfg(name, tag)
    kwargs = dict(
        force_quick_gelu=bool(cfg.get("quick_gelu")),
        force_preprocess_cfg={k: cfg[k] for k in ("mean", "std") if k in cfg},
    )
    try:
        model = clip_from_state_dict(name, read_clip_weights(path), f"CLIP weights {path}", **kwargs)
    except PixgenError:  # a layout that needs open_clip's own conversions (old or third-party files)
        try:
            model = open_clip.create_model(name, pretrained=str(path), **kwargs)
        except Exception as e:
            raise PixgenError(f"CLIP weights {path} could not be loaded: {str(e).splitlines()[0][:200]}") from None
    return ClipScorer(model, open_clip.get_tokenizer(name), f"{name}:{tag}")
