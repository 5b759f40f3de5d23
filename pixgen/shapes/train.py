"""Train the shapes models: ``python -m pixgen.shapes.train vqgan|decoder|encoder|clip|prior [--steps N]
[--seed S] [--out DIR]``.

Both are reproducible from the seed (single process, fixed thread count, seeded streams) and
write fp16 safetensors into pixgen/shapes/weights/ (or --out) with a JSON of their evaluation
beside them. See pixgen/shapes/CARD.md for the recipes and the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.errors import PixgenError
from pixgen.loop.ops import nearest_codes, quantize_st
from pixgen.loop.specks import nearest_blend
from pixgen.models.loading import load_scorer
from pixgen.models.scorer import build_clip, load_clip_file
from pixgen.models.vqgan import (
    VQGANDecoder,
    VQGANEncoder,
    load_decoder_safetensors,
    load_encoder_safetensors,
    save_safetensors,
)
from pixgen.shapes import world
from pixgen.shapes.judge import judge, off_palette, specks
from pixgen.shapes.models import CLIP_ARCH, VQGAN_ARCH, WEIGHTS_DIR

JUNK_CAPTION = "noise"  # what the CLIP learns to call an image that is not one flat shape


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8: `_to_tensor`'s way back, for a decoder's output."""
    return x.float().add(1).mul(127.5).clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def _cosine_lr(step: int, steps: int, base: float, warmup: int = 50, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradients (N, C, 2, H, W): the edge term that stands in for a perceptual loss."""
    import kornia

    return kornia.filters.spatial_gradient(x, mode="sobel")


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def _adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last: torch.Tensor, cap: float = 1e4
) -> torch.Tensor:
    """Balance the generator's adversarial gradient against the reconstruction's at the last
    layer (the rule of Esser et al., Taming Transformers, eq. 7)."""
    rec_grad = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, cap).detach()


def train_vqgan(
    steps: int,
    seed: int,
    out: Path,
    batch: int = 16,
    lr: float = 1e-3,
    disc_start: float = 0.3,
    disc_weight: float = 0.5,
    edge_weight: float = 1.0,
    log_every: int = 100,
) -> dict:
    """taming's Encoder/Decoder/VectorQuantizer2 on the world's images, trained as the real VQGANs
    were: reconstruction + VQ loss, then a hinge adversarial term from taming's
    NLayerDiscriminator after `disc_start` of the steps. An L1 on Sobel edges stands in for LPIPS."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = _vqgan_parts(lr)
    usage = torch.zeros(VQGAN_ARCH.n_embed)
    start_d = int(disc_start * steps)
    t0, mse, d_loss = time.time(), torch.tensor(float("nan")), torch.tensor(float("nan"))
    for step in range(steps):
        for o, base in ((m.opt, lr), (m.opt_d, lr / 2)):
            for g in o.param_groups:
                g["lr"] = _cosine_lr(step, steps, base)
        images, _, _ = world.batch(rng, batch)
        x = _to_tensor(images) * 2 - 1
        mse, step_d_loss, z, idx = _vqgan_step(m, x, step, step >= start_d, disc_weight, edge_weight)
        d_loss = d_loss if step_d_loss is None else step_d_loss
        _restart_dead_codes(m.quant, usage, z, idx, step, steps)
        if log_every and (step + 1) % log_every == 0:
            print(
                f"vqgan step {step + 1}/{steps} mse {mse.item():.4f} d {d_loss.item():.3f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
    m.enc.eval(), m.dec.eval()
    m.dec.codebook.copy_(m.quant.embedding.weight.detach())
    kept = _save_pruned_vqgan(m.enc, m.dec, out, seed)
    info = {"steps": steps, "seed": seed, "final_mse": mse.item(), "seconds": round(time.time() - t0)}
    info["codes_kept"] = kept
    info.update(evaluate_vqgan(out))
    return info


def stray_loss(rec: torch.Tensor, background: torch.Tensor, subject: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """How far each pixel of `rec` (N, 3, H, W) lies from the segment of colours between its
    image's background and subject colours (N, 3), past `margin`, squared and averaged: zero for
    any blend of the two (a soft edge), large for a stray colour (a speck). All in [-1, 1]."""
    return F.relu((rec - nearest_blend(rec, background, subject)).norm(dim=1) - margin).pow(2).mean()


def _palette() -> torch.Tensor:
    """The world's six colours (6, 3) in [-1, 1], in `world.COLOURS`' order."""
    return torch.tensor(list(world.COLOURS.values()), dtype=torch.float32) / 127.5 - 1


def snapped(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image of `images` (N, 3, H, W) in [-1, 1] redrawn in its two most common world
    colours, every pixel in the nearer of the two: what a decoded picture of the world should
    have been (one flat subject on a flat background), without its specks and smudges; and
    those two colours (N, 2, 3)."""
    palette = _palette().to(images.dtype)
    flat = images.movedim(1, -1).reshape(len(images), -1, 3)
    labels = torch.cdist(flat, palette[None].expand(len(images), -1, -1)).argmin(-1)
    counts = F.one_hot(labels, len(palette)).sum(1)
    two = palette[counts.topk(2, dim=1).indices]  # (N, 2, 3)
    nearer = torch.cdist(flat, two).argmin(-1)
    picture = two.gather(1, nearer[..., None].expand(-1, -1, 3)).view_as(flat).movedim(-1, 1).reshape_as(images)
    return picture, two


def despecked(pictures: torch.Tensor, margin: float = 0.3, grow: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each picture of `pictures` (N, 3, H, W) in [-1, 1] as it is, except its stray pixels: those
    further than `margin` from every blend of its two most common world colours (`snapped`), and
    `grow` pixels around them, set to their nearest blend. What the picture would be without its
    specks, every soft edge and shape kept; and the mask of the pixels changed (N, 1, H, W)."""
    _, two = snapped(pictures)
    blend = nearest_blend(pictures, two[:, 0], two[:, 1])
    far = ((pictures - blend).norm(dim=1, keepdim=True) > margin).float()
    mask = F.max_pool2d(far, 2 * grow + 1, stride=1, padding=grow) > 0
    return torch.where(mask, blend, pictures), mask


def scene_batch(rng: np.random.Generator, n: int, size: int = 128) -> np.ndarray:
    """n pictures (n, size, size, 3) of 2-4 subjects of training combinations on one background,
    each inside its own half or quadrant of the picture, at a random size and place in it: the
    scenes that region prompts ask for, which the VQGAN never saw in its own training."""
    names = list(world.COLOURS)
    half, quarter = size // 2, size // 2
    layouts = {
        2: ([(0, 0, half, size), (half, 0, size, size)], [(0, 0, size, half), (0, half, size, size)]),
        3: ([(0, 0, half, half), (half, 0, size, half), (quarter // 2, half, size - quarter // 2, size)],),
        4: ([(0, 0, half, half), (half, 0, size, half), (0, half, half, size), (half, half, size, size)],),
    }
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        background = names[rng.integers(len(names))]
        options = layouts[int(rng.integers(2, 5))]
        boxes = options[rng.integers(len(options))]
        out[i] = world.COLOURS[background]
        for x0, y0, x1, y1 in boxes:
            combos = [c for c in world.TRAIN_COMBOS if c.background == background]
            combo = combos[rng.integers(len(combos))]
            side = rng.uniform(0.45, 0.9) * min(x1 - x0, y1 - y0)
            cx = rng.uniform(x0 + side / 2, x1 - side / 2)
            cy = rng.uniform(y0 + side / 2, y1 - side / 2)
            out[i][world.shape_mask(combo.shape, cx, cy, side, size)] = world.COLOURS[combo.colour]
    return out


@torch.no_grad()
def prior_grids(
    n: int, seed: int, weights: Path = WEIGHTS_DIR, guidance: float = 2.0, mixed: float = 0.0
) -> torch.Tensor:
    """n code grids (n, 8, 8) that the shipped prior draws for captions of the training
    combinations (a random template each) at the shapes preset's guidance: the layouts the
    decoder meets in a prior start, which the encoder never gives it. A share `mixed` of them
    are drawn for the mean of two captions' embeddings: conditions the prior never saw, whose
    uncertain grids stand in for those of new prompts (the held-out ones stay unseen)."""
    from pixgen.prior.model import Sampling, load_prior, sample

    prior = load_prior(weights / "prior_clip.safetensors")
    scorer = load_scorer("shapes")
    rng = np.random.default_rng(seed)
    combos = [world.TRAIN_COMBOS[i] for i in rng.integers(len(world.TRAIN_COMBOS), size=2 * n)]
    captions = [c.caption(int(rng.integers(len(world.TEMPLATES)))) for c in combos]
    embeds = scorer.encode_text(captions)  # unit vectors
    cond, other = embeds[:n].clone(), embeds[n:]
    mix = torch.from_numpy(rng.random(n) < mixed)
    cond[mix] = F.normalize(cond[mix] + other[mix], dim=-1)
    generator = torch.Generator().manual_seed(seed)
    return sample(prior, cond, n, generator, Sampling(guidance=guidance), batch=64)


def _reconstruction(rec: torch.Tensor, x: torch.Tensor, edge_weight: float) -> torch.Tensor:
    return F.mse_loss(rec, x) + F.l1_loss(rec, x) + edge_weight * F.l1_loss(_edges(rec), _edges(x))


def finetune_decoder(
    steps: int,
    seed: int,
    out: Path,
    start: Path = WEIGHTS_DIR,
    stray_weight: float = 0.0,
    batch: int = 16,
    lr: float = 2e-4,
    edge_weight: float = 1.0,
    log_every: int = 100,
    prior_weight: float = 0.0,
    scene_weight: float = 0.0,
    pool: int = 2000,
    mixed: float = 0.0,
    prior_stray: bool = False,
    prior_target: str = "snapped",
    speck_weight: float = 0.0,
) -> dict:
    """Fine-tune the shipped decoder alone on the codes the shipped encoder gives world images of
    the training combinations, by the reconstruction terms only (MSE + L1 + Sobel edges, no
    adversarial term) and `stray_weight` x `stray_loss` (colours off the blend of the image's two
    colours), starting from the decoder in `start`. The encoder and the codebook stay as they
    are, so every code keeps its meaning and the prior trained on them stays valid. It removes
    the decoder's speck: a few multi-coloured pixels at the subject's top-left edge that the
    adversarial phase of `train_vqgan` left in most reconstructions (CARD.md).

    `prior_weight` adds code grids that the prior draws (`prior_grids`, a pool of `pool`, a share
    `mixed` for two captions at once), each to be decoded as the starting decoder decodes it,
    `snapped` to its two colours (with `prior_stray`, held to their blend by the stray term): the layouts
    that carry the specks left in prior starts; for `prior_target` "own", `despecked` instead, and
    `speck_weight` adds the error on the despecked pixels alone (half the grids among those with
    a speck). `scene_weight` adds reconstructions of 128x128 scenes of several subjects."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = load_encoder_safetensors(start / "vqgan_encoder.safetensors").eval()
    dec = load_decoder_safetensors(start / "vqgan.safetensors").train()
    prior = _prior_targets(dec, pool, seed, mixed, prior_target, speck_weight > 0) if prior_weight else None
    terms = SimpleNamespace(
        edge=edge_weight, stray=stray_weight, scene=scene_weight, prior_weight=prior_weight,
        prior_stray=prior_stray, prior=prior, speck=speck_weight,
    )  # fmt: skip
    params = [*dec.post_quant_conv.parameters(), *dec.decoder.parameters()]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    t0, mse = time.time(), torch.tensor(float("nan"))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr)
        loss, mse = _world_loss(dec, enc, rng, batch, terms)
        loss = loss + _extra_loss(dec, enc, rng, batch, terms)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"decoder step {step + 1}/{steps} mse {mse.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    _save_decoder(dec.eval(), enc, out)
    info = {"steps": steps, "seed": seed, "final_mse": mse.item(), "seconds": round(time.time() - t0)}
    info.update(stray_weight=stray_weight, prior_weight=prior_weight, scene_weight=scene_weight, mixed=mixed)
    info.update(prior_stray=prior_stray, prior_target=prior_target, speck_weight=speck_weight, start=str(start))
    info.update(evaluate_vqgan(out))
    return info


# How `finetune_encoder` moves its pictures: a share left still, the rest scaled about the centre,
# shifted (x and y each up to `shift` px) and, a share of them, turned (up to `rotate` degrees): the
# zoom video mode's movements (`--zoom-scale/-shift/-rotate`) and a margin around them.
CODE_TEMPERATURE = 0.05  # finetune_encoder's code logits: minus the squared distance over this
MOVES = SimpleNamespace(still=0.3, scale=(0.9, 1.35), shift=8.0, rotate=10.0, turned=0.25)


def random_move(rng: np.random.Generator) -> tuple[float, tuple[float, float], float]:
    """One movement (scale, (x, y) shift, rotate) drawn as `MOVES` says, for `warp`."""
    if rng.random() < MOVES.still:
        return 1.0, (0.0, 0.0), 0.0
    turn = rng.uniform(-MOVES.rotate, MOVES.rotate) if rng.random() < MOVES.turned else 0.0
    dx, dy = rng.uniform(-MOVES.shift, MOVES.shift, size=2)
    return float(rng.uniform(*MOVES.scale)), (float(dx), float(dy)), float(turn)


def moved_pictures(rng: np.random.Generator, n: int, supersample: int = 4, combos=world.TRAIN_COMBOS):
    """n world pictures of `combos` and the same pictures moved as the zoom video mode
    moves a picture (`warp`): (the pictures (n, 3, 64, 64) in [0, 1], the moves as (scale, shift,
    rotate), the moved pictures drawn sharp, their combos). A sharp moved picture is the move
    applied to the picture rendered `supersample` times larger, then averaged back to 64 px: what
    the moved picture is, where the warp of the 64 px picture blurs its edges."""
    from pixgen.drawers.vqgan import warp

    k, size = supersample, world.SIZE
    chosen = [combos[i] for i in rng.integers(len(combos), size=n)]
    small, sharp, moves = [], [], []
    for combo in chosen:
        side = rng.uniform(*world.SIZE_RANGE)
        cx, cy = rng.uniform(side / 2, size - side / 2, size=2)
        small.append(world.render(combo, cx, cy, side))
        large = _to_tensor(world.render(combo, cx * k, cy * k, side * k, size * k)[None])
        move = random_move(rng)
        moves.append(move)
        scale, (dx, dy), turn = move
        sharp.append(F.avg_pool2d(warp(large, scale, (dx * k, dy * k), turn).clamp(0, 1), k))
    return _to_tensor(np.stack(small)), moves, torch.cat(sharp), chosen


def finetune_encoder(
    steps: int,
    seed: int,
    out: Path,
    start: Path = WEIGHTS_DIR,
    batch: int = 16,
    lr: float = 1e-4,
    edge_weight: float = 1.0,
    stray_weight: float = 100.0,
    scene_weight: float = 1.0,
    commitment: float = 0.25,
    drawn: float = 0.5,
    prior_weight: float = 1.0,
    pool: int = 2000,
    code_weight: float = 0.0,
    log_every: int = 50,
    evaluate: int = 300,
) -> dict:
    """Fine-tune the encoder alone (decoder, codebook and prior kept) so that a moved picture encodes
    to codes the decoder draws as that picture moved, sharp and without a speck: the zoom's round
    trip. Tried, not shipped (CARD.md). Each step (`_encoder_loss`): world pictures moved by
    `moved_pictures` (a share `drawn` first drawn by the VQGAN), encoded, snapped with the gradient
    passed straight through and decoded, against the sharp moved picture by the reconstruction
    terms, `stray_weight` x `stray_loss` and `commitment` x the distance to the codes (VQ-VAE's);
    `prior_weight` x half a batch of prior pictures (a pool of `pool`) moved, against their
    `snapped` pictures moved; `scene_weight` x a quarter batch of scenes (`scene_batch`).
    `code_weight` asks still pictures for codes by name (cross-entropy, logits minus the squared
    distance over CODE_TEMPERATURE): the codes `start` gives a world picture or a scene, a clean
    prior picture's own grid."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dec = load_decoder_safetensors(start / "vqgan.safetensors").eval().requires_grad_(False)
    m = SimpleNamespace(
        enc=load_encoder_safetensors(start / "vqgan_encoder.safetensors").train(),
        first=load_encoder_safetensors(start / "vqgan_encoder.safetensors").eval().requires_grad_(False),
        dec=dec, prior=_drawn_prior(dec, pool, seed) if prior_weight else None, edge=edge_weight,
        stray=stray_weight, scene=scene_weight, commitment=commitment, drawn=drawn, prior_weight=prior_weight,
        codes=code_weight,
    )  # fmt: skip
    opt = torch.optim.Adam(m.enc.parameters(), lr=lr, betas=(0.5, 0.9))
    t0, mse, named = time.time(), torch.tensor(float("nan")), torch.tensor(float("nan"))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr)
        loss, mse, named = _encoder_loss(m, rng, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"encoder step {step + 1}/{steps} mse {mse.item():.4f} codes {named.item():.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "vqgan_encoder.safetensors", m.enc.eval(), dec.arch, torch.float16)
    if out.resolve() != start.resolve():  # the pair travels together
        save_safetensors(out / "vqgan.safetensors", dec, dec.arch, torch.float16)
    info = {"steps": steps, "seed": seed, "final_mse": mse.item(), "seconds": round(time.time() - t0)}
    info.update(lr=lr, stray_weight=stray_weight, scene_weight=scene_weight, commitment=commitment, drawn=drawn)
    info.update(prior_weight=prior_weight, pool=pool, code_weight=code_weight)
    info.update(start=str(start), **evaluate_vqgan(out), **evaluate_moves(out, evaluate))
    return info


_UNMOVED = (1.0, (0.0, 0.0), 0.0)


def _encoder_loss(m: SimpleNamespace, rng: np.random.Generator, batch: int):
    """One batch of `finetune_encoder`: moved world pictures (a share drawn by the VQGAN first),
    half a batch of moved prior pictures, a quarter batch of scenes; (loss, the world pictures'
    MSE, their codes' cross-entropy)."""
    from pixgen.drawers.vqgan import warp

    small, moves, sharp, combos = moved_pictures(rng, batch)
    with torch.no_grad():
        codes = nearest_codes(m.first(small * 2 - 1), m.dec.codebook)
        redraw = torch.from_numpy(rng.random(batch) < m.drawn)
        if redraw.any():
            small[redraw] = (
                m.dec(quantize_st(m.first(small[redraw] * 2 - 1), m.dec.codebook)).clamp(-1, 1).add(1).div(2)
            )
    x = torch.cat([warp(small[i : i + 1], *moves[i]) for i in range(batch)]).clamp(0, 1)
    palette, names = _palette(), list(world.COLOURS)
    two = torch.stack([palette[[names.index(getattr(c, k)) for c in combos]] for k in ("background", "colour")], 1)
    still = torch.tensor([move == _UNMOVED for move in moves])
    loss, mse, named = _through(m, x * 2 - 1, sharp * 2 - 1, codes, still, two)
    if m.prior is not None:
        pictures, sharp_p, pairs, grids, clean = m.prior
        pick = rng.integers(len(pictures), size=max(1, batch // 2))
        moves_p = [random_move(rng) for _ in pick]
        x_p = torch.cat([warp(pictures[i : i + 1], *mv) for i, mv in zip(pick, moves_p, strict=True)])
        t_p = torch.cat([warp(sharp_p[i : i + 1], *mv) for i, mv in zip(pick, moves_p, strict=True)])
        keep = torch.tensor([mv == _UNMOVED for mv in moves_p]) & clean[pick]
        part, _, _ = _through(m, x_p.clamp(0, 1) * 2 - 1, t_p.clamp(0, 1) * 2 - 1, grids[pick], keep, pairs[pick])
        loss = loss + m.prior_weight * part
    if m.scene:
        xs = _to_tensor(scene_batch(rng, max(1, batch // 4))) * 2 - 1
        with torch.no_grad():
            codes_s = nearest_codes(m.first(xs), m.dec.codebook)
        part, _, _ = _through(m, xs, xs, codes_s, torch.ones(len(xs), dtype=torch.bool))
        loss = loss + m.scene * part
    return loss, mse, named


def _through(m: SimpleNamespace, x: torch.Tensor, target: torch.Tensor, codes: torch.Tensor, keep, two=None):
    """x encoded by the encoder in training, snapped and decoded: its loss against `target` (and off
    the blend of each picture's `two` colours), with the cross-entropy of its encoding against
    `codes` on the pictures `keep`; (loss, MSE, that cross-entropy)."""
    z = m.enc(x)
    zq = quantize_st(z, m.dec.codebook)
    rec = m.dec.decoder(m.dec.post_quant_conv(zq))
    loss = _reconstruction(rec, target, m.edge) + m.commitment * F.mse_loss(z, zq.detach())
    if two is not None:
        loss = loss + m.stray * stray_loss(rec, two[:, 0], two[:, 1])
    named = torch.zeros(())
    if m.codes and keep.any():
        flat = z[keep].movedim(1, -1).reshape(-1, z.shape[1])
        named = F.cross_entropy(-torch.cdist(flat, m.dec.codebook).pow(2) / CODE_TEMPERATURE, codes[keep].flatten())
    return loss + m.codes * named, F.mse_loss(rec.detach(), target), named.detach()


@torch.no_grad()
def _drawn_prior(dec, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """n code grids of the prior (`prior_grids`) as the decoder draws them, in [0, 1], the same
    pictures `snapped` to their two colours, in [0, 1], those two colours (n, 2, 3) in [-1, 1], the
    grids (n, 8, 8), and which pictures have no speck (n,)."""
    grids = prior_grids(n, seed)
    latents = dec.codebook[grids].movedim(-1, 1)
    drawn = torch.cat([dec(part).clamp(-1, 1) for part in latents.split(100)])
    sharp, pairs = snapped(drawn)
    clean = torch.tensor([not specks(a) for a in _to_uint8(drawn)])
    return drawn.add(1).div(2), sharp.add(1).div(2), pairs, grids, clean


@torch.no_grad()
def evaluate_moves(weights: Path, n: int = 300, seed: int = 321) -> dict:
    """The zoom video mode's round trip through the VQGAN in `weights`, on n world pictures of the
    training combinations and n of the held-out ones, moved as `moved_pictures` moves them: how
    many pictures carry a speck (`specks`) once encoded, snapped and decoded as they are
    ("round_trip"), moved ("moved"), and drawn by the VQGAN first, then moved ("drawn_moved", the
    zoom's case), with that last one's MSE against the sharp moved pictures; and the same for the
    decoder's pictures of prior grids of training captions without a speck ("prior_moved")."""
    from pixgen.drawers.vqgan import warp

    dec = load_decoder_safetensors(weights / "vqgan.safetensors")
    enc = load_encoder_safetensors(weights / "vqgan_encoder.safetensors")

    def again(x01: torch.Tensor) -> torch.Tensor:
        return torch.cat([dec(quantize_st(enc(part * 2 - 1), dec.codebook)) for part in x01.split(100)]).clamp(-1, 1)

    def moved(x01: torch.Tensor, moves: list) -> torch.Tensor:
        return torch.cat([warp(x01[i : i + 1], *m) for i, m in enumerate(moves)]).clamp(0, 1)

    def speckled(x: torch.Tensor) -> str:
        return f"{sum(bool(specks(a)) for a in _to_uint8(x))}/{len(x)}"

    found, rng = {}, np.random.default_rng(seed)
    for name, combos in (("training", world.TRAIN_COMBOS), ("held_out", world.HELD_OUT)):
        small, moves, sharp, _ = moved_pictures(rng, n, combos=combos)
        round_trip = again(small)
        last = again(moved(round_trip.add(1).div(2), moves))
        found[f"{name}_round_trip_with_a_speck"] = speckled(round_trip)
        found[f"{name}_moved_with_a_speck"] = speckled(again(moved(small, moves)))
        found[f"{name}_drawn_moved_with_a_speck"] = speckled(last)
        found[f"{name}_drawn_moved_mse"] = round(F.mse_loss(last, sharp * 2 - 1).item(), 5)
    pictures, _, _, _, clean = _drawn_prior(dec, n, seed)
    pictures = pictures[clean]
    found["prior_moved_with_a_speck"] = speckled(again(moved(pictures, [random_move(rng) for _ in pictures])))
    return found


def _world_loss(dec, enc, rng: np.random.Generator, batch: int, terms: SimpleNamespace):
    """A batch of world images of training combinations through the encoder and the decoder: the
    reconstruction terms, and the stray term off the blend of each image's two colours; (loss, MSE)."""
    images, combos, _ = world.batch(rng, batch)
    x = _to_tensor(images) * 2 - 1
    with torch.no_grad():
        zq = quantize_st(enc(x), dec.codebook)
    rec = dec.decoder(dec.post_quant_conv(zq))
    loss = _reconstruction(rec, x, terms.edge)
    if terms.stray:
        palette, names = _palette(), list(world.COLOURS)
        bg = palette[[names.index(c.background) for c in combos]]
        fg = palette[[names.index(c.colour) for c in combos]]
        loss = loss + terms.stray * stray_loss(rec, bg, fg)
    return loss, F.mse_loss(rec, x).detach()


def _prior_targets(
    dec, pool: int, seed: int, mixed: float, target: str = "snapped", find_specks: bool = False
) -> tuple[torch.Tensor, ...]:
    """`pool` grids of the shipped prior (the decoder keeps its codes) as latents, each decoded by
    `dec` as it is and `snapped` (or, for `target` "own", `despecked`): (latents, target pictures,
    their two colours, the masks of the pixels the target changed, and with `find_specks` the
    indices of the grids drawn with a speck, else none)."""
    grids = prior_grids(pool, seed, mixed=mixed)
    with torch.no_grad():
        latents = dec.codebook[grids].movedim(-1, 1)
        drawn = torch.cat([dec.eval()(part).clamp(-1, 1) for part in latents.split(100)])
    dec.train()
    pictures, pairs = snapped(drawn)
    if target == "own":
        pictures, masks = despecked(drawn)
    else:
        masks = torch.ones_like(drawn[:, :1], dtype=torch.bool)
    found = [i for i, a in enumerate(_to_uint8(drawn)) if specks(a)] if find_specks else []
    return latents, pictures, pairs, masks, torch.tensor(found, dtype=torch.long)


def _extra_loss(dec, enc, rng: np.random.Generator, batch: int, terms: SimpleNamespace) -> torch.Tensor | float:
    """finetune_decoder's terms beyond the world's images: half a batch of prior grids against
    their snapped pictures (and the stray term on them, with `prior_stray`), and a quarter batch of
    scenes of several subjects, reconstructed."""
    loss = 0.0
    if terms.prior is not None:
        latents, targets, pairs, masks, speckled = terms.prior
        pick = torch.from_numpy(rng.integers(len(targets), size=batch // 2))
        if terms.speck and len(speckled):  # half of them among the grids drawn with a speck
            pick[: len(pick) // 2] = speckled[torch.from_numpy(rng.integers(len(speckled), size=len(pick) // 2))]
        drawn = dec.decoder(dec.post_quant_conv(latents[pick]))
        own = _reconstruction(drawn, targets[pick], terms.edge)
        if terms.speck:  # the changed pixels alone, averaged over them
            mask = masks[pick].to(drawn.dtype)
            own = own + terms.speck * ((drawn - targets[pick]).pow(2) * mask).sum() / (3 * mask.sum()).clamp_min(1)
        if terms.prior_stray and terms.stray:  # off the blend of its two colours, as the world's images
            own = own + terms.stray * stray_loss(drawn, pairs[pick, 0], pairs[pick, 1])
        loss = loss + terms.prior_weight * own
    if terms.scene:
        xs = _to_tensor(scene_batch(rng, max(1, batch // 4))) * 2 - 1
        with torch.no_grad():
            zs = quantize_st(enc(xs), dec.codebook)
        loss = loss + terms.scene * _reconstruction(dec.decoder(dec.post_quant_conv(zs)), xs, terms.edge)
    return loss


def _save_decoder(dec, enc, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "vqgan.safetensors", dec, dec.arch, torch.float16)
    if out.resolve() != WEIGHTS_DIR.resolve():  # the pair travels together
        save_safetensors(out / "vqgan_encoder.safetensors", enc, dec.arch, torch.float16)


def _vqgan_parts(lr: float) -> SimpleNamespace:
    """The VQGAN being trained (encoder, decoder, quantiser), its discriminator and their
    optimisers, built in this order from torch's seeded stream."""
    from taming.modules.discriminator.model import NLayerDiscriminator, weights_init
    from taming.modules.vqvae.quantize import VectorQuantizer2

    arch = VQGAN_ARCH
    enc, dec = VQGANEncoder(arch), VQGANDecoder(arch)
    quant = VectorQuantizer2(arch.n_embed, arch.embed_dim, beta=0.25, legacy=False)
    disc = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=2)
    disc.apply(weights_init)
    params = [*enc.parameters(), *dec.parameters(), *quant.parameters()]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr / 2, betas=(0.5, 0.9))
    return SimpleNamespace(enc=enc, dec=dec, quant=quant, disc=disc, opt=opt, opt_d=opt_d)


def _vqgan_step(m: SimpleNamespace, x: torch.Tensor, step: int, adversarial: bool, disc_weight, edge_weight):
    """One training step on the batch `x` in [-1, 1]: (mse, discriminator loss or None, the
    encoder's output, the codes picked)."""
    z = m.enc(x)
    if step == 0:  # data-dependent init: codes start on real encoder outputs
        flat = z.detach().movedim(1, -1).reshape(-1, VQGAN_ARCH.embed_dim)
        pick = torch.randint(len(flat), (VQGAN_ARCH.n_embed,))
        m.quant.embedding.weight.data.copy_(flat[pick])
    zq, vq_loss, (_, _, idx) = m.quant(z)
    rec = m.dec.decoder(m.dec.post_quant_conv(zq))
    mse = F.mse_loss(rec, x)
    rec_loss = mse + F.l1_loss(rec, x) + edge_weight * F.l1_loss(_edges(rec), _edges(x))
    loss = rec_loss + vq_loss
    if adversarial:
        g_loss = -m.disc(rec).mean()
        loss = loss + disc_weight * _adaptive_weight(rec_loss, g_loss, m.dec.decoder.conv_out.weight) * g_loss
    m.opt.zero_grad(set_to_none=True)
    loss.backward()
    m.opt.step()
    d_loss = None
    if adversarial:
        d_loss = _hinge_d(m.disc(x), m.disc(rec.detach()))
        m.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        m.opt_d.step()
    return mse, d_loss, z, idx


def _restart_dead_codes(quant, usage: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, step: int, steps: int):
    """Count the codes used; every 25 steps (until 80% of them) restart those nobody used on
    this batch's encoder outputs."""
    usage += torch.bincount(idx.flatten(), minlength=VQGAN_ARCH.n_embed).float()
    if (step + 1) % 25 == 0 and step < 0.8 * steps:
        dead = (usage == 0).nonzero().flatten()
        if len(dead):
            flat = z.detach().movedim(1, -1).reshape(-1, VQGAN_ARCH.embed_dim)
            quant.embedding.weight.data[dead] = flat[torch.randint(len(flat), (len(dead),))]
        usage.zero_()


def _save_pruned_vqgan(enc, dec, out: Path, seed: int) -> int:
    """Save the decoder with only the codes the encoder uses, and the encoder (fp16); how many
    codes were kept."""

    arch = VQGAN_ARCH
    keep = _used_codes(enc, dec, np.random.default_rng(seed + 1))
    pruned = type(arch)(**{**arch.__dict__, "n_embed": len(keep)})
    small = VQGANDecoder(pruned)
    small.load_state_dict({**dec.state_dict(), "codebook": dec.codebook[keep]})
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "vqgan.safetensors", small, pruned, torch.float16)
    save_safetensors(out / "vqgan_encoder.safetensors", enc, pruned, torch.float16)
    return len(keep)


@torch.no_grad()
def _used_codes(enc, dec, rng: np.random.Generator, n: int = 2000) -> torch.Tensor:
    """Codes that the encoder picks for some world image: the others were never trained to
    decode to anything, so a latent that lands on them would draw noise. They are dropped."""

    used = torch.zeros(len(dec.codebook), dtype=torch.bool)
    for _ in range(n // 100):
        images, _, _ = world.batch(rng, 100, combos=world.ALL_COMBOS)
        used[nearest_codes(enc(_to_tensor(images) * 2 - 1), dec.codebook).unique()] = True
    return used.nonzero().flatten()


@torch.no_grad()
def evaluate_vqgan(weights: Path, per_combo: int = 5, seed: int = 123) -> dict:
    """Reconstruct rendered images of all 90 combinations (held-out ones included) through the
    shipped files: MSE in [-1, 1], how often the judge reads them right, off-palette pixels."""

    dec = load_decoder_safetensors(weights / "vqgan.safetensors")
    enc = load_encoder_safetensors(weights / "vqgan_encoder.safetensors")
    rng = np.random.default_rng(seed)
    combos = [c for c in world.ALL_COMBOS for _ in range(per_combo)]
    images = np.stack([world.sample(rng, c) for c in combos])
    x = _to_tensor(images) * 2 - 1
    rec = torch.cat([dec(quantize_st(enc(part), dec.codebook)) for part in x.split(90)]).clamp(-1, 1)
    arrays = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    right = sum(judge(a) == c for a, c in zip(arrays, combos, strict=True))
    off = sum(off_palette(a) for a in arrays)
    return {
        "rec_mse": round(F.mse_loss(rec, x).item(), 5),
        "judge_right": f"{right}/{len(combos)}",
        "off_palette_images": f"{off}/{len(combos)}",
    }


def _augment(crop_min: float = 0.7):
    """What the loop does to an image before CLIP sees it: a square crop of 0.7-1.0 of the side
    (roi-resized back to 64), flips, small affine moves, noise, and a little blur."""
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomResizedCrop((64, 64), scale=(crop_min**2, 1.0), ratio=(1.0, 1.0)),
        K.RandomHorizontalFlip(),
        K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="border"),
        K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.3),
        K.RandomGaussianNoise(mean=0.0, std=0.05, p=0.5),
    )


def junk_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Images that are not one flat shape of the palette on a flat background of the palette:
    an off-palette shape or background (a mix of two colours), two shapes, or blocky noise of
    palette colours (what random latent codes look like). They teach the CLIP that such images
    match no caption of the world, so the loop cannot settle on them."""
    names = list(world.COLOURS)
    pal = np.array([world.COLOURS[c] for c in names], np.float32)
    out = []
    for _ in range(n):
        combo = world.TRAIN_COMBOS[rng.integers(len(world.TRAIN_COMBOS))]
        kind = rng.integers(4)
        if kind <= 1:  # a shape or background colour halfway between two palette colours
            a, b = rng.choice(len(pal), 2, replace=False)
            mix = (pal[a] * (t := rng.uniform(0.3, 0.7)) + pal[b] * (1 - t)).astype(np.uint8)
            img = world.sample(rng, combo)
            mask = (img == np.array(world.COLOURS[combo.colour], np.uint8)).all(-1)
            img[mask if kind == 0 else ~mask] = mix
        elif kind == 2:  # two shapes
            img = world.sample(rng, combo)
            side = rng.uniform(*world.SIZE_RANGE)
            cx, cy = rng.uniform(side / 2, world.SIZE - side / 2, size=2)
            other = names[rng.integers(len(names))]
            img[world.shape_mask(world.SHAPES[rng.integers(3)], cx, cy, side)] = world.COLOURS[other]
        else:  # blocky noise of palette colours, 8x8 cells
            cells = pal[rng.integers(len(pal), size=(8, 8))].astype(np.uint8)
            img = cells.repeat(8, 0).repeat(8, 1)
        out.append(img)
    return np.stack(out)


# Captions of one or two of a picture's attributes, each group a classification of its own:
# the words of every attribute meet every other attribute's values in training, so a CLIP taught
# them reads the attributes of a combination it never saw (a held-out prompt) as it reads those
# of the ones it saw (the ranking of prior samples, issue 29). Every pair below occurs among the
# training combinations; no held-out caption is ever seen.
PART_GROUPS = (
    ("a {shape}", ("shape",)),
    ("something {colour}", ("colour",)),
    ("a {background} background", ("background",)),
    ("a {shape} on a {background} background", ("shape", "background")),
    ("something {colour} on a {background} background", ("colour", "background")),
)


def part_captions(combo: world.Combo) -> list[str]:
    """The caption of each of PART_GROUPS that `combo` answers to."""
    return [t.format(**{k: getattr(combo, k) for k in keys}) for t, keys in PART_GROUPS]


@functools.cache
def _part_classes() -> tuple[tuple[str, ...], ...]:
    """Each group's captions over the training combinations, sorted (the same every step)."""
    return tuple(tuple(sorted({part_captions(c)[g] for c in world.TRAIN_COMBOS})) for g in range(len(PART_GROUPS)))


def train_clip(
    steps: int,
    seed: int,
    out: Path,
    batch: int = 64,
    junk: int = 8,
    lr: float = 5e-4,
    log_every: int = 100,
    parts: float = 0.0,
    decoded: float = 0.0,
    pool: int = 6000,
    start: Path | None = None,
    judged: int = 0,
) -> dict:
    """A small open_clip model trained on image/caption pairs of the training combinations.

    Each step scores every image against the captions of *all* training combinations (one
    template per step), so every image meets each caption that differs from it in exactly one
    attribute (shape, colour or background swapped) as a negative, plus the usual in-batch
    text-to-image term. Images are augmented as the loop's cutouts are; a few junk images per
    batch (see `junk_images`) are labelled with their own caption. `parts` weighs a classification
    of each real image among the captions of each of PART_GROUPS; a share `decoded` of the steps
    sees its images as the shipped VQGAN gives them back (encoded, quantised, decoded): the
    pictures a prior start ranks (a pool of `pool`, made once). `start`: a CLIP file to go on
    training from; `judged` adds that many of the prior's own pictures to the pool, each labelled
    with what the world's pixel judge reads in it (`judged_samples`)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scorer = load_clip_file(CLIP_ARCH, start) if start else build_clip(CLIP_ARCH, seed=seed)
    model = scorer.model.float().train().requires_grad_(True)
    augment, pool = _augment(), _image_pool(rng, pool, judged, seed) if decoded else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    t0, loss = time.time(), torch.tensor(float("nan"))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, warmup=200)
        images, combos, _ = world.batch(rng, batch, unique=True)
        if pool is not None and rng.random() < decoded:
            pick = rng.integers(len(pool[0]), size=batch)
            images, combos = pool[0][pick], [pool[1][i] for i in pick]
        x = _to_tensor(np.concatenate([images, junk_images(rng, junk)]))
        img = F.normalize(model.encode_image((augment(x) - scorer.mean) / scorer.std), dim=-1)
        loss = _clip_loss(scorer, img, combos, int(rng.integers(len(world.TEMPLATES))))
        if parts:
            loss = loss + parts * _parts_loss(scorer, img[:batch], combos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"clip step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    scorer.model.eval()
    save_clip(out / "clip.safetensors", scorer)
    info = {"steps": steps, "seed": seed, "final_loss": round(loss.item(), 4), "seconds": round(time.time() - t0)}
    info |= {"parts": parts, "decoded": decoded, "start": str(start) if start else None, "judged": judged}
    info.update(evaluate_clip(out / "clip.safetensors"))
    return info


def _clip_loss(scorer, img: torch.Tensor, combos: list, template: int) -> torch.Tensor:
    """The full captions' terms: each image (the real ones, then the junk) against every training
    combination's caption in `template` and "noise", and text to image over the real ones."""
    model, batch = scorer.model, len(combos)
    classes = sorted({c.caption(template) for c in world.TRAIN_COMBOS}) + [JUNK_CAPTION]
    junk = [len(classes) - 1] * (len(img) - batch)
    labels = torch.tensor([classes.index(c.caption(template)) for c in combos] + junk)
    txt = F.normalize(model.encode_text(scorer.tokenizer(classes)), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (batch + junk, classes)
    # text -> image over the real images of the batch (two images may share a caption
    # when the template omits the background: they count as one target, spread evenly)
    real = logits[:batch].T[labels[:batch]]  # (batch, batch)
    same = (labels[:batch, None] == labels[None, :batch]).float()
    t2i = -(same / same.sum(1, keepdim=True) * real.log_softmax(1)).sum(1).mean()
    return F.cross_entropy(logits, labels) + t2i


def _parts_loss(scorer, img: torch.Tensor, combos: list) -> torch.Tensor:
    """Each image classified among each PART_GROUPS group's captions, the mean over groups."""
    model, groups = scorer.model, _part_classes()
    txt = F.normalize(model.encode_text(scorer.tokenizer([t for g in groups for t in g])), dim=-1)
    scale, losses, at = model.logit_scale.exp().clamp(max=100), [], 0
    for g, classes in enumerate(groups):
        labels = torch.tensor([classes.index(part_captions(c)[g]) for c in combos])
        losses.append(F.cross_entropy(scale * img @ txt[at : at + len(classes)].T, labels))
        at += len(classes)
    return torch.stack(losses).mean()


def _image_pool(rng: np.random.Generator, n: int, judged: int, seed: int) -> tuple[np.ndarray, list]:
    """What train_clip's `decoded` share of steps draws from: n VQGAN round trips of world
    images (`_decoded_pool`) and `judged` of the prior's pictures (`judged_samples`)."""
    images, combos = _decoded_pool(rng, n)
    if judged:
        more, read = judged_samples(judged, seed)
        images, combos = np.concatenate([images, more]), combos + read
    return images, combos


@torch.no_grad()
def judged_samples(n: int, seed: int) -> tuple[np.ndarray, list]:
    """Pictures that the shipped prior draws for captions of the training combinations
    (`prior_grids`, decoded by the shipped decoder; uint8) with what the pixel judge reads in
    them: the blobs, half-shapes and near-misses a prior start ranks, labelled by what they show
    rather than what was asked. Only pictures read as a training combination are kept, so no
    held-out combination is seen, not even by accident."""
    dec = load_decoder_safetensors(WEIGHTS_DIR / "vqgan.safetensors").eval()
    grids = prior_grids(n, seed)
    arrays = np.concatenate([_to_uint8(dec(dec.codebook[part].movedim(-1, 1))) for part in grids.split(100)])
    read = [judge(a) for a in arrays]
    keep = [i for i, c in enumerate(read) if c in world.TRAIN_COMBOS]
    return arrays[keep], [read[i] for i in keep]


@torch.no_grad()
def _decoded_pool(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list]:
    """n world images of training combinations as the shipped VQGAN gives them back (encoded,
    quantised to its codes, decoded; uint8), and their combinations: made once, since the round
    trip costs ten times a CLIP step."""
    enc = load_encoder_safetensors(WEIGHTS_DIR / "vqgan_encoder.safetensors").eval()
    dec = load_decoder_safetensors(WEIGHTS_DIR / "vqgan.safetensors").eval()
    images, combos, _ = world.batch(rng, n)
    parts = np.array_split(images, max(1, n // 100))
    return np.concatenate(
        [_to_uint8(dec(quantize_st(enc(_to_tensor(x) * 2 - 1), dec.codebook))) for x in parts]
    ), combos


@torch.no_grad()
def evaluate_clip(path: Path, per_combo: int = 10, seed: int = 123) -> dict:
    """Zero-shot over all 90 captions (template 0) on fresh images, through the shipped file:
    exact combination and shape accuracy, for held-out and training combinations."""

    scorer = load_clip_file(CLIP_ARCH, path)
    rng = np.random.default_rng(seed)
    txt = scorer.encode_text([c.caption(0) for c in world.ALL_COMBOS])
    result = {}
    for name, combos in (("held_out", world.HELD_OUT), ("train", world.TRAIN_COMBOS)):
        chosen = [c for c in combos for _ in range(per_combo)]
        x = _to_tensor(np.stack([world.sample(rng, c) for c in chosen]))
        pred = (scorer.encode_image(x) @ txt.T).argmax(1)
        got = [world.ALL_COMBOS[i] for i in pred]
        pairs = list(zip(got, chosen, strict=True))
        result[f"{name}_exact"] = round(100 * sum(g == c for g, c in pairs) / len(pairs), 1)
        result[f"{name}_shape"] = round(100 * sum(g.shape == c.shape for g, c in pairs) / len(pairs), 1)
    return result


def save_clip(path: Path, scorer) -> None:
    """fp16 safetensors; the token embedding keeps only the rows of the world's vocabulary."""
    from safetensors.torch import save_file

    captions = [c.caption(t) for c in world.ALL_COMBOS for t in range(len(world.TEMPLATES))] + [JUNK_CAPTION]
    captions += [t for c in world.ALL_COMBOS for t in part_captions(c)]
    ids = torch.unique(scorer.tokenizer(captions))
    sd = {k: v.detach().half().contiguous() for k, v in scorer.model.state_dict().items()}
    table = sd.pop("token_embedding.weight")
    sd["pixgen.token_ids"] = ids.to(torch.int32)
    sd["pixgen.token_rows"] = table[ids].contiguous()
    sd["pixgen.vocab_size"] = torch.tensor([table.shape[0]], dtype=torch.int32)
    save_file(sd, str(path), metadata={"pixgen_clip_arch": CLIP_ARCH})


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (low excluded with `low_open`)."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            where = (
                f"between {low:g} and {high:g}"
                if math.isfinite(high)
                else f"{'above' if low_open else 'at least'} {low:g}"
            )
            raise argparse.ArgumentTypeError(f"must be a finite number {where}, got {text!r}")
        return value

    return check


def _writable_dir(p: argparse.ArgumentParser, out: Path) -> None:
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} exists and is not a folder")
    probe = out if out.exists() else next((a for a in out.parents if a.exists()), Path("."))
    if not probe.is_dir() or not _can_write(probe):
        p.error(f"--out {out}: cannot write into {probe}")


def _can_write(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def _train(a: argparse.Namespace) -> dict:
    """The model `a.model`, trained as the command line asks; its training record."""
    if a.model == "vqgan":
        info = train_vqgan(a.steps or 6000, a.seed, a.out)
    elif a.model == "decoder":
        info = finetune_decoder(
            a.steps or 1500, a.seed, a.out, a.start, a.stray_weight, lr=a.lr or 2e-4,
            prior_weight=a.prior_weight, scene_weight=a.scene_weight, mixed=a.mixed, prior_stray=a.prior_stray,
            prior_target=a.prior_target, speck_weight=a.speck_weight,
        )  # fmt: skip
    elif a.model == "encoder":
        info = finetune_encoder(a.steps or 1000, a.seed, a.out, a.start, lr=a.lr or 1e-4, code_weight=a.code_weight)
    elif a.model == "prior":
        from pixgen.shapes.train_prior import train_prior

        info = train_prior(a.cond, a.steps or 4000, a.seed, a.out)
    else:
        info = train_clip(
            a.steps or 6000,
            a.seed,
            a.out,
            lr=a.lr or 5e-4,
            parts=a.parts,
            decoded=a.decoded,
            start=a.from_,
            judged=a.judged,
        )
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pixgen.shapes.train", description=__doc__)
    p.add_argument("model", choices=["vqgan", "decoder", "encoder", "clip", "prior"])
    p.add_argument("--cond", choices=["text", "clip"], default="clip", help="prior: what conditions it")
    p.add_argument("--steps", type=_positive, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--start", type=Path, default=WEIGHTS_DIR, help="decoder, encoder: the VQGAN pair to fine-tune")
    p.add_argument("--stray-weight", type=_number(0), default=0.0, help="decoder: weight of the stray-colour term")
    p.add_argument("--prior-weight", type=_number(0), default=0.0, help="decoder: weight of prior-drawn grids, snapped")
    p.add_argument("--scene-weight", type=_number(0), default=0.0, help="decoder: weight of scenes of several subjects")
    p.add_argument(
        "--mixed", type=_number(0, 1), default=0.0, help="decoder: share of prior grids drawn for two captions"
    )
    p.add_argument("--prior-stray", action="store_true", help="decoder: the stray term on prior grids too")
    p.add_argument(
        "--prior-target", choices=["snapped", "own"], default="snapped",
        help="decoder: a prior grid's target, its picture snapped to two colours or its own picture despecked",
    )  # fmt: skip
    p.add_argument(
        "--speck-weight", type=_number(0), default=0.0, help="decoder: weight of the despecked pixels' own error"
    )
    p.add_argument(
        "--lr", type=_number(0, low_open=True), default=None,
        help="decoder, encoder, clip: the learning rate (2e-4, 1e-4, 5e-4)",
    )  # fmt: skip
    p.add_argument(
        "--code-weight", type=_number(0), default=0.0, help="encoder: weight of the still pictures' codes by name"
    )
    p.add_argument("--parts", type=_number(0), default=0.0, help="clip: weight of the attribute captions' groups")
    p.add_argument("--decoded", type=_number(0, 1), default=0.0, help="clip: share of steps on VQGAN round trips")
    p.add_argument(
        "--judged", type=_positive, default=0, help="clip: prior pictures labelled by the judge, in that pool"
    )
    p.add_argument("--from", dest="from_", type=Path, default=None, help="clip: a CLIP file to go on training")
    a = p.parse_args(argv)
    _writable_dir(p, a.out)
    if a.judged and not a.decoded:
        p.error("--judged adds to the pool of --decoded: give --decoded too")
    if a.from_ is not None and not a.from_.is_file():
        p.error(f"--from {a.from_}: no such file")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        info = _train(a)
    except PixgenError as e:  # a damaged --from or --start file: one line
        p.exit(2, f"{p.prog}: error: {e}\n")
    name = f"prior_{a.cond}" if a.model == "prior" else a.model
    (a.out / f"{name}_train.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info), file=sys.stdout)


if __name__ == "__main__":
    main()
