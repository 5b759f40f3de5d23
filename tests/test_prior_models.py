"""Real priors with random weights: taming's ImageNet class-conditional transformer at its real
width, heads, vocabulary and sequence (2 of its 48 layers), written as taming's Lightning
checkpoint, read safely, converted once and loaded; the classes chosen by CLIP, one drawn per
sample from its top k."""

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
    draw_classes,
    encode_texts,
    imagenet_classes,
    top_classes,
)
from pixgen.prior.conditions import condition_for
from pixgen.prior.model import KVCache, Prior, PriorArch, Sampling, sample
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


# Issue 29: each sample's class drawn from CLIP's top k, in proportion to CLIP's probabilities.
ONE_TEMPLATE = ["a photo of a {}."]
PROMPT = "a goldfish in a pond"


def test_top_classes_renormalise_the_softmax_over_the_k_best():
    scores = torch.tensor([1.0, 4.0, 2.5, 3.0, -1.0])
    top, probs = top_classes(scores, 3)
    assert top.tolist() == [1, 3, 2]
    every = scores.softmax(0)[top]
    assert torch.allclose(probs, every / every.sum())
    assert top_classes(scores, 1)[0].tolist() == [1] and top_classes(scores, 1)[1].tolist() == [1.0]
    assert len(top_classes(scores, 50)[0]) == 5


def test_drawn_classes_follow_their_probabilities():
    top, probs = torch.tensor([7, 3, 9]), torch.tensor([0.5, 0.3, 0.2])
    drawn = draw_classes(top, probs, 20000, torch.Generator().manual_seed(0))
    freq = torch.stack([(drawn == c).float().mean() for c in top])
    assert torch.allclose(freq, probs, atol=0.014)  # 4 standard deviations of a frequency at n=20000
    assert torch.equal(drawn, draw_classes(top, probs, 20000, torch.Generator().manual_seed(0)))
    assert not torch.equal(drawn[:50], draw_classes(top, probs, 50, torch.Generator().manual_seed(1)))


def test_one_candidate_draws_nothing_from_the_generator():
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert draw_classes(torch.tensor([4]), torch.tensor([1.0]), 3, g).tolist() == [4, 4, 4]
    assert torch.equal(g.get_state(), state)


def _small_grid(cin) -> Prior:
    """The cin replica drawing 4x4 grids (its first 17 of 257 positions): the same weights and
    class condition, 16x fewer tokens to draw."""
    prior, _ = cin
    with torch.device("meta"):
        small = Prior(PriorArch(**dict(REAL["arch"], n_layer=LAYERS, grid=[4, 4])))
    small.load_state_dict(prior.state_dict(), assign=True)
    return small.eval().requires_grad_(False)


def test_each_sample_is_drawn_for_its_own_class(cin):
    prior, greedy = _small_grid(cin), Sampling(top_k=1)  # greedy: a grid is its class's likeliest codes
    g = torch.Generator().manual_seed(0)
    together = sample(prior, torch.tensor([[3], [7], [3]]), 3, g, greedy, batch=2)  # a batch split across classes
    three, seven = (sample(prior, class_condition(c), 1, g, greedy)[0] for c in (3, 7))
    assert not torch.equal(three, seven)
    assert torch.equal(together[0], three) and torch.equal(together[1], seven) and torch.equal(together[2], three)
    with pytest.raises(ValueError, match="1 or 3 samples"):
        sample(prior, torch.tensor([[3], [7]]), 3, g, greedy)


@pytest.fixture
def class_run(monkeypatch):
    """run(**settings): a smoke run (its tiny CLIP) for the prompt PROMPT; the class matrix from
    one template (1000 texts, not 80,000)."""
    from pixgen.api import prepare
    from pixgen.prior import classes as prior_classes
    from pixgen.settings import load_settings

    monkeypatch.setattr(prior_classes, "imagenet_templates", lambda: list(ONE_TEMPLATE))
    return lambda **sets: prepare(load_settings("smoke", overrides=dict(prompt=PROMPT, **sets)))


def _clips_top(scorer, k: int) -> tuple[list[int], torch.Tensor]:
    """CLIP's k best classes for PROMPT and their probabilities, worked out here: the softmax of
    the cosine similarities at CLIP's logit scale, renormalised over the k."""
    cos = class_embeddings(scorer, imagenet_classes(), ONE_TEMPLATE) @ encode_texts(scorer, [PROMPT])[0]
    probs = (scorer.model.logit_scale.exp() * cos).softmax(0)
    top = probs.topk(k)
    return top.indices.tolist(), top.values / top.values.sum()


def test_seeds_draw_different_classes_from_clips_top_k(cin, class_run):
    run, prior = class_run(), cin[0]
    assert run.settings.prior_class_top_k == 5  # the default
    want, want_probs = _clips_top(run.models.scorers[0], 5)
    cond = condition_for(prior, run, None, 8, torch.Generator().manual_seed(0))
    assert [i for i, _, _ in cond.candidates] == want
    probs = torch.tensor([p for _, _, p in cond.candidates])
    assert torch.allclose(probs, want_probs, atol=1e-5) and probs.max() < 0.5  # close scores
    assert cond.value.shape == (8, 1) and cond.value[:, 0].tolist() == cond.drawn
    drawn = [condition_for(prior, run, None, 8, torch.Generator().manual_seed(s)).drawn for s in range(4)]
    assert drawn[0] == cond.drawn  # a seed reproduces its classes
    assert len({tuple(d) for d in drawn}) == 4  # and other seeds draw others
    assert set(sum(drawn, [])) <= set(want) and len(set(sum(drawn, []))) > 1
    many = condition_for(prior, run, None, 5000, torch.Generator().manual_seed(1)).drawn
    freq = torch.tensor([many.count(c) / len(many) for c in want])
    assert torch.allclose(freq, probs, atol=0.03)  # 4 standard deviations of a frequency at n=5000


def test_top_k_1_is_clips_top_class_and_the_codes_of_before(cin, class_run):
    """With one class, no class is drawn: the generator gives the codes it gave before issue 29
    (CLIP's top class for every sample)."""
    run, prior = class_run(prior_class_top_k=1), _small_grid(cin)
    [best], _ = _clips_top(run.models.scorers[0], 1)
    g = torch.Generator().manual_seed(3)
    cond = condition_for(prior, run, None, 2, g)
    assert cond.value.tolist() == [[best]] and cond.drawn is None and "CLIP's pick" in cond.text
    codes = sample(prior, cond.value, 2, g, Sampling())
    assert torch.equal(codes, sample(prior, class_condition(best), 2, torch.Generator().manual_seed(3), Sampling()))


def test_prior_class_fixes_the_class_whatever_the_top_k(cin, class_run, monkeypatch):
    from pixgen.prior import conditions

    monkeypatch.setattr(conditions, "class_scores", lambda *a, **k: pytest.fail("CLIP asked"))
    run = class_run(prior_class="tabby cat", prior_class_top_k=5)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    cond = condition_for(cin[0], run, None, 8, g)
    assert cond.value.tolist() == [[281]] and cond.drawn is None and torch.equal(g.get_state(), state)
    assert cond.record(3) == {
        "class_candidates": [{"index": 281, "name": "tabby cat", "probability": 1.0}],
        "class": {"index": 281, "name": "tabby cat"},
    }


def test_the_first_class_choice_reports_its_progress_and_a_cached_one_none(cin, class_run, tmp_path, monkeypatch):
    """A CLIP's first class choice embeds its class prompts (minutes would look like a hang): the
    status line counts them up to all of them; from the cache it says nothing more."""
    from pixgen.phases import Hooks, Phase

    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    heard = []
    hooks = Hooks(on_phase=lambda phase, text: heard.append((phase, text)))
    condition_for(_small_grid(cin), class_run(), hooks, 1, torch.Generator().manual_seed(0))
    counts = [t for p, t in heard if p is Phase.PRIOR_CLASS and "embedded" in t]
    assert len(counts) >= 4 and "1000/1000 embedded" in counts[-1]  # 1000 texts in batches of 256
    heard.clear()
    condition_for(
        _small_grid(cin), class_run(), hooks, 1, torch.Generator().manual_seed(0)
    )  # a fresh CLIP, same weights
    assert [p for p, _ in heard] == [Phase.PRIOR_CLASS]
