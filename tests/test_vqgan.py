import argparse
import os

import pytest
import torch
import yaml

from pixgen.errors import PixgenError
from pixgen.models.checkpoints import load_torch_file
from pixgen.models.vqgan import (
    TINY_ARCH,
    VQGANArch,
    load_decoder_safetensors,
    load_vqgan,
    read_config,
    save_safetensors,
)
from tests.conftest import taming_state_dict, write_taming

GUMBEL_ARCH = VQGANArch(kind="gumbel", embed_dim=32, n_embed=48, ddconfig=dict(TINY_ARCH.ddconfig))


def test_loads_taming_checkpoint_and_decodes(tiny_files):
    cfg, ckpt = tiny_files
    dec = load_vqgan(cfg, ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(dec.codebook, sd["quantize.embedding.weight"])
    assert torch.equal(dec.decoder.conv_out.weight, sd["decoder.conv_out.weight"])
    assert not hasattr(dec, "encoder")  # decoder only
    out = dec(torch.randn(1, 32, 4, 6))
    assert out.shape == (1, 3, 8, 12)


def test_read_config_factor_and_kind(tiny_files):
    arch = read_config(tiny_files[0])
    assert (arch.kind, arch.factor, arch.n_embed) == ("vq", 2, 64)


@pytest.mark.parametrize("arch, net2net", [(GUMBEL_ARCH, False), (TINY_ARCH, True)])
def test_gumbel_and_net2net_layouts_load(tmp_path, arch, net2net):
    cfg, ckpt = write_taming(tmp_path, arch, net2net=net2net)
    dec = load_vqgan(cfg, ckpt)
    assert dec.codebook.shape == (arch.n_embed, arch.embed_dim)
    assert dec(torch.randn(1, 32, 2, 2)).shape == (1, 3, 4, 4)


def test_missing_decoder_key_is_refused(tmp_path):
    sd = taming_state_dict(TINY_ARCH)
    del sd["decoder.conv_out.bias"]
    cfg, ckpt = write_taming(tmp_path, sd=sd)
    with pytest.raises(PixgenError, match="missing.*decoder.conv_out.bias"):
        load_vqgan(cfg, ckpt)


def test_extra_decoder_key_is_refused(tmp_path):
    sd = taming_state_dict(TINY_ARCH)
    sd["decoder.extra.weight"] = torch.zeros(1)
    cfg, ckpt = write_taming(tmp_path, sd=sd)
    with pytest.raises(PixgenError, match="unexpected.*decoder.extra.weight"):
        load_vqgan(cfg, ckpt)


def test_wrong_shape_is_refused(tmp_path):
    sd = taming_state_dict(TINY_ARCH)
    sd["quantize.embedding.weight"] = torch.zeros(10, 32)
    cfg, ckpt = write_taming(tmp_path, sd=sd)
    with pytest.raises(PixgenError, match="shape"):
        load_vqgan(cfg, ckpt)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    cfg, _ = write_taming(tmp_path)
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": taming_state_dict(TINY_ARCH), "callbacks": _Payload(marker)}, ckpt)
    with pytest.raises(PixgenError, match="refusing to load.*system"):
        load_vqgan(cfg, ckpt)
    assert not marker.exists()


def test_lightning_style_pickled_objects_become_inert(tmp_path):
    """Real taming checkpoints pickle hyper-parameters and callbacks; they load as placeholders."""
    cfg, _ = write_taming(tmp_path)
    ckpt = tmp_path / "lightning.ckpt"
    hparams = argparse.Namespace(lr=4.5e-6, base="configs/custom.yaml")
    torch.save({"state_dict": taming_state_dict(TINY_ARCH), "hyper_parameters": hparams}, ckpt)
    data = load_torch_file(ckpt)
    assert not isinstance(data["hyper_parameters"], argparse.Namespace)  # a placeholder
    assert load_vqgan(cfg, ckpt).codebook.shape == (64, 32)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    cfg, _ = write_taming(tmp_path)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(PixgenError):
        load_vqgan(cfg, bad)


def test_missing_files_name_the_path(tmp_path, tiny_files):
    with pytest.raises(PixgenError, match="nope.ckpt"):
        load_vqgan(tiny_files[0], tmp_path / "nope.ckpt")
    with pytest.raises(PixgenError, match="nope.yaml"):
        load_vqgan(tmp_path / "nope.yaml", tiny_files[1])


def test_unsupported_target_is_refused(tmp_path, tiny_files):
    cfg = tmp_path / "other.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"target": "some.Other", "params": {}}}))
    with pytest.raises(PixgenError, match="unsupported model target"):
        load_vqgan(cfg, tiny_files[1])


def test_safetensors_round_trip(tmp_path, tiny_files):
    dec = load_vqgan(*tiny_files)
    save_safetensors(tmp_path / "d.safetensors", dec, dec.arch)
    again = load_decoder_safetensors(tmp_path / "d.safetensors")
    z = torch.randn(1, 32, 3, 3)
    assert torch.equal(dec(z), again(z))


def _attn_arch():
    import dataclasses

    from pixgen.models.vqgan import TINY_ARCH

    dd = dict(TINY_ARCH.ddconfig, attn_resolutions=[32], ch_mult=[1, 2, 2], resolution=64)
    return dataclasses.replace(TINY_ARCH, ddconfig=dd)


@pytest.mark.parametrize("low_memory", [False, True])
def test_decoder_forward_and_gradient_match_taming(low_memory):
    """Our forward (one-op SiLU, SDPA attention, optional checkpointing) is taming's function."""
    from pixgen.models.vqgan import VQGANDecoder

    torch.manual_seed(0)
    dec = VQGANDecoder(_attn_arch()).eval().requires_grad_(False)
    assert any(len(up.attn) for up in dec.decoder.up)  # attention is exercised
    dec.checkpoint_levels = 3 if low_memory else 0
    z = torch.randn(1, dec.arch.embed_dim, 8, 8, requires_grad=True)
    ours = dec(z)
    (g_ours,) = torch.autograd.grad(ours.square().mean(), z)
    ref = dec.decoder(dec.post_quant_conv(z))
    (g_ref,) = torch.autograd.grad(ref.square().mean(), z)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, atol=1e-6, rtol=1e-4)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while `fn()` runs (each storage once)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


@pytest.mark.parametrize(
    ("dtype", "norms", "less"),
    [
        (torch.float32, "recompute", 0.9),
        (torch.bfloat16, "recompute", 0.8),
        (torch.bfloat16, "bf16", 0.9),
        (torch.float32, "auto", 0.9),  # the default recomputes in float32
        (torch.bfloat16, "auto", 0.9),
    ],
)
def test_lighter_norms_give_the_same_gradient_and_keep_less(dtype, norms, less):
    """GroupNorm keeping its bf16 input or GroupNorm + SiLU made again in backward from the
    input and the statistics: the same image and gradient as autograd's own (float32) or the
    float32 island of before (bf16), here bit for bit, with less kept for backward (issue 32)."""
    from pixgen.models.vqgan import VQGANDecoder

    torch.manual_seed(0)
    dec = VQGANDecoder(_attn_arch()).eval().requires_grad_(False).cast(dtype)
    z = torch.randn(1, dec.arch.embed_dim, 8, 8)
    runs = []
    for way in ("fp32", norms):
        dec.norms = way
        leaf = z.clone().requires_grad_(True)
        image, kept = _saved_bytes(lambda leaf=leaf: dec(leaf))
        (grad,) = torch.autograd.grad(image.square().mean(), leaf)
        runs.append((image, grad, kept))
    (image0, grad0, kept0), (image1, grad1, kept1) = runs
    assert torch.equal(image0, image1) and torch.equal(grad0, grad1)
    assert kept1 < less * kept0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "autocast"])
def test_frozen_convolutions_keep_nothing_of_their_input_and_give_the_same_gradient(dtype):
    """A convolution whose weights are not trained keeps nothing of its input for backward
    (`_FrozenConv`): the same image and latent gradient as autograd's own convolution, bit for
    bit, with far less kept (issue 32: 590 -> 322 MB at 256x256 in bf16 on the f16 replica)."""
    from pixgen.models.vqgan import VQGANDecoder

    torch.manual_seed(0)
    autocast = dtype == "autocast"  # fp32 weights under autocast, as fp16 runs on CUDA (bf16 here)
    dec = VQGANDecoder(_attn_arch()).eval().requires_grad_(False).cast(torch.float32 if autocast else dtype)
    z = torch.randn(1, dec.arch.embed_dim, 8, 8)
    runs = []
    for lean in (False, True):
        dec.lean_convs = lean
        leaf = z.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            image, kept = _saved_bytes(lambda leaf=leaf: dec(leaf))
        (grad,) = torch.autograd.grad(image.square().mean(), leaf)
        runs.append((image, grad, kept))
    (image0, grad0, kept0), (image1, grad1, kept1) = runs
    assert torch.equal(image0, image1) and torch.equal(grad0, grad1)
    assert kept1 < 0.7 * kept0


def test_a_trained_decoder_still_gets_its_weight_gradients():
    """Training (the shapes decoder's fine-tune) needs the convolutions' weight gradients: a
    convolution whose weights are trained goes through autograd's own."""
    from pixgen.models.vqgan import VQGANDecoder

    torch.manual_seed(0)
    dec = VQGANDecoder(_attn_arch()).train()
    z = torch.randn(1, dec.arch.embed_dim, 8, 8, requires_grad=True)
    dec(z).square().mean().backward()
    grads = [p.grad for p in dec.decoder.parameters()]
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads[:3])
