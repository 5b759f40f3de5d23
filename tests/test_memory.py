"""The memory estimate, the levers a budget chooses and the refusals (issue 32)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixgen import api
from pixgen.errors import PixgenError
from pixgen.runtime.memory import (
    LEVER_CHOICES,
    LOW_MEMORY,
    Levers,
    choose_levers,
    cpu_chunk,
    library_bytes,
    prior_batch,
    prior_bytes,
)
from pixgen.settings import load_settings, parse_bytes

ROOT = Path(__file__).resolve().parents[1]
PEAK = """
import json, sys, torch
from pixgen import api
from pixgen.settings import load_settings
def high_water():  # this process image's peak RSS (ru_maxrss keeps the parent's across a vfork and exec)
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024
libraries = high_water()
s = load_settings("smoke", overrides=dict(prompt="a cat", output_dir=sys.argv[2], **json.loads(sys.argv[1])))
run = api.prepare(s)
levers, _ = api.run_levers(run.settings, run.models, run.device)
need = api.memory_need(run.settings, run.models, torch.device("cpu"), libraries=False)(levers)
api.generate(s, models=run.models)
peak = high_water()
print(json.dumps({"peak": peak, "estimate": need + libraries, "libraries": libraries}))
"""


def _peak_and_estimate(tmp_path, **settings) -> dict:
    """A whole run of the tiny models in a fresh process: its peak RSS and the estimate of it, the
    libraries counted as this process holds them (their resident share varies by hundreds of MB with
    the install and the page cache: a fresh venv maps more of torch than one whose pages were evicted)."""
    env = {"PYTHONPATH": str(ROOT), "PIXGEN_BF16_SPEEDUP": "1.0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, json.dumps(settings), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the smoke preset: 64x64, cutn 4
        {"size": [256, 256], "cutn": 32, "iterations": 2, "precision": "fp32"},
        {"size": [256, 256], "cutn": 32, "iterations": 2, "low_memory": True, "precision": "fp32"},
    ],
)
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak from /proc (Linux)")
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(tmp_path, settings):
    got = _peak_and_estimate(tmp_path, **settings)
    assert 0.75 * got["peak"] <= got["estimate"] <= 1.25 * got["peak"], got


def test_a_budget_picks_the_fastest_levers_that_fit():
    sizes = {lv: 1000 - 100 * i for i, (lv, _) in enumerate(LEVER_CHOICES)}  # each lever set lighter, slower
    assert choose_levers(sizes.__getitem__, 10_000) == LEVER_CHOICES[0]
    assert choose_levers(sizes.__getitem__, 850)[0] == LEVER_CHOICES[2][0]
    assert choose_levers(sizes.__getitem__, 100) is None
    costs = [c for _, c in LEVER_CHOICES]
    assert costs == sorted(costs) and LOW_MEMORY in dict(LEVER_CHOICES)


def _tiny(**kw):
    from pixgen.models.loading import load_models

    s = load_settings("smoke", overrides=dict(prompt="a cat", **kw))
    return s, load_models("tiny", "tiny", torch.device("cpu"))


def test_the_estimate_counts_the_libraries_of_torchs_build(monkeypatch):
    # torch's CUDA build holds its CUDA libraries resident on a CPU too; its CPU build does not
    s, models = _tiny()
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    cuda_build = api.memory_need(s, models, cpu)(Levers())
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu_build = api.memory_need(s, models, cpu)(Levers())
    assert cuda_build - cpu_build == library_bytes(True) - library_bytes(False) > 250 * 2**20


def test_the_levers_follow_the_budget_and_low_memory():
    s, models = _tiny(size=[256, 256], cutn=32)
    cpu = torch.device("cpu")
    need = api.memory_need(s, models, cpu)
    assert api.run_levers(s, models, cpu) == (Levers(), 1.0)  # no budget on a CPU: none
    assert api.run_levers(api.replace(s, low_memory=True), models, cpu)[0] == LOW_MEMORY
    assert need(LOW_MEMORY) < need(Levers(1, 8)) < need(Levers())
    between = (need(Levers()) + need(Levers(clip_chunk=16))) // 2
    budget = api.replace(s, memory_budget=f"{between / 2**20:.0f}M")
    levers, cost = api.run_levers(budget, models, cpu)
    assert levers != Levers() and need(levers) <= between and cost > 1


def test_a_cpu_run_scores_clip_in_halves_where_all_at_once_keeps_too_much():
    # ViT-B/32 keeps about 44 MB per cutout in float32 and 22 MB in bf16; a ViT-L/14 about 600 MB
    assert cpu_chunk(Levers(), 32, 44 * 2**20) == Levers(clip_chunk=16)
    assert cpu_chunk(Levers(), 32, 22 * 2**20) == Levers()
    assert cpu_chunk(Levers(), 64, 22 * 2**20) == Levers(clip_chunk=32)
    assert cpu_chunk(Levers(), 32, 600 * 2**20) == Levers(clip_chunk=1)
    assert cpu_chunk(Levers(1, 8), 32, 44 * 2**20) == Levers(1, 8)  # a chunk chosen stays


def test_a_cpu_run_takes_the_chunks_into_its_levers_estimate_and_terms(monkeypatch):
    from pixgen.runtime import memory

    s, models = _tiny(size=[256, 256], cutn=32)
    run = api.prepare(s, models)
    per_cutout = models.dtype.itemsize * sum(scorer.activation_floats() for scorer in models.scorers)
    need = api.memory_need(run.settings, models, torch.device("cpu"))
    all_at_once, eight = need(Levers()), need(Levers(clip_chunk=8))
    monkeypatch.setattr(memory, "CLIP_AT_ONCE", 8 * per_cutout)  # as if CLIP were a large one
    levers, cost = api.run_levers(run.settings, models, run.device)
    assert levers == Levers(clip_chunk=8) and cost == 1.0
    assert need(Levers()) == eight < all_at_once
    assert all(term.chunk == 8 for term in api.clip_terms(run))
    assert "CLIP 8 cutouts at a time" in api.memory_status(run.settings, models, run.device)
    assert api.run_levers(run.settings, models, torch.device("meta"))[0] == Levers()  # only on a CPU


def test_a_budget_too_small_is_refused_before_the_run_naming_the_least(tmp_path):
    s = load_settings("smoke", overrides=dict(prompt="a cat", memory_budget="100M", output_dir=str(tmp_path / "o")))
    with pytest.raises(PixgenError, match=r"setting 'memory_budget'.*needs at least about .* GiB.*--memory-budget"):
        api.generate(s)
    assert not (tmp_path / "o").exists()


def test_the_memory_status_line_names_the_estimate_and_levers():
    heard = []
    s, models = _tiny(memory_budget="8G")
    run = api.prepare(s, models)
    api.check_fits(run.settings, models, torch.device("cpu"), api.Hooks(on_phase=lambda p, t: heard.append((p, t))))
    [(phase, text)] = heard
    assert phase is api.Phase.MEMORY and text.startswith("memory: about ") and "no levers" in text and "process" in text


def test_memory_budget_is_a_size():
    assert parse_bytes("1.5G") == 3 * 2**29 and parse_bytes("800M") == 800 * 2**20 and parse_bytes("2GiB") == 2**31
    for bad in ("lots", "-1G", "0", "1.5X"):
        with pytest.raises(PixgenError, match="setting 'memory_budget'"):
            load_settings(overrides=dict(memory_budget=bad))


def test_the_prior_batch_follows_the_budget():
    from pixgen.prior.model import PriorArch
    from pixgen.prior.registry import prior_entries

    arch = PriorArch(**prior_entries()["cin_transformer"]["arch"])
    sixteen = prior_bytes(arch, 16, 2)
    assert 3.5 * 2**30 < sixteen < 4.5 * 2**30  # 2.8 GB of bf16 weights and a 1.2 GB cache
    assert prior_batch(arch, 2, None) == 16 and prior_batch(arch, 2, sixteen) == 16
    assert prior_batch(arch, 2, sixteen - 1) == 8 and prior_batch(arch, 2, 1) == 1


def test_a_budget_too_small_is_refused_before_any_model_loads(tmp_path):
    """The estimate comes from the models' shapes (the meta device) before they load: the refusal
    is the first thing a run hears, and no loading phase comes before it."""
    heard = []
    s = load_settings("smoke", overrides=dict(prompt="a cat", memory_budget="100M", output_dir=str(tmp_path / "o")))
    with pytest.raises(PixgenError, match="setting 'memory_budget'"):
        api.generate(s, hooks=api.Hooks(on_phase=lambda p, t: heard.append(p)))
    assert heard == [api.Phase.MEMORY]


def test_the_estimate_is_the_first_status_line_and_the_same_as_after_loading(tmp_path):
    from pixgen.models.loading import load_models, model_shapes

    heard = []
    s = load_settings("shapes", overrides=dict(prompt="a red circle on a blue background", output_dir=str(tmp_path)))
    api.generate(s, hooks=api.Hooks(on_phase=lambda p, t: heard.append((p, t))))
    assert heard[0][0] is api.Phase.MEMORY and heard[0][1].startswith("memory: about ")
    assert [p for p, _ in heard].count(api.Phase.MEMORY) == 1
    cpu = torch.device("cpu")
    shapes, loaded = model_shapes(s.vqgan, s.clip), load_models(s.vqgan, s.clip, cpu)
    loaded.owned = True  # as generate's own: its text towers go before the first step
    assert shapes.parameters == loaded.parameters
    assert api.memory_need(s, shapes, cpu)(Levers()) == api.memory_need(s, loaded, cpu)(Levers())


def test_a_run_that_loaded_its_models_releases_the_text_towers(tmp_path, monkeypatch):
    """Once its prompts are encoded a run needs only CLIP's image tower: a run that loaded its own
    models frees the text towers (models passed in keep theirs, for the next run)."""
    from pixgen.models import loading

    loaded = []
    real = loading.load_models
    monkeypatch.setattr(api, "load_models", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    s = load_settings("smoke", overrides=dict(prompt="a cat", output_dir=str(tmp_path), iterations=2))
    api.generate(s)
    [models] = loaded
    scorer = models.scorers[0]
    assert scorer.text_released and scorer.text_parameters() == 0
    assert scorer.encode_image(torch.rand(1, 3, scorer.input_size, scorer.input_size)).shape[0] == 1
    with pytest.raises(PixgenError, match="text tower was released"):
        scorer.encode_text(["a dog"])
    kept = real("tiny", "tiny", torch.device("cpu"))
    api.generate(s, models=kept)
    assert kept.scorers[0].text_parameters() > 0 and kept.scorers[0].encode_text(["a dog"]).shape[0] == 1
