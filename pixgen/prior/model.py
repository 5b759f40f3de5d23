"""A learned prior over VQGAN codes: a decoder-only transformer that draws a code grid in raster
order from a condition (DALL-E's row of the VQGAN+CLIP family, and taming's own transformer).

One sequence is the condition's positions, then the image's codes. The condition is either tokens
in the same embedding table as the codes (`class`: taming's ImageNet class token; `text`: caption
tokens after the codes, DALL-E 1 style) or a CLIP embedding projected to a few prefix positions
(`clip`: DALL-E 2's decoder, CLIP-GEN, LAFITE). Pre-LayerNorm blocks, causal attention through
`scaled_dot_product_attention`, and a key/value cache for sampling.

The state dict is taming's `mingpt.GPT` layout (`tok_emb`, `pos_emb`, `blocks.N.ln1/ln2`,
`attn.key/query/value/proj`, `mlp.0/mlp.2`, `ln_f`, `head`), plus `cond_proj` for the `clip`
condition, so taming's checkpoints load as they are.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pixgen import weights_io
from pixgen.errors import PixgenError

CONDITIONS = ("none", "class", "text", "clip")


@dataclass(frozen=True)
class PriorArch:
    """The shape of a prior. Codes are token ids [0, n_codes). `cond_len` positions of condition
    come first; `class` and `text` conditions are token ids starting at `cond_offset` (taming's
    class-conditional transformer puts the class at 0, in the codes' own range), `clip` is a
    `clip_dim` embedding projected to `cond_len` positions. `null_token` (text) or a zero
    embedding (clip) is the dropped condition of classifier-free guidance (-1: not trained)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_codes: int
    grid: tuple[int, int]  # (rows, columns) of the code grid
    cond: str = "none"
    cond_len: int = 0
    cond_offset: int = 0
    clip_dim: int = 0
    null_token: int = -1
    vocabulary: dict = field(default_factory=dict)  # text: BPE id (str) -> token id, and tokenizer context

    def __post_init__(self):
        if isinstance(self.grid, list | tuple):
            object.__setattr__(self, "grid", tuple(self.grid))
        problem = arch_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def guidance(self) -> bool:
        """Whether the prior was trained with dropped conditions (classifier-free guidance)."""
        return self.cond == "clip" or self.null_token >= 0

    def to_json(self) -> str:
        return weights_io.arch_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> PriorArch:
        """The arch a prior file's metadata records, checked (`arch_problem`) and, for a `text`
        condition, with its vocabulary: anything else is a ValueError saying what is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the architecture is not a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown architecture key {unknown[0]!r}")
        missing = [
            k for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_codes", "grid") if k not in data
        ]
        if missing:
            raise ValueError(f"the architecture lacks {missing[0]!r}")
        arch = cls(**data)
        vocabulary = arch.vocabulary
        if arch.cond == "text":
            ids, context = vocabulary.get("bpe_ids"), vocabulary.get("context")
            if not isinstance(ids, list) or not ids or not all(_is_int(i) and i > 0 for i in ids):
                raise ValueError("a text condition needs its vocabulary (bpe_ids: the tokenizer's ids it knows)")
            if not _is_int(context) or context < arch.cond_len:
                raise ValueError(f"a text condition needs the tokenizer's context, at least cond_len {arch.cond_len}")
            if arch.cond_offset + 2 + len(ids) > arch.vocab_size:
                raise ValueError(f"the text vocabulary of {len(ids)} ids does not fit vocab_size {arch.vocab_size}")
        return arch


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def arch_problem(a: PriorArch) -> str | None:
    """What is wrong with a prior's shape, in words, or None: every count a positive integer,
    heads that divide the width, a positive grid whose tokens fit the vocabulary and the block,
    the condition's positions and tokens (and `null_token`) within the vocabulary. Checked before
    anything is built, so a crafted file fails at once, not after minutes of sampling."""
    counts = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_codes")
    for key in counts:
        if not _is_int(getattr(a, key)) or getattr(a, key) < 1:
            return f"{key} must be a positive integer, not {getattr(a, key)!r}"
    for key in ("cond_len", "cond_offset", "clip_dim", "null_token"):
        if not _is_int(getattr(a, key)):
            return f"{key} must be an integer, not {getattr(a, key)!r}"
    if a.n_embd % a.n_head:
        return f"{a.n_head} heads do not divide the width {a.n_embd}"
    if not isinstance(a.grid, tuple) or len(a.grid) != 2 or not all(_is_int(g) and g > 0 for g in a.grid):
        return f"the grid must be two positive sizes, not {a.grid!r}"
    if a.n_codes > a.vocab_size:
        return f"{a.n_codes} codes do not fit vocab_size {a.vocab_size}"
    if a.cond not in CONDITIONS:
        return f"unknown prior condition {a.cond!r}"
    if a.cond_len < 0 or (a.cond != "none" and a.cond_len < 1):
        return f"the {a.cond} condition needs cond_len positions, not {a.cond_len}"
    if a.cond in ("class", "text") and not 0 <= a.cond_offset < a.vocab_size:
        return f"cond_offset {a.cond_offset} is outside the vocabulary (0..{a.vocab_size - 1})"
    if a.cond == "clip" and a.clip_dim < 1:
        return f"a clip condition needs clip_dim, not {a.clip_dim}"
    if not -1 <= a.null_token < a.vocab_size:
        return f"null_token {a.null_token} is outside the vocabulary (-1, or 0..{a.vocab_size - 1})"
    if a.cond_len + a.tokens - 1 > a.block_size:
        return f"block size {a.block_size} is shorter than the sequence"
    if not isinstance(a.vocabulary, dict):
        return "the vocabulary must be an object"
    return None


# prior.safetensors: the transformer's weights, with the PriorArch in the metadata
PRIOR_FORMAT = weights_io.Format("prior", "pixgen_prior_arch", PriorArch)


def check_codes(arch: PriorArch, n_codes: int | None, name: str) -> None:
    """A prior draws a VQGAN's codes: its code vocabulary must be the codebook's size `n_codes`
    (None: not checked). `name` names the prior in the one-line error."""
    if n_codes is not None and arch.n_codes != n_codes:
        raise PixgenError(
            f"prior {name} draws {arch.n_codes} codes but the VQGAN's codebook has {n_codes}: "
            "they were not trained together"
        )


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.key, self.query, self.value = (nn.Linear(n_embd, n_embd) for _ in range(3))
        self.proj = nn.Linear(n_embd, n_embd)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        start = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.append(layer, k, v)
        # a first chunk attends causally; a later single token sees everything cached
        y = F.scaled_dot_product_attention(q, k, v, is_causal=start == 0 and q.shape[2] > 1)
        if start and q.shape[2] > 1:
            raise ValueError("the cache takes one token at a time after the first chunk")
        b, h, t, d = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, h * d))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = Attention(n_embd, n_head)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class KVCache:
    """Keys and values of every layer, preallocated for the whole sequence: (B, heads, T, d)."""

    def __init__(self, arch: PriorArch, batch: int, device, dtype):
        shape = (arch.n_layer, batch, arch.n_head, arch.block_size, arch.n_embd // arch.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.layers = arch.n_layer

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        if layer == self.layers - 1:
            self.length = end
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Prior(nn.Module):
    """The transformer. `forward(idx, prefix)` gives logits for every position, as taming's GPT:
    `prefix` (B, L, n_embd) embeddings, when given, come before the tokens `idx`."""

    def __init__(self, arch: PriorArch):
        super().__init__()
        self.arch = arch
        self.clip_name: str | None = None  # the CLIP whose embeddings or tokenizer condition it (its file says)
        self.tok_emb = nn.Embedding(arch.vocab_size, arch.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, arch.block_size, arch.n_embd))
        self.blocks = nn.Sequential(*(Block(arch.n_embd, arch.n_head) for _ in range(arch.n_layer)))
        self.ln_f = nn.LayerNorm(arch.n_embd)
        self.head = nn.Linear(arch.n_embd, arch.vocab_size, bias=False)
        if arch.cond == "clip":
            self.cond_proj = nn.Linear(arch.clip_dim, arch.cond_len * arch.n_embd)
        self.apply(_init_weights)

    def forward(self, idx: Tensor, prefix: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = self.tok_emb(idx)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], 1)
        start = cache.length if cache is not None else 0
        x = x + self.pos_emb[:, start : start + x.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        return self.head(self.ln_f(x))

    def condition(self, cond: Tensor | None) -> Tensor | None:
        """The condition's prefix embeddings (B, cond_len, n_embd): token ids (B, cond_len) for
        class and text, CLIP embeddings (B, clip_dim) for clip; None for an unconditional prior."""
        if self.arch.cond == "none":
            return None
        if self.arch.cond == "clip":
            return self.cond_proj(cond.to(self.cond_proj.weight.dtype)).view(len(cond), self.arch.cond_len, -1)
        return self.tok_emb(cond)

    def null_condition(self, batch: int, device) -> Tensor:
        """The dropped condition of classifier-free guidance, as `condition` takes it."""
        a = self.arch
        if a.cond == "clip":
            return torch.zeros(batch, a.clip_dim, device=device)
        if a.null_token < 0:
            raise ValueError("this prior was not trained for classifier-free guidance")
        return torch.full((batch, a.cond_len), a.null_token, dtype=torch.long, device=device)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def code_loss(prior: Prior, cond: Tensor | None, codes: Tensor) -> Tensor:
    """Cross-entropy of the codes (B, T) given the condition (as `Prior.condition` takes it):
    the training objective. Logits at the last condition position predict the first code."""
    prefix = prior.condition(cond)
    logits = prior(codes[:, :-1], prefix)
    skip = 0 if prefix is None else prefix.shape[1] - 1
    if prefix is None:  # unconditional: the first code has no position before it and is not scored
        return F.cross_entropy(logits.flatten(0, 1), codes[:, 1:].flatten())
    logits = logits[:, skip:]
    return F.cross_entropy(logits.flatten(0, 1), codes.flatten())


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits (B, V) divided by the temperature, with all but the `top_k` largest and outside the
    smallest set of probability mass `top_p` set to -inf (0 and 1: no filter)."""
    logits = logits / max(temperature, 1e-6)
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        mass = ordered.softmax(-1).cumsum(-1)
        drop = mass - ordered.softmax(-1) >= top_p  # keeps the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@dataclass(frozen=True)
class Sampling:
    """How codes are drawn: temperature, top-k, top-p and the classifier-free guidance scale
    (1: none)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 1.0


@torch.no_grad()
def sample(
    prior: Prior,
    cond: Tensor | None,
    n: int,
    generator: torch.Generator,
    how: Sampling = Sampling(),
    batch: int = 16,
    callback: Callable[[dict], None] | None = None,
    given: Tensor | None = None,
) -> Tensor:
    """Draw `n` code grids (n, rows, columns) for the condition `cond` (as `Prior.condition`
    takes it, with a batch dimension of 1, the same for every sample, or of `n`, one per sample),
    `batch` at a time, from `generator` (a CPU generator: the same seed gives the same codes on
    any device). `callback(info)` hears the progress, as a dict
    `{"done": samples done, "total": n, "token": tokens drawn in this batch, "tokens": per grid}`,
    before each batch (token 0) and after each token: it may raise to stop (the batch under way
    is dropped), so a stop acts within one token's time even for the largest prior. `given`, codes
    (n, k) in raster order, fixes each grid's first k codes: the rest are drawn after them (a
    variation redraws a grid from a point on)."""
    if cond is not None and len(cond) not in (1, n):
        raise ValueError(f"a condition for 1 or {n} samples, not {len(cond)}")
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        rows = cond if cond is None or len(cond) == 1 else cond[start : start + b]
        tell = None
        if callback:
            callback({"done": start, "total": n, "token": 0, "tokens": prior.arch.tokens})
            tell = lambda i, start=start: callback(  # noqa: E731
                {"done": start, "total": n, "token": i, "tokens": prior.arch.tokens}
            )
        fixed = None if given is None else given[start : start + b]
        out.append(_sample_batch(prior, rows, b, generator, how, tell, fixed))
    return torch.cat(out).view(n, *prior.arch.grid)


def _sample_batch(
    prior: Prior,
    cond: Tensor | None,
    b: int,
    generator: torch.Generator,
    how: Sampling,
    tell: Callable[[int], None] | None = None,
    given: Tensor | None = None,
) -> Tensor:
    a, device = prior.arch, prior.tok_emb.weight.device
    kept = 0 if given is None else given.shape[1]
    guided = how.guidance != 1.0 and cond is not None
    prefix = None if cond is None else prior.condition(cond.expand(b, *cond.shape[1:]).to(device))
    if guided:
        prefix = torch.cat([prefix, prior.condition(prior.null_condition(b, device))])
    rows = len(prefix) if prefix is not None else b
    cache = KVCache(a, rows, device, prior.tok_emb.weight.dtype)
    codes = torch.empty(b, a.tokens, dtype=torch.long)
    if prefix is None:  # unconditional: the first code is uniform, as nothing predicts it
        codes[:, 0] = given[:, 0] if kept else torch.randint(a.n_codes, (b,), generator=generator)
        logits = prior(codes[:, :1].to(device), None, cache)[:, -1]
        first = 1
    else:
        logits, first = prior(torch.empty(rows, 0, dtype=torch.long, device=device), prefix, cache)[:, -1], 0
    for i in range(first, a.tokens):
        logits = logits.float()[:, : a.n_codes]
        if guided:
            logits = logits[b:] + how.guidance * (logits[:b] - logits[b:])
        if i < kept:  # a given code: the prior reads it, draws nothing
            codes[:, i] = given[:, i]
        else:
            probs = filter_logits(logits, how.temperature, how.top_k, how.top_p).softmax(-1).cpu()
            codes[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        if tell:
            tell(i + 1)
        if i + 1 < a.tokens:
            step = codes[:, i : i + 1].to(device)
            logits = prior(step.repeat(2, 1) if guided else step, None, cache)[:, -1]
    return codes


def text_vocabulary(tokenizer, texts: list[str], context: int) -> dict:
    """The text vocabulary of a `text` prior: the BPE ids that `texts` use, in order, and the
    tokenizer's context length."""
    ids = sorted({int(i) for i in tokenizer(texts).flatten().tolist()} - {0})
    return {"bpe_ids": ids, "context": context}


def text_condition(arch: PriorArch, tokenizer, texts: list[str]) -> Tensor:
    """(B, cond_len) token ids of captions for a `text` prior: the tokenizer's BPE ids mapped to
    the prior's rows (padding, then unknown, then the known ids, from `cond_offset`)."""
    known = {b: arch.cond_offset + 2 + i for i, b in enumerate(arch.vocabulary["bpe_ids"])}
    bpe = tokenizer(texts)[:, : arch.cond_len]
    rows = [[arch.cond_offset if b == 0 else known.get(b, arch.cond_offset + 1) for b in t] for t in bpe.tolist()]
    return torch.tensor(rows, dtype=torch.long)


def save_prior(path, prior: Prior, dtype: torch.dtype = torch.float16, extra: dict | None = None) -> None:
    """The prior's weights and arch as safetensors, written atomically; `extra` metadata (str
    values) is kept beside the arch (the training recipe, its seed and time)."""
    weights_io.save(path, PRIOR_FORMAT, prior.state_dict(), prior.arch, dtype, extra)


def read_prior_metadata(path) -> dict:
    """The metadata of a prior file written by `save_prior`."""
    return weights_io.read_metadata(path)


def load_prior(path, n_codes: int | None = None, dtype: torch.dtype = torch.float32) -> Prior:
    """A prior written by `save_prior` (no pickle), in `dtype` (fp32 unless the caller's edge
    decides otherwise: bf16 goes straight from the file, never through fp32). `n_codes`, the
    VQGAN's codebook size, must match the prior's code vocabulary (checked before the weights are
    read). Every failure is one PixgenError line."""
    path = Path(path)
    codes = functools.partial(check_codes, n_codes=n_codes, name=path.name)
    arch, sd, meta = weights_io.read(path, "prior weights", PRIOR_FORMAT, dtype, check=codes)
    prior = build_prior(arch, sd, str(path))
    prior.clip_name = meta.get("pixgen_prior_clip")
    return prior


def build_prior(arch: PriorArch, sd: dict, source: str) -> Prior:
    """A Prior of `arch` with the weights `sd` (taming's `attn.mask` buffers are dropped), which
    it takes as they are: built on the meta device, so a 1.4B prior is neither initialised at
    random nor held twice. Missing, unexpected or mis-shaped weights are one PixgenError line."""
    sd = {k: v for k, v in sd.items() if not k.endswith(".attn.mask")}
    return weights_io.build(Prior, arch, sd, source).requires_grad_(False)
