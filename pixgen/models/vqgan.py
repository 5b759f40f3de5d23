"""The VQGAN decoder (and optional encoder), built from taming.modules only.

A taming checkpoint holds the whole VQGAN (and, for Net2Net projects, a GPT beside it). We keep
the codebook, ``post_quant_conv`` and the decoder, filter the state dict to exactly those keys and
load it strictly. pytorch-lightning, the discriminator and LPIPS are never imported or built.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixgen import weights_io
from pixgen.errors import PixgenError
from pixgen.models.checkpoints import read_state_dict
from pixgen.runtime.memory import resolve_norms
from pixgen.weights_io import build

TARGETS = {
    "taming.models.vqgan.VQModel": "vq",
    "taming.models.vqgan.GumbelVQ": "gumbel",
}
NET2NET = "taming.models.cond_transformer.Net2NetTransformer"


@dataclass
class VQGANArch:
    """Architecture of a taming VQGAN: enough to build it and to check a state dict."""

    kind: str  # "vq" (VectorQuantizer2) or "gumbel" (GumbelQuantize)
    embed_dim: int
    n_embed: int
    ddconfig: dict = field(default_factory=dict)
    prefix: str = ""  # "first_stage_model." for Net2Net checkpoints

    @property
    def levels(self) -> int:
        """Resolution levels of the decoder."""
        return len(self.ddconfig["ch_mult"])

    @property
    def factor(self) -> int:
        """How many pixels one latent cell covers along each side."""
        return 2 ** (self.levels - 1)

    def activation_floats(self, width: int, height: int) -> int:
        """Roughly how many floats one decoder forward keeps for backward at this image size."""
        return sum(self.level_floats(width, height))

    def level_floats(self, width: int, height: int) -> list[int]:
        """`activation_floats` level by level, the full-resolution level first (level 0, the
        first a checkpointing of the top levels recomputes): its blocks' channels x pixels, with
        about 2.75 values kept per value of a block's output (GroupNorm's input and SiLU's; the
        convolutions keep none: `_FrozenConv`)."""
        dd = self.ddconfig
        latent_px = (width // self.factor) * (height // self.factor)
        return [
            (dd["num_res_blocks"] + 1) * 11 * dd["ch"] * mult * latent_px * 4 ** (self.levels - 1 - i) // 4
            for i, mult in enumerate(dd["ch_mult"])
        ]

    @property
    def codebook_key(self) -> str:
        return "quantize.embed.weight" if self.kind == "gumbel" else "quantize.embedding.weight"

    def to_json(self) -> str:
        return weights_io.arch_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> VQGANArch:
        return weights_io.arch_from_json(cls, text)


# decoder.safetensors and encoder.safetensors: the weights, with the VQGANArch in the metadata
VQGAN_FORMAT = weights_io.Format("VQGAN", "pixgen_vqgan_arch", VQGANArch)


def read_config(path: str | Path) -> VQGANArch:
    """Parse a taming YAML (VQModel, GumbelVQ, or a Net2Net project's first stage)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise PixgenError(f"VQGAN config not found: {path}")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:
        raise PixgenError(f"VQGAN config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        model = cfg["model"]
        prefix = ""
        if model["target"] == NET2NET:
            model = model["params"]["first_stage_config"]
            prefix = "first_stage_model."
        kind = TARGETS.get(model["target"])
        if kind is None:
            raise PixgenError(f"VQGAN config {path}: unsupported model target {model['target']!r}")
        params = model["params"]
        dd = dict(params["ddconfig"])
        return VQGANArch(kind, int(params["embed_dim"]), int(params["n_embed"]), dd, prefix)
    except (KeyError, TypeError) as e:
        raise PixgenError(f"VQGAN config {path} lacks model.params key {e}") from None


def _quiet():
    # taming's Decoder prints "Working with z of shape ..." when built.
    return contextlib.redirect_stdout(io.StringIO())


class VQGANDecoder(nn.Module):
    """Latent (B, embed_dim, h, w) -> image (B, 3, h*f, w*f) in about [-1, 1]."""

    def __init__(self, arch: VQGANArch):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder

        self.arch = arch
        self.register_buffer("codebook", torch.zeros(arch.n_embed, arch.embed_dim))
        self.post_quant_conv = nn.Conv2d(arch.embed_dim, arch.ddconfig["z_channels"], 1)
        with _quiet():
            self.decoder = Decoder(**arch.ddconfig)

    @property
    def factor(self) -> int:
        return self.arch.factor

    # low memory: the residual blocks of this many top-resolution levels keep only their input for
    # backward and recompute the rest there
    checkpoint_levels: int = 0
    # What a GroupNorm (and the SiLU after it) keeps for backward: "recompute" only its input and
    # statistics, GroupNorm's output made again in backward (`_NormSiLU`); "bf16", in a reduced
    # dtype, GroupNorm's input as it came and SiLU's (the island's float32 copy made again in
    # backward); "fp32", in a reduced dtype, that copy (before issue 32), in float32 autograd's
    # own. "auto" (the default): "recompute" in float32, where it costs nothing measurable, and
    # "bf16" in a reduced dtype, where it costs 3.5% of a step (BENCHMARKS.md, issue 32).
    norms: str = "auto"
    # A convolution keeps nothing of its input for backward (`_FrozenConv`; the weights are not
    # trained); False: autograd's own, which keeps it (before issue 32's second round): the same
    # gradient, 45% more of the decoder's activations kept.
    lean_convs: bool = True

    def cast(self, dtype: torch.dtype) -> VQGANDecoder:
        """Cast the convolutions to `dtype` (once, at the edge); the codebook stays float32. In a
        reduced dtype the weights and activations go channels_last, the layout in which oneDNN
        runs its bf16 (AMX) convolutions on a CPU."""
        fmt = torch.contiguous_format if dtype == torch.float32 else torch.channels_last
        for module in (self.post_quant_conv, self.decoder):
            module.to(dtype=dtype).to(memory_format=fmt)
        # a codebook read from safetensors lives in the file's memory map: left there, it would keep
        # the whole mapped file (the fp32 weights just replaced) resident; a copy lets it go
        self.codebook = self.codebook.clone()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    def forward(self, zq: Tensor) -> Tensor:
        """taming's Decoder.forward, step for step over its own modules, with SiLU as one op (it
        keeps one tensor for backward where ``x * sigmoid(x)`` keeps two) and attention through
        ``scaled_dot_product_attention``. The same function, to float rounding. The latent comes
        in float32 and the image goes out in float32, whatever dtype the decoder was cast to."""
        if self.dtype != zq.dtype:
            zq = zq.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self._decode(zq).float()

    def _decode(self, zq: Tensor) -> Tensor:
        d = self.decoder
        conv = _conv if self.lean_convs else _call
        h = conv(d.conv_in, conv(self.post_quant_conv, zq))
        act = self._activation()
        h = _attention(d.mid.attn_1, _resnet(d.mid.block_1, h, act, conv), conv)
        h = _resnet(d.mid.block_2, h, act, conv)
        for level in reversed(range(d.num_resolutions)):
            up = d.up[level]
            low_memory = level < self.checkpoint_levels and torch.is_grad_enabled()
            for i, block in enumerate(up.block):
                h = _checkpointed(_resnet, block, h, act, conv) if low_memory else _resnet(block, h, act, conv)
                if len(up.attn) > 0:
                    h = _attention(up.attn[i], h, conv)
            if level != 0:
                h = _upsample(up.upsample, h, conv)
        if d.give_pre_end:
            return h
        return conv(d.conv_out, act(d.norm_out, h))

    def _activation(self):
        """GroupNorm + SiLU as `norms` asks, when a gradient is taken."""
        norms = resolve_norms(self.norms, self.dtype)
        if not torch.is_grad_enabled():
            return _norm_silu
        return {"recompute": _norm_silu_kept, "bf16": _norm_silu_bf16}.get(norms, _norm_silu)


class _FrozenConv(torch.autograd.Function):
    """A convolution whose weights are not trained, keeping nothing of its input for backward:
    autograd's own convolution keeps the whole input for a weight gradient nobody asks for (a
    frozen Linear keeps none), where the input's gradient needs only the weight. The same values
    and the same gradient (the same kernel, asked for the input's gradient alone)."""

    @staticmethod
    def forward(ctx, x: Tensor, conv: nn.Conv2d) -> Tensor:
        ctx.conv, ctx.like = conv, (x.shape, x.stride())
        return conv(x)  # under autocast (fp16 on CUDA) in its dtype, as autograd's own would

    @staticmethod
    def backward(ctx, grad: Tensor):
        c, (shape, stride) = ctx.conv, ctx.like
        weight = c.weight.to(grad.dtype)  # autocast ran the convolution in the gradient's dtype
        # the kernel reads only the input's shape and layout: an unwritten tensor of both, never touched
        shell = torch.empty_strided(shape, stride, dtype=grad.dtype, device=grad.device)
        gx = torch.ops.aten.convolution_backward(
            grad, shell, weight, None, c.stride, c.padding, c.dilation, False, [0], c.groups, (True, False, False)
        )[0]
        return gx, None  # autograd casts it to the input's dtype


def _call(conv: nn.Conv2d, x: Tensor) -> Tensor:
    return conv(x)


def _conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """conv(x), through `_FrozenConv` when only the input's gradient is wanted."""
    if torch.is_grad_enabled() and x.requires_grad and not conv.weight.requires_grad and conv.padding_mode == "zeros":
        return _FrozenConv.apply(x, conv)
    return conv(x)


def _upsample(up: nn.Module, x: Tensor, conv=_conv) -> Tensor:
    """taming's Upsample (nearest, twice the size, then its convolution)."""
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    return conv(up.conv, x) if up.with_conv else x


def _checkpointed(fn, block: nn.Module, x: Tensor, act, conv) -> Tensor:
    """fn(block, x, act, conv), keeping only x for backward and recomputing the rest there."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fn, block, x, act, conv, use_reentrant=False)


def _norm(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """GroupNorm, computed in float32 when the decoder runs in a reduced dtype: an fp32 island
    that costs two casts, where bf16 GroupNorm's channels_last backward took 18% of a bf16 step
    on a CPU (BENCHMARKS.md, issue 22); it also keeps the statistics exact."""
    if x.dtype == torch.float32:
        return norm(x)
    w, b = norm.weight.float(), norm.bias.float()
    return F.group_norm(x.float(), norm.num_groups, w, b, norm.eps).to(x.dtype)


def _norm_silu(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    return F.silu(_norm(norm, x))


def _group_norm_f32(ctx, x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of `x` computed in float32 (its output in float32), keeping `x` as it came and
    the statistics on `ctx` for `_group_norm_grad`."""
    n, c, hw = x.shape[0], x.shape[1], x[0, 0].numel()
    y, mean, rstd = torch.ops.aten.native_group_norm(
        x.float(), norm.weight.float(), norm.bias.float(), n, c, hw, norm.num_groups, norm.eps
    )
    ctx.norm, ctx.dims = norm, (n, c, hw)
    ctx.save_for_backward(x, mean, rstd)
    return y


def _group_norm_grad(ctx, grad: Tensor, x: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    """The input's gradient of `_group_norm_f32` (in the input's dtype), from what it kept
    (`ctx.saved_tensors`, read once by the caller: a checkpointed backward allows one read)."""
    (n, c, hw), norm = ctx.dims, ctx.norm
    gx = torch.ops.aten.native_group_norm_backward(
        grad.float(), x.float(), mean, rstd, norm.weight.float(), n, c, hw, norm.num_groups, [True, False, False]
    )[0]
    return gx.to(x.dtype)


class _NormSiLU(torch.autograd.Function):
    """`_norm_silu` keeping only its input and GroupNorm's statistics for backward, where
    autograd keeps GroupNorm's input and SiLU's too: backward makes GroupNorm's output again from
    the statistics (one multiply-add per value, no reduction) for SiLU's gradient. The same values
    and, on the tests' decoder and the f16 replica, the same gradient bit for bit (tests/test_vqgan.py)."""

    @staticmethod
    def forward(ctx, x: Tensor, norm: nn.GroupNorm) -> Tensor:
        return F.silu(_group_norm_f32(ctx, x, norm).to(x.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, mean, rstd = ctx.saved_tensors
        (n, c, _), norm = ctx.dims, ctx.norm
        scale, shift = _norm_affine(mean, rstd, norm.weight.float(), norm.bias.float(), n, c)
        y = torch.addcmul(shift, x, scale).to(x.dtype)  # GroupNorm's output as forward rounded it
        return _group_norm_grad(ctx, torch.ops.aten.silu_backward(grad, y), x, mean, rstd), None


def _norm_affine(mean: Tensor, rstd: Tensor, w: Tensor, b: Tensor, n: int, c: int) -> tuple[Tensor, Tensor]:
    """GroupNorm as one multiply-add per channel, from its statistics (n, groups): (scale,
    shift), each (n, c, 1, 1), with output = x * scale + shift."""
    groups = mean.shape[1]
    per = lambda t: t.view(n, groups, 1).expand(n, groups, c // groups).reshape(n, c, 1, 1)  # noqa: E731
    scale = per(rstd) * w.view(1, c, 1, 1)
    return scale, b.view(1, c, 1, 1) - per(mean) * scale


def _norm_silu_kept(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """`_norm_silu`, recomputed in backward (`_NormSiLU`) unless the norm itself is trained."""
    if norm.weight is not None and norm.weight.requires_grad:
        return _norm_silu(norm, x)
    return _NormSiLU.apply(x, norm)


class _IslandNorm(torch.autograd.Function):
    """`_norm` in a reduced dtype (GroupNorm computed in float32) keeping its input in that dtype
    for backward, not the float32 copy: the copy is made again there. The same values and
    gradient as the island of casts."""

    @staticmethod
    def forward(ctx, x: Tensor, norm: nn.GroupNorm) -> Tensor:
        return _group_norm_f32(ctx, x, norm).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _group_norm_grad(ctx, grad, *ctx.saved_tensors), None


def _norm_silu_bf16(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """`_norm_silu` keeping GroupNorm's input in its own dtype (`_IslandNorm`), unless the norm is trained."""
    if norm.weight is None or norm.weight.requires_grad or x.dtype == torch.float32:
        return _norm_silu(norm, x)
    return F.silu(_IslandNorm.apply(x, norm))


def _resnet(block: nn.Module, x: Tensor, act=_norm_silu, conv=_conv) -> Tensor:
    """taming's ResnetBlock without a timestep embedding (VQGAN has none); `act(norm, h)` is
    SiLU after GroupNorm, `conv(module, h)` a convolution."""
    h = conv(block.conv1, act(block.norm1, x))
    h = conv(block.conv2, block.dropout(act(block.norm2, h)))
    if block.in_channels != block.out_channels:
        x = conv(block.conv_shortcut if block.use_conv_shortcut else block.nin_shortcut, x)
    return x + h


def _attention(block: nn.Module, x: Tensor, conv=_conv) -> Tensor:
    """taming's AttnBlock (one head over all positions) through scaled_dot_product_attention."""
    b, c, hh, ww = x.shape
    h = _norm(block.norm, x)
    q, k, v = (conv(m, h).reshape(b, 1, c, hh * ww).transpose(2, 3) for m in (block.q, block.k, block.v))
    out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c), scaled by c ** -0.5 like taming
    return x + conv(block.proj_out, out.transpose(2, 3).reshape(b, c, hh, ww))


class VQGANEncoder(nn.Module):
    """Image in [-1, 1] -> continuous latent (B, embed_dim, h, w) in codebook space."""

    def __init__(self, arch: VQGANArch):
        super().__init__()
        from taming.modules.diffusionmodules.model import Encoder

        self.arch = arch
        with _quiet():
            self.encoder = Encoder(**arch.ddconfig)
        self.quant_conv = nn.Conv2d(arch.ddconfig["z_channels"], arch.embed_dim, 1)
        if arch.kind == "gumbel":  # GumbelQuantize: 1x1 conv to code logits, then an embedding
            self.proj = nn.Conv2d(arch.ddconfig["z_channels"], arch.n_embed, 1)
            self.register_buffer("codebook", torch.zeros(arch.n_embed, arch.embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.quant_conv(self.encoder(x))
        if self.arch.kind == "gumbel":  # the expected code vector under the code logits
            return torch.einsum("bnhw,nd->bdhw", self.proj(h).softmax(1), self.codebook)
        return h


def split_state_dict(sd: dict, arch: VQGANArch) -> tuple[dict, dict]:
    """Taming state dict -> (decoder-side keys, encoder-side keys), renamed for our modules.

    Only the keys our modules own are taken; losses, discriminators and any GPT are dropped.
    """
    p = arch.prefix
    dec, enc = {}, {}
    for key, value in sd.items():
        if not key.startswith(p):
            continue
        k = key[len(p) :]
        if k == arch.codebook_key:
            dec["codebook"] = value
            if arch.kind == "gumbel":
                enc["codebook"] = value
        elif k.startswith(("decoder.", "post_quant_conv.")):
            dec[k] = value
        elif k.startswith(("encoder.", "quant_conv.")):
            enc[k] = value
        elif arch.kind == "gumbel" and k.startswith("quantize.proj."):
            enc[k[len("quantize.") :]] = value
    return dec, enc


def read_taming(config: str | Path, ckpt: str | Path) -> tuple[VQGANArch, dict, dict]:
    """A taming YAML and ``.ckpt``, read once and safely: (arch, decoder state dict, encoder state dict)."""

    arch = read_config(config)
    dec, enc = split_state_dict(read_state_dict(ckpt, "VQGAN checkpoint"), arch)
    return arch, dec, enc


def load_vqgan(config: str | Path, ckpt: str | Path) -> VQGANDecoder:
    """Build the decoder from a taming YAML and ``.ckpt``, loading only what it needs."""
    arch, dec, _ = read_taming(config, ckpt)
    return build(VQGANDecoder, arch, dec, f"VQGAN checkpoint {ckpt}")


def save_safetensors(path: str | Path, module: nn.Module, arch: VQGANArch, dtype=None) -> None:
    """Write a module's weights with the architecture in the file's metadata, atomically."""
    weights_io.save(path, VQGAN_FORMAT, module.state_dict(), arch, dtype)


def load_safetensors_arch(path: str | Path) -> VQGANArch:
    return weights_io.read_arch(path, VQGAN_FORMAT, "VQGAN weights")


def _load_safetensors(cls, path: str | Path, what: str) -> nn.Module:
    arch, sd, _ = weights_io.read(path, f"VQGAN {what} weights", VQGAN_FORMAT, torch.float32)
    return build(cls, arch, sd, f"VQGAN {what} weights {path}")


def load_decoder_safetensors(path: str | Path) -> VQGANDecoder:
    """Load a decoder written by `save_safetensors` (no pickle)."""
    return _load_safetensors(VQGANDecoder, path, "decoder")


def load_encoder_safetensors(path: str | Path) -> VQGANEncoder:
    """Load an encoder written by `save_safetensors` (no pickle)."""
    return _load_safetensors(VQGANEncoder, path, "encoder")


def load_encoder(config: str | Path, ckpt: str | Path) -> VQGANEncoder:
    """The encoder half of a taming checkpoint (for init images)."""
    arch, _, enc = read_taming(config, ckpt)
    return build(VQGANEncoder, arch, enc, f"VQGAN checkpoint {ckpt} (encoder)")


# The decoder/encoder config of the taming f16 VQGANs (imagenet 1024/16384, wikiart, Net2Net first stages).
IMAGENET_F16_DDCONFIG = dict(
    double_z=False,
    z_channels=256,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=128,
    ch_mult=[1, 1, 2, 2, 4],
    num_res_blocks=2,
    attn_resolutions=[16],
    dropout=0.0,
)

TINY_ARCH = VQGANArch(
    kind="vq",
    embed_dim=32,
    n_embed=64,
    ddconfig=dict(
        double_z=False,
        z_channels=32,
        resolution=64,
        in_channels=3,
        out_ch=3,
        ch=32,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[],
        dropout=0.0,
    ),
)


def tiny_decoder(seed: int = 0) -> VQGANDecoder:
    """A small randomly initialised decoder of the real class (f2), for smoke runs and tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dec = VQGANDecoder(TINY_ARCH)
        dec.codebook.normal_()
    return dec.eval()


def tiny_encoder(seed: int = 0) -> VQGANEncoder:
    """The random encoder matching `tiny_decoder`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return VQGANEncoder(TINY_ARCH).eval()
