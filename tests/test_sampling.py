"""--init prior and `pixgen sample` (pixgen.prior.start, pixgen.apps.sample) on the tiny smoke models with a
small random prior over the tiny VQGAN's codes, written and read as a real prior file."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.prior.model import Prior, PriorArch, save_prior
from tests.conftest import SMOKE


def _prior_file(tmp_path, n_codes: int = 64, cond: str = "clip", name: str = "prior.safetensors"):
    arch = PriorArch(
        vocab_size=n_codes, block_size=2 + 15, n_layer=1, n_head=2, n_embd=16, n_codes=n_codes, grid=(4, 4),
        cond=cond, cond_len=2 if cond == "clip" else 0, clip_dim=32 if cond == "clip" else 0,
    )  # fmt: skip
    torch.manual_seed(0)
    prior = Prior(arch)
    with torch.no_grad():
        prior.head.weight.normal_(0, 1.0)  # peaked enough that samples differ in their codes
    save_prior(tmp_path / name, prior, torch.float32)
    return tmp_path / name


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_sample_keeps_the_best_k_ranked_and_each_reproduces(cli, tmp_path):
    prior = _prior_file(tmp_path)
    out = tmp_path / "out"
    code, stdout, _ = cli(
        "sample", "a red cat", *SMOKE, "--prior", prior, "--prior-samples", "5", "--keep", "3", "-o", out,
        "--seed", "3", "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(stdout)
    run_dir = tmp_path / report["run_dir"]
    kept = report["kept"]
    assert [k["rank"] for k in kept] == [1, 2, 3]
    assert [k["loss"] for k in kept] == sorted(k["loss"] for k in kept)
    assert len({k["sample"] for k in kept}) == 3
    for name in ("sample-1.png", "sample-3.png", "scores.json", "index.html", "contact_sheet.png", "run.json"):
        assert (run_dir / name).is_file()
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["samples"] == 5 and "text embedding" in scores["condition"]
    code, stdout, _ = cli("reproduce", run_dir / "sample-2.png", "-o", tmp_path / "again", "--json")
    assert code == 0
    again = json.loads(stdout)["image"]
    assert np.array_equal(_pixels(again), _pixels(run_dir / "sample-2.png"))
    assert not np.array_equal(_pixels(run_dir / "sample-1.png"), _pixels(run_dir / "sample-2.png"))


def test_init_prior_starts_from_the_best_sample_and_seeds_differ(tmp_path):
    from pixgen.api import generate
    from pixgen.settings import load_settings

    prior = _prior_file(tmp_path)
    starts = []
    for seed in (1, 2):
        sets = ["init=prior", f"prior={prior}", "prior_samples=4", "iterations=0", f"seed={seed}"]
        s = load_settings("smoke", overrides={"prompt": "a red cat", "output_dir": str(tmp_path)}, sets=sets)
        result = generate(s)
        record = json.loads((result.run_dir / "run.json").read_text())
        assert record["start"]["rank"] == 1 and len(record["start"]["losses"]) == 4
        assert record["start"]["losses"] == sorted(record["start"]["losses"])
        starts.append(_pixels(result.image))
    assert not np.array_equal(*starts)


def test_a_story_prompt_conditions_the_prior_on_its_first_phrase(tmp_path):
    from pixgen.api import prepare
    from pixgen.prior.start import condition_for, load_run_prior
    from pixgen.settings import load_settings

    prior = _prior_file(tmp_path)
    s = load_settings("smoke", overrides={"prompt": "a red cat ^ a blue dog"}, sets=["init=prior", f"prior={prior}"])
    run = prepare(s)
    value = condition_for(load_run_prior(run), run).value
    first = torch.nn.functional.normalize(run.models.scorers[0].encode_text(["a red cat"]).float(), dim=-1)
    assert torch.allclose(value, first, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--prior-samples", "0"), "'prior_samples'"),
        (("--prior-samples", "2", "--set", "prior_rank=3"), "'prior_rank'"),
        (("--prior", "{missing}"), "not found"),
        (("--prior", "{corrupt}"), "unreadable"),
        (("--prior", "{mismatch}"), "codebook has 64"),
        (("--prior", "{prior}", "--prior-guidance", "2"), "classifier-free guidance"),
    ],
)
def test_bad_prior_input_is_one_line_and_exit_2(cli, tmp_path, args, needle):
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file" * 4)
    files = {
        "missing": tmp_path / "missing.safetensors",
        "corrupt": tmp_path / "corrupt.safetensors",
        "mismatch": _prior_file(tmp_path, n_codes=128, name="big.safetensors"),
        "prior": _prior_file(tmp_path, cond="none", name="plain.safetensors"),
    }
    args = [a.format(**files) for a in args]
    for command in (["sample", "a cat"], ["a cat", "--init", "prior"]):
        code, _, err = cli(*command, *SMOKE, *args, "-o", tmp_path / "out")
        assert code == 2, err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sample_needs_the_vqgan_drawer(cli, tmp_path):
    code, _, err = cli("sample", "a cat", *SMOKE, "--drawer", "pixel")
    assert code == 2 and "--drawer vqgan" in err


def test_keep_more_than_drawn_is_refused(cli, tmp_path):
    prior = _prior_file(tmp_path)
    code, _, err = cli("sample", "a cat", *SMOKE, "--prior", prior, "--prior-samples", "2", "--keep", "3")
    assert code == 2 and "--keep" in err


def _tiny_cin_prior(tmp_path, monkeypatch) -> list:
    """A small prior in taming's cin layout at tmp_path/cin.safetensors; returns the list that
    collects every condition the prior start hands to `sample`."""
    from pixgen.prior import start as sampler

    conditions = []

    def spy(prior, cond, *args, **kw):
        conditions.append(cond.clone())
        return real(prior, cond, *args, **kw)

    real = sampler.sample
    monkeypatch.setattr(sampler, "sample", spy)

    arch = PriorArch(
        vocab_size=1000, block_size=16, n_layer=1, n_head=2, n_embd=16, n_codes=64, grid=(4, 4), cond="class",
        cond_len=1,
    )  # fmt: skip
    torch.manual_seed(0)
    save_prior(tmp_path / "cin.safetensors", Prior(arch), torch.float32)
    return conditions


def test_a_class_conditional_prior_draws_the_named_class(tmp_path, monkeypatch):
    """taming's cin layout (the class a token of the codes' own table, one condition position),
    small: --prior-class is the condition the prior draws from, and run.json says which."""
    from pixgen.api import generate
    from pixgen.prior.classes import class_index
    from pixgen.settings import load_settings

    conditions = _tiny_cin_prior(tmp_path, monkeypatch)
    sets = ["init=prior", f"prior={tmp_path / 'cin.safetensors'}", "prior_samples=2", "iterations=0", "seed=1"]
    sets.append("prior_class=tabby cat")
    s = load_settings("smoke", overrides={"prompt": "a cat", "output_dir": str(tmp_path)}, sets=sets)
    record = json.loads((generate(s).run_dir / "run.json").read_text())
    assert "'tabby cat' (--prior-class)" in record["start"]["condition"]
    tabby = class_index("tabby cat")
    assert tabby == 281 and [c.tolist() for c in conditions] == [[[tabby]]]  # the class token reached the prior


def test_a_class_conditional_prior_records_the_classes_it_drew(cli, tmp_path, monkeypatch):
    """Without --prior-class each sample's class is drawn from CLIP's top k (--prior-class-top-k):
    the prior is given one class per sample, and run.json and scores.json say which, with the
    candidates' probabilities; each kept image's class is the one its sample was drawn for."""
    from pixgen.outputs.writer import read_png_metadata
    from pixgen.prior import classes as prior_classes

    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prior_classes, "imagenet_templates", lambda: ["a photo of a {}."])  # 1000 texts, not 80,000
    conditions = _tiny_cin_prior(tmp_path, monkeypatch)
    code, stdout, err = cli(
        "sample", "a goldfish", *SMOKE, "--prior", tmp_path / "cin.safetensors", "--prior-samples", "6",
        "--keep", "3", "--prior-class-top-k", "3", "--seed", "2", "-o", tmp_path / "out", "--json",
    )  # fmt: skip
    assert code == 0, err
    run_dir = tmp_path / json.loads(stdout)["run_dir"]
    scores = json.loads((run_dir / "scores.json").read_text())
    candidates, drawn = scores["class_candidates"], scores["classes_drawn"]
    assert len(candidates) == 3 and sum(c["probability"] for c in candidates) == pytest.approx(1)
    assert [c.tolist() for c in conditions] == [[[d] for d in drawn]]  # each sample's class reached the prior
    assert len(drawn) == 6 and set(drawn) <= {c["index"] for c in candidates}
    for kept in scores["kept"]:
        assert kept["class"]["index"] == drawn[kept["sample"]]
    record = read_png_metadata(run_dir / "sample-2.png")["start"]
    assert record["class"] == scores["kept"][1]["class"] and record["classes_drawn"] == drawn


def test_the_speck_free_ranking_puts_the_samples_with_a_speck_after_the_rest(tmp_path):
    from pixgen.api import clip_terms, make_run_drawer, prepare
    from pixgen.loop.specks import speck_count
    from pixgen.prior.start import draw_and_rank
    from pixgen.runtime.device import seed_everything
    from pixgen.settings import load_settings

    picks = {}
    for free in (False, True):
        prompt = {"prompt": "a green square on a yellow background", "seed": 0, "output_dir": str(tmp_path)}
        s = load_settings(preset="shapes", overrides=prompt, sets=[f"prior_speck_free={free}"])
        run = prepare(s)
        drawer = make_run_drawer(run)
        ranked = draw_and_rank(run, drawer, clip_terms(run), seed_everything(0))
        with torch.no_grad():
            speckled = {i for i in range(16) if speck_count(drawer.render(ranked.starts[i])[0].clamp(0, 1))}
        by_loss = sorted(range(16), key=ranked.losses.__getitem__)
        picks[free] = ranked.order[0]
        if free:
            assert ranked.order == [i for i in by_loss if i not in speckled] + [i for i in by_loss if i in speckled]
            assert ranked.record("shapes", 1)["ranked_last_for_a_speck"] == len(speckled) < 16
        else:
            assert ranked.order == by_loss and by_loss[0] in speckled  # the best by loss has a speck
    assert picks[True] != picks[False]
