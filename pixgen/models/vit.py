"""open_clip's VisionTransformer forward, step for step over its own modules, laid out for speed.

open_clip's blocks call ``nn.MultiheadAttention`` with ``batch_first=True``, which transposes
its input to (tokens, batch, width) before the input projection. On the CPU in bf16 that
projection becomes a batched matmul against the weight expanded once per token: the weight is
copied 50 times per layer (ViT-B/32), which made ``aten::copy_`` 45% of a bf16 pass. Here every
linear layer sees a contiguous (batch * tokens, width) matrix and attention gets its heads from
one reshape of the fused q/k/v projection. The same function, to float rounding (tested against
open_clip's forward and gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def supports(visual: nn.Module) -> bool:
    """Whether `visual` is an open_clip VisionTransformer this walk reproduces exactly: plain
    residual attention blocks with a fused q/k/v projection, class-token or mean pooling, no
    attentional pooler, no token outputs."""
    try:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    if type(visual) is not VisionTransformer or getattr(visual, "attn_pool", None) is not None:
        return False
    if visual.output_tokens or visual.pool_type not in ("tok", "avg"):
        return False
    blocks = list(visual.transformer.resblocks)
    return all(
        type(b) is ResidualAttentionBlock
        and not hasattr(b, "ln_1_kv")
        and b.attn._qkv_same_embed_dim
        and b.attn.in_proj_bias is not None
        and b.attn.dropout == 0
        for b in blocks
    )


def forward(visual: nn.Module, x: Tensor, kernel: str = "auto") -> Tensor:
    """visual(x) for a VisionTransformer that `supports` accepts: (B, 3, s, s) -> (B, D).
    `kernel`: attention's, see `attention`."""
    x = embeds(visual, x)
    for block in visual.transformer.resblocks:
        x = x + block.ls_1(attention(block.attn, block.ln_1(x), kernel))
        x = x + block.ls_2(mlp(block.mlp, block.ln_2(x)))
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


def embeds(visual: nn.Module, x: Tensor) -> Tensor:
    """Patch embedding (the stride-p convolution as one matmul over the unfolded patches), class
    token, positions and the pre-norm: (B, 3, s, s) -> (B, 1 + (s / p)^2, C)."""
    conv = visual.conv1
    p = conv.kernel_size[0]  # padding is 0 in open_clip's ViTs
    b, ch, h, w = x.shape
    if conv.bias is not None or tuple(conv.stride) != (p, p) or tuple(conv.kernel_size) != (p, p) or h % p or w % p:
        return visual._embeds(x)
    patches = x.reshape(b, ch, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b * (h // p) * (w // p), -1)
    tokens = (patches @ conv.weight.reshape(conv.out_channels, -1).T).view(b, (h // p) * (w // p), -1)
    cls = visual.class_embedding.to(tokens.dtype).view(1, 1, -1).expand(b, 1, -1)
    x = torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def attention(attn: nn.MultiheadAttention, x: Tensor, kernel: str = "auto") -> Tensor:
    """Self-attention of `attn`'s weights over x (B, N, C), without a mask.

    `kernel` "math" is softmax(q k^T / sqrt(d)) v as two batched matmuls; "sdpa" is
    ``scaled_dot_product_attention``; "auto" takes math on a CPU, where for ViT-B/32's 50 tokens
    the flash kernel's backward measured slower than plain matmuls (BENCHMARKS.md), else sdpa."""
    b, n, c = x.shape
    heads = attn.num_heads
    qkv = F.linear(x.reshape(b * n, c), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    if kernel == "math" or (kernel == "auto" and x.device.type == "cpu"):
        out = ((q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)).softmax(-1) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C / heads)
    out = out.transpose(1, 2).reshape(b * n, c)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias).view(b, n, c)


def mlp(m: nn.Sequential, x: Tensor) -> Tensor:
    """The block's MLP (c_fc, activation, c_proj) on a (B * N, C) matrix."""
    b, n, c = x.shape
    return m.c_proj(m.gelu(m.c_fc(x.reshape(b * n, c)))).view(b, n, -1)
