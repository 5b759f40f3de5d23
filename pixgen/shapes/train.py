"""Train the shapes models: ``python -m pixgen.shapes.train vqgan|clip [--steps N] [--seed S]``.

Both are reproducible from the seed and take minutes on 2 CPU cores. Weights are written as
fp16 safetensors into pixgen/shapes/weights/ (or --out), ready to ship.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixgen.shapes import world
from pixgen.shapes.models import CLIP_ARCH, VQGAN_ARCH, WEIGHTS_DIR


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def _cosine_lr(step: int, steps: int, base: float, warmup: int = 50, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def train_vqgan(steps: int, seed: int, out: Path, batch: int = 16, lr: float = 1e-3, log_every: int = 100) -> dict:
    """An autoencoder of taming's Encoder/Decoder/VectorQuantizer2 on the world's images."""
    from taming.modules.vqvae.quantize import VectorQuantizer2

    from pixgen.vqgan import VQGANDecoder, VQGANEncoder, save_safetensors

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    arch = VQGAN_ARCH
    enc, dec = VQGANEncoder(arch), VQGANDecoder(arch)
    quant = VectorQuantizer2(arch.n_embed, arch.embed_dim, beta=0.25, legacy=False)
    params = [*enc.parameters(), *dec.parameters(), *quant.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    usage = torch.zeros(arch.n_embed)
    t0, mse = time.time(), float("nan")
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr)
        images, _, _ = world.batch(rng, batch)
        x = _to_tensor(images) * 2 - 1
        z = enc(x)
        if step == 0:  # data-dependent init: codes start on real encoder outputs
            flat = z.detach().movedim(1, -1).reshape(-1, arch.embed_dim)
            pick = (
                torch.randperm(len(flat))[: arch.n_embed]
                if len(flat) >= arch.n_embed
                else torch.randint(len(flat), (arch.n_embed,))
            )  # tiny batches (tests) reuse vectors
            quant.embedding.weight.data.copy_(flat[pick])
        zq, vq_loss, (_, _, idx) = quant(z)
        rec = dec(zq)
        mse = F.mse_loss(rec, x)
        loss = mse + F.l1_loss(rec, x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(idx.flatten(), minlength=arch.n_embed).float()
        if (step + 1) % 25 == 0 and step < 0.8 * steps:  # restart codes nobody used
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                flat = z.detach().movedim(1, -1).reshape(-1, arch.embed_dim)
                pick = torch.randint(len(flat), (len(dead),))
                quant.embedding.weight.data[dead] = flat[pick]
            usage.zero_()
        if log_every and (step + 1) % log_every == 0:
            print(f"vqgan step {step + 1}/{steps} mse {mse.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    dec.codebook.copy_(quant.embedding.weight.detach())
    enc_state = {"codebook": quant.embedding.weight.detach()} if arch.kind == "gumbel" else {}
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "vqgan.safetensors", dec, arch, torch.float16)
    enc.load_state_dict({**enc.state_dict(), **enc_state})
    save_safetensors(out / "vqgan_encoder.safetensors", enc, arch, torch.float16)
    return {"steps": steps, "seed": seed, "final_mse": mse.item(), "seconds": time.time() - t0}


def _clip_augment():
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomResizedCrop((64, 64), scale=(0.5, 1.0), ratio=(0.8, 1.25)),
        K.RandomHorizontalFlip(),
        K.RandomGaussianNoise(mean=0.0, std=0.03, p=0.5),
    )


def train_clip(steps: int, seed: int, out: Path, batch: int = 64, lr: float = 5e-4, log_every: int = 100) -> dict:
    """Contrastive training of a small open_clip model on image/caption pairs.

    Each batch holds distinct combinations, so every image has negatives that differ from it
    in a single attribute (hard negatives: colour, shape, background or their swap).
    """
    from pixgen.scorer import build_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scorer = build_clip(CLIP_ARCH, seed=seed)
    model = scorer.model.train().requires_grad_(True)
    augment = _clip_augment()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    t0, loss = time.time(), torch.tensor(float("nan"))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, warmup=100)
        images, _, captions = world.batch(rng, batch, unique=True)
        x = augment(_to_tensor(images))
        img = F.normalize(model.encode_image((x - scorer.mean) / scorer.std), dim=-1)
        txt = F.normalize(model.encode_text(scorer.tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        labels = torch.arange(len(captions))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"clip step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_clip(out / "clip.safetensors", scorer)
    return {"steps": steps, "seed": seed, "final_loss": loss.item(), "seconds": time.time() - t0}


def save_clip(path: Path, scorer) -> None:
    """fp16 safetensors; the token embedding keeps only the rows of the world's vocabulary."""
    from safetensors.torch import save_file

    captions = [c.caption(t) for c in world.ALL_COMBOS for t in range(len(world.TEMPLATES))]
    ids = torch.unique(scorer.tokenizer(captions))
    sd = {k: v.detach().half().contiguous() for k, v in scorer.model.state_dict().items()}
    table = sd.pop("token_embedding.weight")
    sd["pixgen.token_ids"] = ids.to(torch.int32)
    sd["pixgen.token_rows"] = table[ids].contiguous()
    sd["pixgen.vocab_size"] = torch.tensor([table.shape[0]], dtype=torch.int32)
    save_file(sd, str(path), metadata={"pixgen_clip_arch": CLIP_ARCH})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pixgen.shapes.train", description=__doc__)
    p.add_argument("model", choices=["vqgan", "clip"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    a = p.parse_args(argv)
    if a.model == "vqgan":
        info = train_vqgan(a.steps or 2500, a.seed, a.out)
    else:
        info = train_clip(a.steps or 2500, a.seed, a.out)
    print(info)


if __name__ == "__main__":
    main()
