"""The prior over VQGAN codes (pixgen.prior.model): taming's layout, the cache, sampling, files."""

import sys
import types

import pytest
import torch

from pixgen.errors import PixgenError
from pixgen.prior.model import (
    KVCache,
    Prior,
    PriorArch,
    Sampling,
    code_loss,
    filter_logits,
    load_prior,
    sample,
    save_prior,
)


def _arch(cond="class", **kw):
    base = dict(vocab_size=40, block_size=17, n_layer=2, n_head=4, n_embd=32, n_codes=32, grid=(4, 4))
    if cond == "class":
        base.update(cond="class", cond_len=1)
    elif cond == "clip":
        base.update(cond="clip", cond_len=2, clip_dim=8, block_size=18)
    elif cond == "text":
        base.update(cond="text", cond_len=3, cond_offset=32, null_token=39, block_size=19)
    return PriorArch(**{**base, **kw})


def _random(prior: Prior, seed: int = 0) -> Prior:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return prior.eval()


@pytest.fixture
def taming_gpt(monkeypatch):
    """taming's own GPT class. Its module imports a helper that transformers removed; a stand-in
    for that one name lets it import (the GPT's forward does not use it)."""
    stub = types.ModuleType("transformers")
    stub.top_k_top_p_filtering = None
    monkeypatch.setitem(sys.modules, "transformers", stub)
    monkeypatch.delitem(sys.modules, "taming.modules.transformer.mingpt", raising=False)
    from taming.modules.transformer.mingpt import GPT

    return GPT


def test_taming_checkpoint_layout_loads_and_gives_the_same_logits(taming_gpt, tmp_path):
    gpt = taming_gpt(vocab_size=40, block_size=17, n_layer=2, n_head=4, n_embd=32).eval()
    _random(gpt, 1)
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in gpt.state_dict().items()}}, tmp_path / "x.ckpt")
    sd = torch.load(tmp_path / "x.ckpt", weights_only=True)["state_dict"]
    from pixgen.prior.model import build_prior

    prior = build_prior(_arch(), {k.removeprefix("transformer."): v for k, v in sd.items()}, "test")
    idx = torch.randint(0, 40, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(gpt(idx)[0], prior(idx), atol=1e-5)
        emb = torch.randn(3, 2, 32)  # taming's `embeddings` prefix
        assert torch.allclose(gpt(idx[:, :15], embeddings=emb)[0], prior(idx[:, :15], emb), atol=1e-5)


@pytest.mark.parametrize("cond", ["class", "clip", "text"])
def test_cached_forward_equals_a_full_recompute(cond):
    prior = _random(Prior(_arch(cond)))
    a = prior.arch
    g = torch.Generator().manual_seed(0)
    if cond == "clip":
        c = torch.randn(2, a.clip_dim, generator=g)
    else:
        c = torch.randint(0, 40, (2, a.cond_len), generator=g)
    codes = torch.randint(0, a.n_codes, (2, a.tokens), generator=g)
    with torch.no_grad():
        full = prior(codes[:, :-1], prior.condition(c))
        cache = KVCache(a, 2, "cpu", torch.float32)
        parts = [prior(codes[:, :3], prior.condition(c), cache)]
        parts += [prior(codes[:, i : i + 1], None, cache) for i in range(3, a.tokens - 1)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_sampling_is_seeded_batched_and_in_the_code_range():
    prior = _random(Prior(_arch()))
    cond = torch.tensor([[3]])
    one = sample(prior, cond, 6, torch.Generator().manual_seed(5), batch=6)
    again = sample(prior, cond, 6, torch.Generator().manual_seed(5), batch=6)
    other = sample(prior, cond, 6, torch.Generator().manual_seed(6), batch=6)
    assert one.shape == (6, 4, 4) and torch.equal(one, again) and not torch.equal(one, other)
    assert one.min() >= 0 and one.max() < 32  # class tokens beyond the codes are never drawn
    assert len({tuple(x.flatten().tolist()) for x in one}) > 1  # samples of one batch differ


def test_filter_logits_keeps_top_k_and_the_top_p_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.allclose(filter_logits(logits, temperature=2.0), logits / 2)


def _overfit(cond: str, steps: int = 150) -> Prior:
    """A tiny prior trained until each of two conditions gives its own fixed grid."""
    torch.manual_seed(0)
    prior = Prior(_arch(cond))
    grids = torch.stack([torch.arange(16) % 32, (torch.arange(16) * 7 + 3) % 32])
    conds = torch.tensor([[1.0] * 8, [-1.0] * 8]) if cond == "clip" else torch.tensor([[33, 34, 35], [36, 37, 38]])
    opt = torch.optim.Adam(prior.parameters(), 3e-3)
    for i in range(steps):
        c = conds.clone()
        if i % 5 == 0:  # the dropped condition of classifier-free guidance
            c = prior.null_condition(2, "cpu")
        loss = code_loss(prior, c, grids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prior.eval(), grids, conds


@pytest.mark.parametrize("cond", ["clip", "text"])
def test_a_trained_prior_draws_what_its_condition_asks_with_and_without_guidance(cond):
    prior, grids, conds = _overfit(cond)
    for k in range(2):
        for how in (Sampling(temperature=0.5), Sampling(temperature=0.5, guidance=3.0)):
            got = sample(prior, conds[k : k + 1], 4, torch.Generator().manual_seed(k), how)
            assert (got.flatten(1) == grids[k]).float().mean() > 0.9


def test_guidance_of_one_is_plain_sampling():
    prior = _random(Prior(_arch("text")))
    cond = torch.tensor([[33, 34, 35]])
    plain = sample(prior, cond, 3, torch.Generator().manual_seed(1))
    same = sample(prior, cond, 3, torch.Generator().manual_seed(1), Sampling(guidance=1.0))
    assert torch.equal(plain, same)


@pytest.mark.parametrize("cond", ["clip", "text"])
def test_guided_sampling_follows_the_guided_logits(cond):
    """Near-zero temperature makes sampling greedy; the guided draw must be the argmax of
    uncond + g * (cond - uncond), recomputed here without the cache, and differ from the plain one."""
    prior = _random(Prior(_arch(cond)), 3)
    a = prior.arch
    c = (
        torch.randn(1, a.clip_dim, generator=torch.Generator().manual_seed(2))
        if cond == "clip"
        else torch.tensor([[33, 34, 35]])
    )
    with torch.no_grad():
        both = torch.cat([prior.condition(c), prior.condition(prior.null_condition(1, "cpu"))])

        def greedy(g):
            codes = torch.empty(1, 0, dtype=torch.long)
            for _ in range(a.tokens):
                logits = prior(codes.repeat(2, 1), both)[:, -1, : a.n_codes]
                logits = logits[1:] + g * (logits[:1] - logits[1:])
                codes = torch.cat([codes, logits.argmax(-1, keepdim=True)], 1)
            return codes.view(1, *a.grid)

        want, plain = greedy(4.0), greedy(1.0)
    assert not torch.equal(want, plain)  # guidance changes the draw of this prior
    how = Sampling(temperature=1e-4, guidance=4.0)
    assert torch.equal(sample(prior, c, 1, torch.Generator().manual_seed(0), how), want)
    assert torch.equal(sample(prior, c, 1, torch.Generator().manual_seed(0), Sampling(temperature=1e-4)), plain)


def test_prior_files_round_trip_and_refuse_bad_ones(tmp_path):
    prior = _random(Prior(_arch("clip")))
    save_prior(tmp_path / "p.safetensors", prior, torch.float32, extra={"pixgen_prior_clip": "shapes"})
    back = load_prior(tmp_path / "p.safetensors", n_codes=32)
    assert back.arch == prior.arch
    assert all(torch.equal(a, b) for a, b in zip(prior.state_dict().values(), back.state_dict().values(), strict=True))
    with pytest.raises(PixgenError, match="codebook has 1024"):
        load_prior(tmp_path / "p.safetensors", n_codes=1024)
    with pytest.raises(PixgenError, match="not found"):
        load_prior(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(PixgenError, match="unreadable"):
        load_prior(tmp_path / "bad.safetensors")


def test_the_shapes_prior_training_is_reproducible_from_its_seed(tmp_path):
    from safetensors.torch import load_file

    from pixgen.shapes.train_prior import train_prior

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        report = train_prior("clip", 3, 7, tmp_path / name, images=24, batch=8, held=8)
    assert report["steps"] == 3 and report["held_out_loss"] > 0
    a, b = (load_file(str(tmp_path / n / "prior_clip.safetensors")) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from pixgen.prior.model import load_prior

    assert load_prior(tmp_path / "a" / "prior_clip.safetensors", n_codes=1024).arch.cond == "clip"
