"""The composed start (pixgen.starts.composed): silhouettes, the colours CLIP ranks, and the start itself,
on the shipped shapes models (real, small) and the independent pixel judge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.errors import PixgenError
from pixgen.settings import SILHOUETTES, load_settings
from pixgen.starts import composed as layout


def test_every_declared_silhouette_is_drawn_centred_at_its_size():
    assert tuple(layout.SILHOUETTES) == SILHOUETTES
    r = layout.SUBJECT_RADIUS * 64
    areas = {"disc": math.pi * r * r, "box": 4 * r * r, "triangle": 2 * r * r, "diamond": 2 * r * r}
    for name in SILHOUETTES:
        mask = layout.subject_mask(64, 64, name)
        assert torch.equal(mask, mask.flip(1))  # left-right symmetric about the centre
        if name in areas:
            assert int(mask.sum()) == pytest.approx(areas[name], rel=0.08), name
    tri = layout.subject_mask(64, 64, "triangle")
    rows = tri.sum(1)
    assert rows[rows > 0][0] < rows[rows > 0][-1]  # apex up: narrow at the top


def test_compose_paints_the_background_and_the_subject():
    red, blue = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0])
    image = layout.compose(blue, red, 40, 64, "box")
    assert image.shape == (3, 40, 64)
    assert torch.equal(image[:, 0, 0], blue) and torch.equal(image[:, 20, 32], red)


def _shapes_run(**kw):
    from pixgen import api
    from pixgen.models.loading import load_models

    models = load_models("shapes", "shapes", torch.device("cpu"))
    base = dict(prompt="a red circle on a blue background", seed=1, cutn=8, iterations=2, init="composed")
    return api.make_loop(api.prepare(load_settings(preset="shapes", overrides=dict(base, **kw)), models)), models


def test_the_best_colour_pairs_are_the_prompts():
    from pixgen.api import clip_terms, prepare
    from pixgen.models.loading import load_models

    models = load_models("shapes", "shapes", torch.device("cpu"))
    s = load_settings(preset="shapes", overrides=dict(prompt="a yellow square on a black background", clip=["shapes"]))
    pairs = layout.colour_pairs(clip_terms(prepare(s, models)), 64, 64)
    assert len(pairs) == layout.PAIRS
    for back, subject in pairs:
        assert (back - subject).norm() >= layout.MIN_COLOUR_GAP
    corner = [tuple(c.round().tolist()) for c in pairs[0]]  # to the nearest corner of the RGB cube
    assert corner == [(0.0, 0.0, 0.0), (1.0, 1.0, 0.0)]


@pytest.mark.parametrize("prompt, colours", [("a red circle on a blue background", ("red", "blue"))])
def test_composed_start_draws_the_prompted_colours_reproducibly(prompt, colours):
    from pixgen.drawers.vqgan import render
    from pixgen.shapes.judge import judge

    loop, models = _shapes_run(prompt=prompt)
    again, _ = _shapes_run(prompt=prompt)
    assert torch.equal(loop.z, again.z)
    with torch.no_grad():
        image = render(models.decoder, loop.z)[0].permute(1, 2, 0).numpy()
    got = judge((image * 255).round().astype(np.uint8))
    assert (got.colour, got.background) == colours


def test_the_silhouette_setting_is_checked_and_narrows_the_search():
    with pytest.raises(PixgenError, match="init_silhouettes"):
        load_settings(overrides=dict(prompt="x", init_silhouettes=["star"]))
    with pytest.raises(PixgenError, match="init_silhouettes"):
        load_settings(overrides=dict(prompt="x", init_silhouettes=[]))
    disc, _ = _shapes_run(prompt="a green square on a yellow background", init_silhouettes=["disc"])
    every, _ = _shapes_run(prompt="a green square on a yellow background")
    assert not torch.equal(disc.z, every.z)  # another silhouette scored better than the disc


def test_composed_start_runs_on_other_models_and_sizes(tmp_path):
    """The smoke preset's tiny VQGAN and tiny CLIP (another factor, another CLIP input size) at a
    size that is not square: the run completes, and the start differs from the neutral one."""
    from pixgen import api

    base = dict(prompt="a red house", seed=2, iterations=2, save_every=0, gif=False, cutn=4, size=[48, 32])
    runs = {}
    for init in ("composed", "mean"):
        s = load_settings(preset="smoke", overrides=dict(base, init=init, output_dir=str(tmp_path / init)))
        runs[init] = np.asarray(Image.open(api.generate(s).image))
    assert runs["composed"].shape == (32, 48, 3)
    assert not np.array_equal(runs["composed"], runs["mean"])


def test_the_seed_places_the_subject_within_its_ranges():
    places = [layout.draw_placement(torch.Generator().manual_seed(seed)) for seed in range(20)]
    assert places[0] == layout.draw_placement(torch.Generator().manual_seed(0))  # reproducible
    assert len(set(places)) == 20
    lo, hi = layout.RADIUS_RANGE
    for p in places:
        assert lo <= p.radius <= hi and abs(p.dx) <= layout.SHIFT_RANGE and abs(p.dy) <= layout.SHIFT_RANGE
    moved = layout.subject_mask(64, 64, "disc", layout.Placement(0.25, 0.1, -0.1))
    ys, xs = torch.nonzero(moved, as_tuple=True)
    assert float(xs.float().mean()) + 0.5 == pytest.approx(32 + 6.4, abs=0.5)
    assert float(ys.float().mean()) + 0.5 == pytest.approx(32 - 6.4, abs=0.5)
    assert int(moved.sum()) == pytest.approx(math.pi * 16**2, rel=0.08)
