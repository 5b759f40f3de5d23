"""`pixgen vary`: variations of a pixgen image. Strength 0 is its source; the prior start redraws
its code grid from a point on; any other start is the image mixed with fresh noise; each
variation reproduces; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.api import generate
from pixgen.apps.vary import vary
from pixgen.prior.model import Prior, sample
from pixgen.settings import load_settings
from tests.test_prior import _arch, _random

SHAPES = {"prompt": "a red circle on a blue background", "seed": 3, "prior_samples": 4, "save_every": 0}
SMOKE = {"prompt": "a cat", "seed": 3, "iterations": 4, "save_every": 0, "gif": False}


def _pixels(path):
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def shapes_image(tmp_path_factory):
    return generate(load_settings("shapes", overrides=SHAPES), run_dir=tmp_path_factory.mktemp("v") / "src").image


def test_given_codes_are_kept_and_the_rest_drawn_after_them():
    prior, cond = _random(Prior(_arch())), torch.tensor([[3]])
    whole = sample(prior, cond, 1, torch.Generator().manual_seed(5)).reshape(1, -1)
    for kept in (0, 5, 16):
        again = sample(prior, cond, 1, torch.Generator().manual_seed(9), given=whole[:, :kept]).reshape(1, -1)
        assert torch.equal(again[:, :kept], whole[:, :kept])
        assert torch.equal(again, whole) == (kept == 16)  # another seed draws other codes after them


def test_strength_0_is_the_source(shapes_image, tmp_path):
    from pixgen.outputs.writer import read_png_metadata

    result = vary(shapes_image, 0.0, 1, output_dir=tmp_path / "v")
    assert np.array_equal(_pixels(result.images[0]), _pixels(shapes_image))
    mine, source = (read_png_metadata(p) for p in (result.images[0], shapes_image))
    where = ("output_dir", "device")  # where it went, and the device auto chose (reproduce names it)
    assert {k: v for k, v in mine.items() if k not in where} == {k: v for k, v in source.items() if k not in where}


def test_prior_variations_redraw_the_grid_and_reproduce(shapes_image, cli, tmp_path):
    result = vary(shapes_image, 0.5, 2, output_dir=tmp_path / "v")
    a, b = (_pixels(p) for p in result.images)
    assert not np.array_equal(a, b) and not np.array_equal(a, _pixels(shapes_image))
    record = json.loads((result.images[0].parent / "run.json").read_text())
    assert record["start"]["vary"] == {"strength": 0.5, "seed": 1, "codes_kept": 32, "codes": 64}
    assert record["settings"]["iterations"] == 0 and record["settings"]["init"] == "prior"  # as the source
    code, out, err = cli("reproduce", result.images[1], "-o", tmp_path / "again", "--json")
    assert code == 0, err
    assert np.array_equal(_pixels(json.loads(out)["image"]), b)


def test_other_starts_mix_the_image_with_noise_and_take_the_strengths_steps(tmp_path, cli):
    source = generate(load_settings("smoke", overrides=SMOKE), run_dir=tmp_path / "src").image
    result = vary(source, 0.5, 2, output_dir=tmp_path / "v")
    settings = result.settings[0]
    assert settings.iterations == 2 and settings.init_image == str(source.resolve())
    assert (settings.vary_strength, [s.vary_seed for s in result.settings]) == (0.5, [1, 2])
    assert not np.array_equal(*(_pixels(p) for p in result.images))
    code, out, err = cli("reproduce", result.images[0], "-o", tmp_path / "again", "--json")
    assert code == 0, err
    assert np.array_equal(_pixels(json.loads(out)["image"]), _pixels(result.images[0]))


@pytest.mark.parametrize(
    "args, words",
    [
        (("--strength", "1.5"), "--strength must be between 0 and 1"),
        (("--strength", "nan"), "--strength must be between 0 and 1"),
        (("-n", "0"), "-n must be between 1"),
    ],
)
def test_bad_input_is_one_line(shapes_image, cli, tmp_path, args, words):
    code, _, err = cli("vary", shapes_image, *args, "-o", tmp_path / "v")
    assert code == 2 and err.startswith("pixgen: error:") and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_a_png_without_settings_is_one_line(cli, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, _, err = cli("vary", plain)
    assert code == 2 and "carries no pixgen settings" in err


def test_vary_strength_needs_a_start_to_vary():
    from pixgen.errors import PixgenError

    with pytest.raises(PixgenError, match="'vary_strength'"):
        load_settings("smoke", overrides={"prompt": "a cat", "vary_strength": 0.5})
