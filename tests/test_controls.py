"""Creative controls: each changes what it should (tiny models), and bad values are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen import api
from pixgen.losses import palette_distance, saturation, symmetry
from pixgen.optimise import lr_factor
from pixgen.scorer import load_clip
from pixgen.settings import load_settings
from pixgen.targets import Schedule, build_schedule, noise_prompt
from tests.conftest import SMOKE


def _run(tmp_path, preset="smoke", **kw):
    base = dict(prompt="a red house", seed=2, iterations=30, save_every=0, gif=False, cutn=4, output_dir=str(tmp_path))
    r = api.generate(load_settings(preset=preset, overrides=dict(base, **kw)))
    return torch.from_numpy(np.asarray(Image.open(r.image), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_symmetry_weight_makes_the_image_more_symmetric(tmp_path):
    kw = dict(preset="shapes", prompt="a yellow triangle on a black background", iterations=40)
    plain = _run(tmp_path / "a", **kw)
    sym = _run(tmp_path / "b", symmetry="horizontal", symmetry_weight=50.0, **kw)
    assert symmetry(sym).item() < 0.7 * symmetry(plain).item()


def test_palette_pulls_colours_toward_it(tmp_path):
    red = torch.tensor([[1.0, 0.0, 0.0]])
    kw = dict(preset="shapes", prompt="a white square on a green background", iterations=40)
    plain = _run(tmp_path / "a", **kw)
    pal = _run(tmp_path / "b", palette=["#ff0000"], palette_weight=5.0, **kw)
    assert palette_distance(pal, red) < 0.7 * palette_distance(plain, red)
    assert pal[:, 0].mean() > plain[:, 0].mean()


def test_saturation_weight_desaturates(tmp_path):
    plain = _run(tmp_path / "a")
    grey = _run(tmp_path / "b", saturation_weight=50.0)
    assert saturation(grey) < saturation(plain)


def test_init_image_with_high_init_weight_stays_close(tmp_path):
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "init.png")
    start = _run(tmp_path / "s", init_image=str(tmp_path / "init.png"), iterations=1, lr=1e-6)
    free = _run(tmp_path / "a", init_image=str(tmp_path / "init.png"), lr=0.3)
    held = _run(tmp_path / "b", init_image=str(tmp_path / "init.png"), init_weight=1000.0, lr=0.3)
    assert (held - start).abs().mean() < 0.5 * (free - start).abs().mean()


@pytest.mark.parametrize("kind", ["pixels", "gradient", "perlin"])
def test_init_noise_kinds_run_and_differ(tmp_path, kind):
    a = _run(tmp_path / kind, init_noise=kind, iterations=1)
    assert a.std() > 0


def test_story_mode_switches_at_the_right_steps():
    s = Schedule(phases=["a", "b", "c"], every=5, iterations=100)
    assert [s.phase(i) for i in (1, 5, 6, 10, 11, 99)] == [0, 0, 1, 1, 2, 2]
    even = Schedule(phases=["a", "b"], every=0, iterations=10)
    assert [even.phase(i) for i in range(1, 11)] == [0] * 5 + [1] * 5


def test_negative_image_and_noise_prompts_become_targets(tmp_path):
    Image.new("RGB", (40, 30), (0, 200, 0)).save(tmp_path / "green.png")
    scorer = load_clip("tiny")
    s = load_settings(
        preset="smoke",
        overrides=dict(
            prompt="a cat ^ a dog:2",
            seed=1,
            negative=["blurry"],
            image_prompts=[f"{tmp_path / 'green.png'}:0.5"],
            noise_prompts=["7:0.25"],
        ),
    )
    sched = build_schedule(s, scorer)
    assert len(sched.phases) == 2
    t = sched.phases[1]
    assert t.weights.tolist() == [2.0, -1.0, 0.5, 0.25]
    assert torch.allclose(t.embeds[3], noise_prompt(t.embeds.shape[1], 7))
    assert torch.allclose(t.embeds[1], sched.phases[0].embeds[1])  # shared extras


def test_lr_schedules():
    assert lr_factor("constant", 90, 100) == 1.0
    assert lr_factor("step", 74, 100) == 1.0 and lr_factor("step", 75, 100) == pytest.approx(0.1)
    assert lr_factor("cosine", 0, 100) == pytest.approx(1.0) and lr_factor("cosine", 100, 100) == pytest.approx(0.1)


@pytest.mark.parametrize("opt", ["adam", "adamw", "adagrad", "rmsprop", "radam"])
def test_every_optimizer_runs(tmp_path, opt):
    assert _run(tmp_path, optimizer=opt, iterations=3, lr_schedule="plateau").std() > 0


def test_missing_ffmpeg_keeps_the_pngs(cli, tmp_path, monkeypatch):
    import imageio.v2

    def broken(*a, **k):
        raise RuntimeError("ffmpeg not found")

    monkeypatch.setattr(imageio.v2, "get_writer", broken)
    code, _, err = cli("a cat", *SMOKE, "--video", "-o", tmp_path)
    assert code == 0 and "no progress.mp4 (ffmpeg not found)" in err
    (run,) = tmp_path.iterdir()
    assert (run / "final.png").is_file() and (run / "progress.gif").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--init-image", "/nope.png"), "/nope.png"),
        (("--image-prompt", "/nope.png:0.5"), "/nope.png"),
        (("--palette", "#ff0000,#zz0000", "--palette-weight", "1"), "bad colour"),
        (("--augment", "flip,wobble"), "wobble"),
        (("--optimizer", "sgdx"), "optimizer"),
        (("--lr-schedule", "sometimes"), "lr_schedule"),
        (("--init-fit", "squash"), "init_fit"),
        (("--symmetry", "diagonal"), "symmetry"),
        (("--noise-prompt", "abc"), "noise_prompts"),
        (("--negative", " "), "negative"),
    ],
)
def test_bad_controls_one_line_exit_2(cli, tmp_path, args, needle):
    code, _, err = cli("a cat", *SMOKE, *args, "-o", tmp_path / "o")
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert err.strip().count("\n") == 0


def test_zero_length_story_phrase_is_refused(cli, tmp_path):
    code, _, err = cli("a forest ^  ^ a city", *SMOKE, "-o", tmp_path)
    assert code == 2 and "empty prompt" in err
