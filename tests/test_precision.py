"""Precision (issue 22): bf16 weights cast once, pixgen.models.vit's ViT walk, and how `auto` decides."""

import copy
import json
import logging

import pytest
import torch

from pixgen import api
from pixgen.drawers.vqgan import render
from pixgen.errors import PixgenError
from pixgen.models import vit
from pixgen.models.loading import Models
from pixgen.models.scorer import build_clip
from pixgen.models.vqgan import tiny_decoder
from pixgen.runtime import precision
from pixgen.runtime.precision import Precision, resolve_precision
from pixgen.settings import load_settings

CPU = torch.device("cpu")
BF16 = Precision("bf16", torch.bfloat16)


def _grad(scorer, x, walk: bool, kernel: str = "auto"):
    x = x.clone().requires_grad_(True)
    visual = scorer.model.visual
    out = vit.forward(visual, x, kernel) if walk else visual(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("arch", ["pixgen-tiny", "pixgen-shapes"])
@pytest.mark.parametrize("kernel", ["math", "sdpa"])
def test_vit_walk_is_open_clips_forward_and_gradient(arch, kernel):
    scorer = build_clip(arch, seed=3)
    assert vit.supports(scorer.model.visual)
    x = torch.rand(5, 3, scorer.input_size, scorer.input_size, generator=torch.Generator().manual_seed(0))
    ref_out, ref_grad = _grad(scorer, x, walk=False)
    torch.manual_seed(0)
    out = vit.forward(scorer.model.visual, x.clone().requires_grad_(True), kernel)
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=1e-4)
    _, grad = _grad(scorer, x, walk=True, kernel=kernel)  # the kernel forced: "auto" is math on a CPU
    assert torch.allclose(grad, ref_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.slow
def test_vit_walk_on_vit_b_32():
    scorer = build_clip("ViT-B-32", seed=0)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ref_out, ref_grad = _grad(scorer, x, walk=False)
    out, grad = _grad(scorer, x, walk=True)
    assert torch.allclose(out, ref_out, atol=1e-4, rtol=1e-3)
    assert torch.nn.functional.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0) > 0.9999


def test_vit_walk_declines_what_it_does_not_reproduce():
    scorer = build_clip("pixgen-tiny", seed=0)
    visual = scorer.model.visual
    visual.output_tokens = True
    assert not vit.supports(visual)
    visual.output_tokens = False
    visual.transformer.resblocks[0].attn.dropout = 0.1
    assert not vit.supports(visual)
    assert not vit.supports(torch.nn.Linear(2, 2))


def test_bf16_decoder_keeps_codebook_and_io_in_fp32():
    dec = tiny_decoder()
    ref, codebook = copy.deepcopy(dec), dec.codebook
    dec.cast(torch.bfloat16)
    assert dec.codebook.dtype == torch.float32 and dec.dtype == torch.bfloat16
    # a copy: the codebook must not pin the memory-mapped weight file it was read from
    assert torch.equal(dec.codebook, codebook) and dec.codebook.data_ptr() != codebook.data_ptr()
    conv = dec.decoder.conv_in.weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(1, dec.arch.embed_dim, 8, 8, generator=torch.Generator().manual_seed(1))
    out, want = dec(z), ref(z)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert (out - want).abs().mean() < 0.02 * want.abs().mean()  # bf16 rounding, not another function


def test_bf16_scorer_embeds_in_fp32_close_to_fp32():
    scorer = build_clip("pixgen-tiny", seed=0)
    ref = copy.deepcopy(scorer)
    scorer.cast(torch.bfloat16)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a, b = scorer.encode_image(x), ref.encode_image(x)
    assert a.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    assert scorer.encode_text(["a cat"]).dtype == torch.float32


def test_models_cast_once_and_refuse_to_go_back_up():
    models = Models(tiny_decoder(), [build_clip("pixgen-tiny")])
    models.set_precision(BF16)
    models.set_precision(BF16)  # again: nothing to do
    assert models.scorers[0].dtype == torch.bfloat16
    with pytest.raises(PixgenError, match="precision"):
        models.set_precision(precision.FP32)


def test_shapes_gradient_in_bf16_points_where_fp32_does():
    """The latent's gradient through the trained shapes decoder and CLIP, bf16 against fp32."""
    s = load_settings(preset="shapes", overrides=dict(prompt="a red circle on a blue background", seed=0))
    run = api.prepare(s)
    ref = copy.deepcopy(run.models)
    run.models.set_precision(BF16)
    grads = []
    for models in (ref, run.models):
        run.models, torch_state = models, torch.get_rng_state()
        term = api.clip_terms(run)[0]
        z = torch.randn(1, models.decoder.arch.embed_dim, 16, 16, generator=torch.Generator().manual_seed(0))
        z = z.requires_grad_(True)
        term.loss(render(models.decoder, z), 1, torch.Generator().manual_seed(5), None).backward()
        torch.set_rng_state(torch_state)
        grads.append(z.grad.flatten())
    # the cast really happened: bf16 weights, and a gradient that is not fp32's to the bit
    assert (
        run.models.decoder.dtype == torch.bfloat16 and run.models.decoder.decoder.conv_in.weight.dtype == torch.bfloat16
    )
    assert all(s.dtype == torch.bfloat16 for s in run.models.scorers)
    assert next(run.models.scorers[0].model.visual.parameters()).dtype == torch.bfloat16
    assert not torch.equal(*grads)
    assert torch.nn.functional.cosine_similarity(*grads, dim=0) > 0.99


def test_explicit_choices_and_mps():
    assert resolve_precision("fp32", CPU).weights == torch.float32
    assert resolve_precision("bf16", CPU).weights == torch.bfloat16
    assert resolve_precision("auto", torch.device("mps")).name == "fp32"
    with pytest.raises(PixgenError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", CPU)


def test_auto_keeps_fp32_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(precision, "measure", lambda: pytest.fail("no calibration without native bf16"))
    p = resolve_precision("auto", CPU)
    assert p.name == "fp32" and "no native bf16" in p.why


def test_bf16_without_native_support_warns_once_with_the_cost(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(precision, "emulated_slowdown", lambda: 140.0)
    with caplog.at_level(logging.WARNING, logger="pixgen"):
        p = resolve_precision("bf16", CPU)
    assert p.name == "bf16"
    [record] = caplog.records
    assert "140x slower" in record.getMessage() and "\n" not in record.getMessage()


def test_auto_follows_the_cached_calibration(monkeypatch, tmp_path):
    monkeypatch.delenv(precision.PIN, raising=False)  # conftest pins it for the rest of the suite
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    calls = []

    def fake(speedup):
        def measure():
            calls.append(speedup)
            return {"fp32": 1.0, "bf16": 1.0 / speedup, "speedup": speedup}

        return measure

    monkeypatch.setattr(precision, "measure", fake(0.8))
    assert resolve_precision("auto", CPU).name == "fp32"  # measured slower: never picked
    assert resolve_precision("auto", CPU).name == "fp32"
    assert calls == [0.8]  # measured once, then read from the cache
    cached = json.loads((tmp_path / "calibration.json").read_text())
    assert list(cached) == [precision.calibration_key()]
    (tmp_path / "calibration.json").write_text("{not json")  # a corrupt cache is measured again
    monkeypatch.setattr(precision, "measure", fake(3.0))
    assert resolve_precision("auto", CPU).name == "bf16"


@pytest.mark.parametrize(
    ("native", "timings", "name", "why"),
    [
        (False, None, "fp32", "auto: no native bf16 on this CPU"),
        (True, {"fp32": 1.0, "bf16": 1.0 / 1.7}, "bf16", "auto: bf16 measured 1.70x fp32 here"),
        (True, {"fp32": 1.0, "bf16": 1.0 / 1.25}, "bf16", "auto: bf16 measured 1.25x fp32 here"),
        (True, {"fp32": 1.0, "bf16": 1.0 / 1.2}, "fp32", "auto: bf16 measured 1.20x fp32 here"),
        (True, {"fp32": 1.0, "bf16": 2.0}, "fp32", "auto: bf16 measured 0.50x fp32 here"),
    ],
)
def test_auto_on_a_cpu_follows_native_bf16_and_the_measured_speed_up(native, timings, name, why):
    """The calibration decides for models of every size (issue 29: no fixed rule keeps small
    models in fp32); without native bf16 nothing is measured and it is fp32."""
    p = precision.auto_on_cpu(native, timings)
    assert (p.name, p.why) == (name, why)
    assert p.weights == (torch.bfloat16 if name == "bf16" else torch.float32) and p.autocast is None


def test_auto_decides_small_models_by_the_calibration(monkeypatch, tmp_path):
    """A run of the tiny smoke models (well under the 30M parameters once kept in fp32 by a
    rule) resolves to bf16 where the calibration measured bf16 faster, and records why."""
    monkeypatch.delenv(precision.PIN, raising=False)
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "measure", lambda: {"fp32": 1.0, "bf16": 0.5, "speedup": 2.0})
    run = api.prepare(load_settings(preset="smoke", overrides=dict(prompt="a cat", device="cpu")))
    assert run.models.parameters < 30_000_000
    assert run.precision.name == "bf16" and run.precision.why == "auto: bf16 measured 2.00x fp32 here"
    assert run.models.decoder.dtype == torch.bfloat16


@pytest.mark.parametrize(("pin", "name"), [("1.0", "fp32"), ("2", "bf16")])
def test_a_pinned_speed_up_decides_without_measuring(monkeypatch, tmp_path, pin, name):
    monkeypatch.setenv(precision.PIN, pin)
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "measure", lambda: pytest.fail("a pinned answer is not measured"))
    assert resolve_precision("auto", CPU).name == name
    assert not (tmp_path / "calibration.json").exists()


@pytest.mark.parametrize("pin", ["fast", "0", "nan", "-1"])
def test_a_bad_pinned_speed_up_is_one_line_naming_it(monkeypatch, pin):
    monkeypatch.setenv(precision.PIN, pin)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    with pytest.raises(PixgenError, match=r"PIXGEN_BF16_SPEEDUP: a positive number"):
        resolve_precision("auto", CPU)


def test_calibration_measures_both_dtypes():
    result = precision.measure(reps=1)
    assert result["fp32"] > 0 and result["bf16"] > 0
    assert result["speedup"] == pytest.approx(result["fp32"] / result["bf16"])


def test_a_bf16_run_records_its_precision(tmp_path):
    s = load_settings(
        preset="smoke", overrides=dict(prompt="a cat", seed=1, precision="bf16", output_dir=str(tmp_path))
    )
    result = api.generate(s)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["precision"] == "bf16" and record["clip_dtype"] == "bfloat16"
    assert all(torch.isfinite(torch.tensor(record["losses"])))
    again = api.generate(s)
    assert (result.image.read_bytes() == again.image.read_bytes()) or pytest.fail("bf16 runs must reproduce")


@pytest.mark.parametrize("height,width,size,cut_min", [(256, 256, 224, 0.0), (48, 80, 32, 0.8), (20, 20, 32, 0.0)])
def test_cutouts_resample_exactly_as_roi_align(height, width, size, cut_min):
    """The matmul resampling is torchvision's roi_align (aligned, adaptive sampling), forward and
    backward, on shrinking, mixed and enlarging cutouts."""
    from torchvision.ops import roi_align

    from pixgen.loop.cutouts import Cutouts

    cut = Cutouts(size, 16, 1.0, cut_min)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    boxes = cut.boxes(height, width, torch.Generator().manual_seed(1))
    rois = torch.cat([boxes.new_zeros(16, 1), boxes], 1)
    ref = roi_align(image, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    (ref_grad,) = torch.autograd.grad((ref * weight).sum(), image)
    out = cut(image, torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((out * weight).sum(), image)
    assert out.shape == ref.shape and out.is_contiguous()
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_colour_jitter_levers_do_what_they_say():
    from pixgen.loop.cutouts import LUMA, ColourJitter

    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    assert torch.allclose(ColourJitter(0, 0, 0, 0, 1.0)(x), x, atol=1e-6)  # nothing to jitter
    assert torch.equal(ColourJitter(0.5, 0.5, 0.5, 0.5, 0.0)(x), x)  # never applied
    grey = x[:, :1].expand(-1, 3, -1, -1)
    torch.manual_seed(0)
    out = ColourJitter(0.2, 0.4, 0.9, 0.5, 1.0)(grey)
    assert torch.allclose(out, out[:, :1].expand(-1, 3, -1, -1), atol=1e-5) and not torch.equal(out, grey)  # still grey
    j = ColourJitter(1.0, 1.0, 1.0, 1.0, 1.0)
    half = torch.full((1,), 0.5)

    def draw(b=half, c=half, s=half, h=half):
        return j.matrices(torch.stack([b, c, s, h], 1))[0][0]

    assert torch.allclose(draw(b=torch.full((1,), 0.75)), 1.5 * torch.eye(3), atol=1e-6)  # brightness x1.5
    luma = torch.tensor(LUMA)
    assert torch.allclose(draw(s=torch.zeros(1)), luma.expand(3, 3), atol=1e-6)  # saturation 0: the luma
    assert torch.allclose(draw(h=torch.ones(1)), torch.eye(3), atol=1e-5)  # a full turn of hue
    red = torch.tensor([0.9, 0.1, 0.1])
    turned = draw(h=torch.full((1,), 2 / 3)) @ red  # a third of a turn
    assert turned.argmax() != 0 and torch.allclose(luma @ turned, luma @ red, atol=1e-5)
    # contrast alone, through forward: each cutout moves away from its own mean luma by one factor
    torch.manual_seed(0)
    out = ColourJitter(0, 0.4, 0, 0, 1.0)(x)  # x in [0.25, 0.75]: c in [0.6, 1.4] never clamps
    mean = torch.einsum("c,nchw->n", luma, x)[:, None, None, None] / 64
    away = x - mean
    c = (((out - mean) * away).sum((1, 2, 3)) / (away * away).sum((1, 2, 3)))[:, None, None, None]
    assert torch.allclose(out, mean + c * away, atol=1e-5)  # about the mean luma, which stays
    assert torch.allclose(torch.einsum("c,nchw->n", luma, out), torch.einsum("c,nchw->n", luma, x), atol=1e-4)
    assert ((c - 1).abs() > 0.02).all() and ((c - 1).abs() < 0.4 + 1e-4).all()
