"""Finding and loading the models a run needs, by name, path or built-in preset: one VQGAN
decoder and one or more CLIP scorers (an ensemble, each with a weight)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pixgen import weights_io
from pixgen.errors import PixgenError
from pixgen.loop.prompts import clip_specs
from pixgen.models import vqgan
from pixgen.models.scorer import ClipScorer, load_clip
from pixgen.models.vqgan import VQGANDecoder, VQGANEncoder
from pixgen.paths import SHAPES_CLIP_FILES
from pixgen.phases import Hooks, Phase


@dataclass
class Models:
    decoder: VQGANDecoder | None  # None: loaded for a drawer that needs no VQGAN (pixgen.drawers)
    scorers: list[ClipScorer]
    clip_weights: list[float] = field(default_factory=list)  # one per scorer; empty: all 1
    priors: dict = field(default_factory=dict)  # priors loaded for --init prior, by name (pixgen.prior.start)
    owned: bool = False  # loaded by the run itself (api.prepare): it frees CLIP's text towers once they served

    def __post_init__(self):
        if not self.clip_weights:
            self.clip_weights = [1.0] * len(self.scorers)
        if len(self.clip_weights) != len(self.scorers):
            raise ValueError("one weight per CLIP scorer")

    @property
    def parameters(self) -> int:
        """The decoder's and the CLIP models' parameter count (what `auto` precision weighs)."""
        return sum(p.numel() for m in self.modules for p in m.parameters())

    @property
    def modules(self) -> list:
        """The decoder (when there is one) and the CLIP models."""
        return [m for m in [self.decoder, *self.scorers] if m is not None]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the models were cast to (set_precision)."""
        return self.decoder.dtype if self.decoder is not None else self.scorers[0].dtype

    def set_precision(self, precision) -> None:
        """Cast the decoder and the CLIP models to `precision.weights` (pixgen.runtime.precision), once.
        Casting back up from a reduced dtype would keep its rounding, so it is refused: models
        shared between runs (batch, serve) are loaded once per precision."""
        dtype = precision.weights
        if dtype == self.dtype:
            return
        if self.dtype != torch.float32:
            raise PixgenError(
                f"setting 'precision': these models were cast to {self.dtype} for an earlier "
                f"run and cannot go back to {dtype} (load them again)"
            )
        for model in self.modules:
            model.cast(dtype)

    def text_parameters(self) -> int:
        """CLIP's text towers' parameters (what release_text frees)."""
        return sum(scorer.text_parameters() for scorer in self.scorers)

    def release_text(self) -> None:
        """Free every CLIP's text tower: for a run that loaded its models and has encoded its
        prompts (models shared between runs keep theirs)."""
        for scorer in self.scorers:
            scorer.release_text()

    def set_levers(self, levers) -> None:
        """The decoder's share of the memory levers (pixgen.runtime.memory.Levers): activation
        checkpointing in the residual blocks of its top `levers.checkpoint` levels (the loop's
        CLIP terms take `levers.clip_chunk`)."""
        if self.decoder is not None:
            self.decoder.checkpoint_levels = min(levers.checkpoint, self.decoder.arch.levels)
            self.decoder.norms = levers.norms

    def compile(self) -> None:
        """torch.compile the decoder and each CLIP image tower, in place (once). The first step then
        pays the compile time (run.json: seconds_per_step[0]); see BENCHMARKS.md for when it pays off."""
        for module in [m for m in [self.decoder, *(s.model.visual for s in self.scorers)] if m is not None]:
            if getattr(module, "_compiled_call_impl", None) is None:
                module.compile()

    def to(self, device: torch.device) -> Models:
        for model in self.modules:
            model.to(device).eval().requires_grad_(False)
        return self


def _load_vqgan_part(part: str, name: str, config: str | None, ckpt: str | None, offline: bool):
    """The VQGAN's "decoder" or "encoder" from explicit files, a built-in model, or the cache."""

    if bool(config) != bool(ckpt):
        raise PixgenError("give both --vqgan-config and --vqgan-ckpt, or neither")
    encoder = part == "encoder"
    if config and ckpt:
        return (vqgan.load_encoder if encoder else vqgan.load_vqgan)(config, ckpt)
    if name == "tiny":
        return vqgan.tiny_encoder() if encoder else vqgan.tiny_decoder()
    if name == "shapes":
        from pixgen.shapes.models import ENCODER_FILE, VQGAN_FILE

        path = ENCODER_FILE if encoder else VQGAN_FILE
    else:
        from pixgen.models.cache import ensure_vqgan

        path = ensure_vqgan(name, offline).with_name(f"{part}.safetensors")
    if not path.is_file():
        raise PixgenError(
            f"VQGAN {name!r} has no encoder ({path} is missing), so it cannot "
            "start from an image; re-import it from a checkpoint that includes the encoder"
        )
    return (vqgan.load_encoder_safetensors if encoder else vqgan.load_decoder_safetensors)(path)


def load_decoder(name: str, config: str | None = None, ckpt: str | None = None, offline: bool = False) -> VQGANDecoder:
    """The VQGAN decoder from explicit files, a built-in model, or the cache."""
    return _load_vqgan_part("decoder", name, config, ckpt, offline)


def load_encoder(name: str, config: str | None = None, ckpt: str | None = None, offline: bool = False) -> VQGANEncoder:
    """The encoder that belongs to the VQGAN `name` (for init images and the zoom mode)."""
    return _load_vqgan_part("encoder", name, config, ckpt, offline)


def load_scorer(spec: str, offline: bool = False) -> ClipScorer:

    if spec in SHAPES_CLIP_FILES:
        from pixgen.shapes.models import shapes_clip

        return shapes_clip(spec)
    return load_clip(spec, offline)


def _decoder_arch(name: str, config: str | None, ckpt: str | None) -> vqgan.VQGANArch | None:
    """The VQGAN's architecture as far as it is known without reading its weights: built in,
    imported or downloaded (its file's metadata or its taming YAML), or given (the YAML); None
    for a registry model not fetched yet."""
    if config and ckpt:
        return vqgan.read_config(config)
    if name == "tiny":
        return vqgan.TINY_ARCH
    if name == "shapes":
        from pixgen.shapes.models import VQGAN_FILE

        return vqgan.load_safetensors_arch(VQGAN_FILE)
    from pixgen.models.cache import canonical_vqgan, vqgan_dir

    folder = vqgan_dir(canonical_vqgan(name))
    if (folder / "decoder.safetensors").is_file():
        return vqgan.load_safetensors_arch(folder / "decoder.safetensors")
    if (folder / "model.yaml").is_file():
        return vqgan.read_config(folder / "model.yaml")
    return None


def model_shapes(
    vqgan_name: str | None, clip: str | list[str], vqgan_config: str | None = None, vqgan_ckpt: str | None = None
) -> Models | None:
    """The run's models as shapes alone, on the meta device (no weights read, no memory taken),
    for the memory estimate before anything loads: the VQGAN's architecture (`_decoder_arch`;
    None when it is not known yet) and each CLIP's open_clip architecture."""
    from pixgen.models.scorer import CLIP_ARCHS, _create, parse_clip_spec

    decoder = None
    if vqgan_name is not None:
        arch = _decoder_arch(vqgan_name, vqgan_config, vqgan_ckpt)
        if arch is None:
            return None
        decoder = weights_io.on_meta(VQGANDecoder, arch, f"VQGAN {vqgan_config or vqgan_name}")
    specs = clip_specs([clip] if isinstance(clip, str) else clip)
    scorers = []
    for spec, _ in specs:
        name = CLIP_ARCHS.get(spec) or parse_clip_spec(spec)[0]
        scorers.append(ClipScorer(_create(name, None, meta=True), None, spec))
    return Models(decoder, scorers, [w for _, w in specs], owned=True)


def load_models(
    vqgan: str | None,
    clip: str | list[str],
    device: torch.device,
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
    offline: bool = False,
    hooks: Hooks | None = None,
) -> Models:
    """The decoder (none when `vqgan` is None) and the CLIP ensemble; `clip` entries are
    SPEC[:weight]. `offline`: never
    touch the network, fail at once if a model is not cached. Loading each model is a phase of
    `hooks` (a status line, and a safe point)."""

    hooks = hooks or Hooks()
    specs = clip_specs([clip] if isinstance(clip, str) else clip)
    decoder = None
    if vqgan is not None:
        hooks.enter(Phase.LOADING_VQGAN, f"loading VQGAN {vqgan_ckpt or vqgan}…")
        decoder = load_decoder(vqgan, vqgan_config, vqgan_ckpt, offline)
    scorers = []
    for spec, _ in specs:
        hooks.enter(Phase.LOADING_CLIP, f"loading CLIP {spec}…")
        scorers.append(load_scorer(spec, offline))
    return Models(decoder, scorers, [w for _, w in specs]).to(device)
