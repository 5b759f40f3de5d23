"""The real pretrained architectures, with random weights, load offline through the same code
path a download takes (files in the cache folder -> conversion -> decoder-only safetensors)."""

from __future__ import annotations

import pytest
import torch

from pixgen.models.loading import load_decoder
from pixgen.models.scorer import build_clip, load_clip
from pixgen.models.vqgan import IMAGENET_F16_DDCONFIG, VQGANArch
from tests.conftest import taming_state_dict, write_taming

pytestmark = pytest.mark.slow

F16 = IMAGENET_F16_DDCONFIG
F8_GUMBEL = dict(F16, ch_mult=[1, 1, 2, 4], attn_resolutions=[32])

REAL = {
    "vqgan_imagenet_f16_16384": (VQGANArch("vq", 256, 16384, F16), False),
    "vqgan_gumbel_f8_8192": (VQGANArch("gumbel", 256, 8192, F8_GUMBEL), False),
    "sflckr": (VQGANArch("vq", 256, 1024, F16, prefix="first_stage_model."), True),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_vqgan_replica_imports_and_decodes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path))
    arch, net2net = REAL[name]
    folder = tmp_path / "vqgan" / name
    folder.mkdir(parents=True)
    sd = taming_state_dict(arch, prefix=arch.prefix)
    if net2net:  # the GPT beside the first stage is never built
        sd["transformer.tok_emb.weight"] = torch.zeros(1024, 8)
        sd["cond_stage_model.encoder.conv_in.weight"] = torch.zeros(1)
    cfg, ckpt = write_taming(folder, arch, net2net=net2net, sd=sd, name="model")
    ckpt.rename(folder / "last.ckpt")
    dec = load_decoder(name)
    assert dec.codebook.shape == (arch.n_embed, arch.embed_dim)
    assert torch.equal(dec.codebook, sd[arch.prefix + arch.codebook_key])
    with torch.no_grad():
        out = dec(torch.randn(1, 256, 2, 3))
    assert out.shape == (1, 3, 2 * arch.factor, 3 * arch.factor)
    assert (folder / "decoder.safetensors").is_file() and (folder / "encoder.safetensors").is_file()


def test_vit_b_32_local_checkpoint_loads(tmp_path):
    ref = build_clip("ViT-B-32", seed=1)
    path = tmp_path / "vit-b-32.pt"
    torch.save(ref.model.state_dict(), path)
    scorer = load_clip(f"ViT-B-32:{path}")
    assert scorer.input_size == 224
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(scorer.encode_image(x), ref.encode_image(x), atol=1e-5)
    assert scorer.encode_text(["a cat"]).shape == (1, 512)
