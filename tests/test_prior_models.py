"""Real priors with random weights: taming's ImageNet class-conditional transformer at its real
width, heads, vocabulary and sequence (2 of its 48 layers), written as taming's Lightning
checkpoint, read safely, converted once and loaded; the class chosen by CLIP."""

from __future__ import annotations

import argparse
import copy
import sys
import types

import pytest
import torch

from pixgen import needs
from pixgen.errors import PixgenError
from pixgen.models import cache as weights
from pixgen.prior import registry as prior_models
from pixgen.prior.classes import (
    choose_classes,
    class_condition,
    class_embeddings,
    class_index,
    encode_texts,
    imagenet_classes,
)
from pixgen.prior.model import KVCache, Prior, PriorArch
from pixgen.prior.registry import load_prior_model, prior_for_vqgan

SHIPPED = weights.registry()
REAL = SHIPPED["priors"]["cin_transformer"]
LAYERS = 2  # of 48: every other dimension is the real one
CIN = PriorArch(**dict(REAL["arch"], n_layer=LAYERS))


def _registry() -> dict:
    reg = copy.deepcopy(SHIPPED)
    reg["priors"]["cin_transformer"]["arch"]["n_layer"] = LAYERS
    return reg


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIXGEN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "registry", _registry)
    monkeypatch.setattr(prior_models, "registry", _registry)


def _taming_gpt_class():
    """taming's own GPT class, imported with a stand-in for the transformers helper its module
    imports (removed from transformers; the GPT's forward does not use it), as in test_prior."""
    with pytest.MonkeyPatch.context() as mp:
        stub = types.ModuleType("transformers")
        stub.top_k_top_p_filtering = None
        mp.setitem(sys.modules, "transformers", stub)
        mp.delitem(sys.modules, "taming.modules.transformer.mingpt", raising=False)
        from taming.modules.transformer.mingpt import GPT
    return GPT


@pytest.fixture(scope="module")
def taming_cin(tmp_path_factory):
    """(gpt, checkpoint path): a random cin replica built from taming's own mingpt.GPT and taming's
    checkpoint of it, with the first stage, taming's attention masks (the GPT's own buffers),
    optimizer state and a pickled hyper-parameter object."""
    torch.manual_seed(0)
    gpt = _taming_gpt_class()(CIN.vocab_size, CIN.block_size, LAYERS, CIN.n_head, CIN.n_embd)
    gpt = gpt.eval().requires_grad_(False)
    with torch.no_grad():
        gpt.pos_emb.normal_(0, 0.02)
    sd = {f"transformer.{k}": v for k, v in gpt.state_dict().items()}
    assert f"transformer.blocks.{LAYERS - 1}.attn.mask" in sd
    sd["first_stage_model.quantize.embedding.weight"] = torch.randn(16384, 256)
    sd["first_stage_model.decoder.conv_out.weight"] = torch.randn(3, 128, 3, 3)
    ckpt = tmp_path_factory.mktemp("cin") / "last.ckpt"
    torch.save(
        {
            "state_dict": sd,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 4.5e-6}]}],
            "hyper_parameters": argparse.Namespace(n_layer=48),  # a non-tensor object: the safe reader's placeholder
            "epoch": 3,
        },
        ckpt,
    )
    return gpt, ckpt


@pytest.fixture(scope="module")
def cin(taming_cin):
    """(prior, checkpoint path): the taming checkpoint's weights in a pixgen Prior (sharing the
    GPT's tensors), the reference of the conversion and cache tests."""
    gpt, ckpt = taming_cin
    with torch.device("meta"):
        prior = Prior(CIN)
    sd = {k: v for k, v in gpt.state_dict().items() if not k.endswith(".attn.mask")}
    prior.load_state_dict(sd, assign=True)
    return prior.eval().requires_grad_(False), ckpt


def _codes(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 16384, (2, n), generator=torch.Generator().manual_seed(1))


def _logits(prior: Prior, cls: int = 3, n: int = 8) -> torch.Tensor:
    with torch.no_grad():
        return prior(_codes(n), prior.condition(class_condition(cls).expand(2, 1)))


def _put_in_cache(ckpt) -> None:
    folder = weights.cache_dir() / "prior" / "cin_transformer"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").symlink_to(ckpt)


def test_taming_checkpoint_loads_safely_with_the_same_logits(taming_cin):
    gpt, ckpt = taming_cin
    loaded = load_prior_model(str(ckpt), n_codes=16384)
    assert loaded.arch == CIN
    # taming's Net2NetTransformer: the class token (at cond_offset 0) leads the codes into the GPT
    idx = torch.cat([class_condition(3).expand(2, 1), _codes()], 1)
    with torch.no_grad():
        want = gpt(idx)[0]
    assert torch.allclose(_logits(loaded, 3), want, atol=1e-4)


def test_registry_prior_converts_once_to_fp16_and_drops_the_checkpoint(cin, cli):
    prior, ckpt = cin
    _put_in_cache(ckpt)
    statuses = []
    loaded = load_prior_model("cin_transformer", 16384, on_status=statuses.append)
    out = weights.cache_dir() / "prior" / "cin_transformer" / "prior.safetensors"
    assert out.is_file() and not (out.parent / "last.ckpt").exists()
    assert "preparing prior cin_transformer…" in statuses
    for k, v in prior.state_dict().items():  # fp16 rounding and nothing else
        assert torch.equal(loaded.state_dict()[k], v.half().float()), k
    assert (_logits(loaded) - _logits(prior)).abs().max() < 1e-2  # logits spread about 1
    again = load_prior_model("cin_transformer", 16384, dtype=torch.bfloat16)  # no checkpoint needed now
    assert again.arch == CIN and {p.dtype for p in again.parameters()} == {torch.bfloat16}
    code, out_text, _ = cli("models", "list", "--json")
    row = next(r for r in __import__("json").loads(out_text) if r["name"] == "cin_transformer")
    assert (row["licence"], row["cached"]) == ("MIT", "yes")


def test_cached_sampling_steps_equal_a_full_recompute(cin):
    prior, _ = cin
    codes, cond = _codes(6), prior.condition(class_condition(7).expand(2, 1))
    cache = KVCache(CIN, 2, "cpu", torch.float32)
    with torch.no_grad():
        step = prior(torch.empty(2, 0, dtype=torch.long), cond, cache)[:, -1]
        for i in range(codes.shape[1]):
            full = prior(codes[:, :i], cond)[:, -1]
            assert torch.allclose(step, full, atol=1e-4), i
            step = prior(codes[:, i : i + 1], None, cache)[:, -1]


def test_models_list_shows_the_prior_and_its_licence(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("models", "list")
    line = next(x for x in out.splitlines() if "cin_transformer" in x)
    assert code == 0 and "MIT" in line and "no" in line and "prior (class)" in line
    code, out, _ = cli("models", "info", "cin_transformer")
    assert code == 0 and "vqgan_imagenet_f16_16384" in out and "2 layers, width 1536, 24 heads" in out


def test_missing_prior_offline_names_the_file_and_the_command(monkeypatch, cli):
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    with pytest.raises(PixgenError, match=r"prior 'cin_transformer' is not cached.*prior.safetensors.*models download"):
        load_prior_model("cin_transformer", 16384)
    with pytest.raises(PixgenError, match=r"prior cin_transformer \(~6000 MB\).*download .*cin_transformer"):
        needs.check_models("tiny", [], prior="cin_transformer")
    code, _, err = cli("models", "download", "cin_transformer")
    assert code == 2 and "cin_transformer" in err and "Traceback" not in err


def test_vocabulary_mismatch_and_bad_files_are_one_line(cin, tmp_path):
    prior, ckpt = cin
    with pytest.raises(PixgenError, match="draws 16384 codes but the VQGAN's codebook has 1024"):
        load_prior_model(str(ckpt), n_codes=1024)
    with pytest.raises(PixgenError, match="cin_transformer draws 16384 codes but the VQGAN's codebook has 1024"):
        load_prior_model("cin_transformer", 1024)  # before anything is downloaded
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(PixgenError, match="unreadable"):
        load_prior_model(str(bad), 16384)
    with pytest.raises(PixgenError, match="not found"):
        load_prior_model(str(tmp_path / "absent.safetensors"), 16384)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PixgenError, match="not a readable torch checkpoint"):
        load_prior_model(str(junk), 16384)
    vqgan_only = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": {"decoder.conv_out.weight": torch.zeros(3, 3)}}, vqgan_only)
    with pytest.raises(PixgenError, match="no taming transformer"):
        load_prior_model(str(vqgan_only), 16384)
    with pytest.raises(PixgenError, match="unknown prior 'nope'.*cin_transformer"):
        load_prior_model("nope", 16384)


def test_a_corrupt_cached_prior_says_how_to_fetch_it_again():
    folder = weights.cache_dir() / "prior" / "cin_transformer"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(PixgenError, match=r"not a readable torch checkpoint.*delete .*last.ckpt and run"):
        load_prior_model("cin_transformer", 16384)
    (folder / "prior.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(PixgenError, match=r"unreadable.*delete it and run `pixgen models download cin_transformer`"):
        load_prior_model("cin_transformer", 16384)


def test_a_checkpoint_of_other_shapes_is_refused(tmp_path):
    small = Prior(PriorArch(**dict(REAL["arch"], n_layer=1, n_embd=48, n_head=2)))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in small.state_dict().items()}}, path)
    with pytest.raises(PixgenError, match="matches no known prior"):
        load_prior_model(str(path), 16384)


def test_the_prior_that_goes_with_a_vqgan():
    assert prior_for_vqgan("vqgan_imagenet_f16_16384") == "cin_transformer"
    assert prior_for_vqgan("imagenet_f16_16384") == "cin_transformer"  # an alias
    assert prior_for_vqgan("vqgan_imagenet_f16_1024") is None
    assert prior_for_vqgan("shapes") == "shapes"


def test_class_names_and_numbers():
    assert len(imagenet_classes()) == 1000
    assert class_index("goldfish") == 1 == class_index(" GoldFish ") == class_index("1")
    assert class_condition(1).tolist() == [[1]]
    with pytest.raises(PixgenError, match="close: goldfish"):
        class_index("goldfsh")
    with pytest.raises(PixgenError, match="out of range"):
        class_index("1000")
    with pytest.raises(PixgenError, match="unknown ImageNet class"):
        class_index("zzzzqqq")


@pytest.fixture(scope="module")
def tiny_clip():
    from pixgen.models.scorer import build_clip

    return build_clip("pixgen-tiny", seed=0)


CLASSES = imagenet_classes()[:24]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "a {} in the wild."]


def test_cutting_the_padding_gives_clips_own_text_embeddings(tiny_clip):
    texts = [t.replace("{}", c) for c in CLASSES[:5] for t in TEMPLATES]
    assert torch.allclose(encode_texts(tiny_clip, texts), tiny_clip.encode_text(texts), atol=1e-5)


def test_choose_classes_returns_the_top_k_sorted_and_caches_the_matrix(tiny_clip, monkeypatch):
    top = choose_classes(tiny_clip, ["a goldfish", "a pond"], [1.0, 0.5], k=5, classes=CLASSES, templates=TEMPLATES)
    assert len(top) == 5 and len({i for i, _, _ in top}) == 5
    probs = [p for _, _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(CLASSES[i] == name for i, name, _ in top)
    from pixgen.models.scorer import build_clip
    from pixgen.prior import classes as prior_classes

    monkeypatch.setattr(prior_classes, "_embed_classes", lambda *a, **k: pytest.fail("embedded again"))
    again = choose_classes(tiny_clip, ["a goldfish", "a pond"], [1.0, 0.5], k=5, classes=CLASSES, templates=TEMPLATES)
    assert again == top  # from memory
    fresh = build_clip("pixgen-tiny", seed=0)  # another process's scorer: from the disk cache
    assert torch.equal(class_embeddings(fresh, CLASSES, TEMPLATES), class_embeddings(tiny_clip, CLASSES, TEMPLATES))
    other = build_clip("pixgen-tiny", seed=1)  # the same name, other weights: never the stale matrix
    with pytest.raises(pytest.fail.Exception):
        class_embeddings(other, CLASSES, TEMPLATES)


def test_choose_classes_needs_a_positive_prompt(tiny_clip):
    with pytest.raises(PixgenError, match="positive weight"):
        choose_classes(tiny_clip, ["a cat"], [-1.0], classes=CLASSES, templates=TEMPLATES)


TINY = dict(
    vocab_size=40, block_size=17, n_layer=1, n_head=2, n_embd=16, n_codes=32, grid=[4, 4], cond="class", cond_len=1
)


def test_models_download_fetches_converts_and_lists_a_prior(cli, tmp_path, monkeypatch):
    from tests.test_weights import _Server

    prior = Prior(PriorArch(**TINY))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in prior.state_dict().items()}}, ckpt)
    server = _Server({"/tiny.ckpt": ckpt.read_bytes()})
    try:
        reg = _registry()
        reg["priors"]["tiny_prior"] = dict(
            REAL, vqgan="tiny", arch=TINY, ckpt=[server.url + "/gone.ckpt", server.url + "/tiny.ckpt"]
        )
        monkeypatch.setattr(weights, "registry", lambda: reg)
        monkeypatch.setattr(prior_models, "registry", lambda: reg)
        code, out, err = cli("models", "download", "tiny_prior")
    finally:
        server.close()
    assert code == 0, err
    path = weights.cache_dir() / "prior" / "tiny_prior" / "prior.safetensors"
    assert out.strip() == f"tiny_prior: {path}" and not (path.parent / "last.ckpt").exists()
    assert "prior/tiny_prior/last.ckpt" in weights._known_hashes()  # trust on first use, as for VQGANs
    assert torch.equal(load_prior_model("tiny_prior", 32).tok_emb.weight, prior.tok_emb.weight.half().float())
    assert prior_for_vqgan("tiny") == "tiny_prior"


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"transformer.tok_emb.weight": torch.zeros(2, 2)}, "callbacks": _Payload()}, path)
    with pytest.raises(PixgenError, match="refusing to load"):
        load_prior_model(str(path), 16384)
