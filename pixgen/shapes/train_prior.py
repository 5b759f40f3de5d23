"""Train the shapes priors (`python -m pixgen.shapes.train prior --cond text|clip`): a small
transformer over the shapes VQGAN's 8x8 code grids, conditioned on the caption's tokens (DALL-E 1)
or on a CLIP image embedding with Gaussian noise (DALL-E 2's decoder, LAFITE; CLIP text
embeddings stand in for it at run time). Trained on the training combinations only; the
held-out ones measure how it generalises (`held_out_loss`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pixgen.loop.ops import nearest_codes
from pixgen.models.vqgan import load_encoder_safetensors
from pixgen.prior.model import Prior, PriorArch, code_loss, save_prior, text_condition, text_vocabulary
from pixgen.shapes import world
from pixgen.shapes.models import ENCODER_FILE, shapes_clip, shapes_decoder

PRIOR_FILES = {"text": "prior_text.safetensors", "clip": "prior_clip.safetensors"}
CLIP_NAME = "shapes"  # the shapes CLIP whose tokenizer or embeddings condition the priors
WIDTH, LAYERS, HEADS = 128, 4, 4
CLIP_PREFIX = 4  # positions the CLIP embedding is projected to
DROP = 0.1  # share of the condition dropped in training (classifier-free guidance)
NOISE = 0.75  # clip: norm of the Gaussian noise added to the unit image embedding


@torch.no_grad()
def world_codes(n: int, seed: int, combos=world.TRAIN_COMBOS, batch: int = 256) -> dict:
    """n world images of `combos` as code grids (n, 64), their captions and the shapes CLIP's unit
    image embeddings (n, dim): the training data."""

    encoder, codebook = load_encoder_safetensors(ENCODER_FILE).eval(), shapes_decoder().codebook
    scorer = shapes_clip(CLIP_NAME)
    rng = np.random.default_rng(seed)
    codes, captions, embeds = [], [], []
    for start in range(0, n, batch):
        images, _, caps = world.batch(rng, min(batch, n - start), combos)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        codes.append(nearest_codes(encoder(x * 2 - 1), codebook).flatten(1))
        embeds.append(F.normalize(scorer.encode_image(x).float(), dim=-1))
        captions += caps
    return {"codes": torch.cat(codes), "captions": captions, "embeds": torch.cat(embeds), "tokenizer": scorer}


def shapes_arch(cond: str, tokenizer=None) -> PriorArch:
    """The shapes prior's architecture for a condition."""
    common = dict(n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_codes=1024, grid=(8, 8), cond=cond)
    if cond == "clip":
        return PriorArch(vocab_size=1024, block_size=CLIP_PREFIX + 63, cond_len=CLIP_PREFIX, clip_dim=64, **common)
    context = 16
    captions = [c.caption(t) for c in world.ALL_COMBOS for t in range(len(world.TEMPLATES))]
    vocabulary = text_vocabulary(tokenizer.tokenizer, captions, context)
    null = 1024 + 2 + len(vocabulary["bpe_ids"])
    return PriorArch(
        vocab_size=null + 1,
        block_size=context + 63,
        cond_len=context,
        cond_offset=1024,
        null_token=null,
        vocabulary=dict(vocabulary, tokenizer="pixgen-shapes"),
        **common,
    )


def conditions(prior: Prior, data: dict, idx: torch.Tensor, generator: torch.Generator, train: bool = True):
    """The condition of the examples `idx` as the prior takes it; in training a share DROP of
    them is dropped, and CLIP image embeddings get Gaussian noise of norm NOISE, then unit norm."""
    a = prior.arch
    if a.cond == "clip":
        e = data["embeds"][idx]
        if train:
            noise = torch.randn(e.shape, generator=generator)
            e = F.normalize(e + NOISE * F.normalize(noise, dim=-1), dim=-1)
        cond = e
    else:
        cond = text_condition(a, data["tokenizer"].tokenizer, [data["captions"][i] for i in idx.tolist()])
    if train:
        dropped = torch.rand(len(idx), generator=generator) < DROP
        cond[dropped] = prior.null_condition(int(dropped.sum()), "cpu")
    return cond


def _lr(step: int, steps: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train_prior(
    cond: str, steps: int, seed: int, out: Path, images: int = 40_000, batch: int = 64, held: int = 1000
) -> dict:
    """Train one shapes prior and save it to `out`; returns its measured losses and time (the
    held-out loss on `held` images of the held-out combinations)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = world_codes(images, seed)
    held_data = world_codes(held, seed + 1, combos=world.HELD_OUT)
    prior = Prior(shapes_arch(cond, data["tokenizer"]))
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    n = len(data["codes"])
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, 1e-3)
        idx = torch.randint(n, (batch,), generator=g)
        loss = code_loss(prior, conditions(prior, data, idx, g), data["codes"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    prior.eval()
    report = {"train_loss": held_out_loss(prior, data, g), "held_out_loss": held_out_loss(prior, held_data, g)}
    report.update(seconds=round(time.perf_counter() - t0), steps=steps, seed=seed, images=images, batch=batch)
    report["threads"] = torch.get_num_threads()
    recipe = {k: str(v) for k, v in report.items()}
    save_prior(out / PRIOR_FILES[cond], prior, extra={"pixgen_prior_clip": CLIP_NAME, **recipe})
    return report


@torch.no_grad()
def held_out_loss(prior: Prior, data: dict, generator: torch.Generator, n: int = 1000) -> float:
    """The mean code cross-entropy (nats per code) of up to n examples, with their conditions
    as given at run time (no noise, none dropped)."""
    idx = torch.arange(min(n, len(data["codes"])))
    if prior.arch.cond == "clip":  # at run time the condition is a text embedding
        texts = data["tokenizer"].encode_text([data["captions"][i] for i in idx.tolist()]).float()
        cond = F.normalize(texts, dim=-1)
    else:
        cond = conditions(prior, data, idx, generator, train=False)
    return round(float(code_loss(prior, cond, data["codes"][idx])), 4)
