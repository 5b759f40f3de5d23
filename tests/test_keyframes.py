"""Story mode's keyframes and init noise on a drawn start (issue 29): on the prior start a story
ends on its last phrase's picture, and `--init-noise` changes the start without losing the
prompt. Judged by the pixel judge on the offline shapes models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen import api
from pixgen.api import Hooks
from pixgen.loop.story import phase_spans, pull_at
from pixgen.loop.targets import PromptSchedule
from pixgen.settings import load_settings
from pixgen.shapes.judge import judge, palette_labels
from pixgen.shapes.world import Combo


def _pixels(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def _shapes(tmp_path, prompt: str, **kw):
    base = dict(prompt=prompt, seed=0, output_dir=str(tmp_path), gif=False, save_every=0)
    return load_settings(preset="shapes", overrides=dict(base, **kw))


@pytest.mark.parametrize("phrases", [1, 2, 3, 4])
@pytest.mark.parametrize("every", [0, 1, 3, 7])
def test_phase_spans_are_the_steps_the_prompt_schedule_gives_each_phase(phrases, every):
    for iterations in range(30):
        schedule, spans = PromptSchedule([None] * phrases, every, iterations), phase_spans(phrases, every, iterations)
        got = [k for k, (first, last) in enumerate(spans) for _ in range(first, last + 1)]
        assert got == [schedule.phase(i) for i in range(1, iterations + 1)]


def test_the_pulls_travel_a_straight_line_and_land_on_the_keyframe():
    spans = phase_spans(2, 0, 20)  # steps 1-10, 11-20; travel in steps 11-15
    start, keyframe, z = torch.zeros(3), torch.tensor([1.0, -2.0, 4.0]), torch.zeros(3)
    shares = {}
    for step in range(1, 21):
        due = pull_at(step, spans, travel=0.5)
        if due is not None:
            k, shares[step] = due
            assert k == 1
            z = torch.lerp(z, keyframe, shares[step])
            assert torch.allclose(z, torch.lerp(start, keyframe, (step - 10) / 5))
    assert sorted(shares) == [11, 12, 13, 14, 15] and shares[15] == 1.0
    assert torch.equal(z, keyframe)


def test_story_mode_on_the_prior_start_ends_on_the_last_phrase(tmp_path):
    first, last = Combo("square", "yellow", "black"), Combo("circle", "red", "blue")
    prompt = f"{first.caption(0)} ^ {last.caption(0)}"
    seen = {}
    hooks = Hooks(on_step=lambda step, total: seen.__setitem__(step.i, _pixels(step.image)))
    result = api.generate(_shapes(tmp_path, prompt, iterations=8, lr=0.2, cutn=8), hooks=hooks)
    assert judge(seen[4]) == first  # the first phrase's picture through its phase
    assert judge(np.asarray(Image.open(result.image).convert("RGB"))) == last  # and the story ends on the last
    record = json.loads((result.run_dir / "run.json").read_text())
    assert len(record["start"]["story"]) == 1  # the second phrase's keyframe, recorded


def test_perlin_noise_on_the_prior_start_keeps_the_prompt_and_changes_the_picture(tmp_path):
    combo = Combo("triangle", "blue", "white")
    plain = np.asarray(Image.open(api.generate(_shapes(tmp_path / "a", combo.caption(0))).image).convert("RGB"))
    s = _shapes(tmp_path / "b", combo.caption(0), init_noise="perlin")
    noisy = api.generate(s)
    image = np.asarray(Image.open(noisy.image).convert("RGB"))
    assert judge(plain) == judge(image) == combo
    assert (palette_labels(image) != palette_labels(plain)).mean() > 0.005  # the noise shows
    assert np.abs(image.astype(float) - plain).mean() > 2
    start = json.loads((noisy.run_dir / "run.json").read_text())["start"]
    assert start["noise"] == "perlin" and start["prior"]  # mixed into the prior's sample, not replacing it
