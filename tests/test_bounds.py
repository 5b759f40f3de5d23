"""Issue 28's bounds: a size too small for a drawer, the lines drawer's stroke width and the work
of its --tile, all refused in one line before a run begins (or a web job is queued); and a
refused value that a preset set says so."""

from __future__ import annotations

import json

import pytest
import torch

from pixgen import api
from pixgen.drawers.lines import LinesDrawer
from pixgen.errors import PixgenError
from pixgen.settings import load_settings
from tests.conftest import SMOKE

GiB = 2**30


def _settings(tmp_path, **kw):
    base = dict(prompt="a cat", seed=1, iterations=1, save_every=0, gif=False, output_dir=str(tmp_path))
    return load_settings(preset="smoke", overrides=dict(base, **kw))


@pytest.mark.parametrize("drawer", ["pixel", "fft", "lines"])
def test_a_size_too_small_for_a_drawer_is_refused_in_one_line(tmp_path, cli, drawer):
    """-s 1x1 gave a NaN loss every step (the smoothness terms compare no neighbours) and ended
    in "saved" or in advice to lower --lr."""
    code, _, err = cli("a cat", *SMOKE, "--drawer", drawer, "-s", "1x1", "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1, err
    assert "setting 'size'" in err and "too small" in err and "8x8" in err
    assert not (tmp_path / "o").exists()
    _settings(tmp_path, drawer=drawer, size=[8, 8])  # the smallest is fine


@pytest.mark.parametrize("widths", [[8000.0, 8192.0], [500.0, 1000.0], [1.0, 65.0]])
def test_the_stroke_width_is_bounded_by_the_image(tmp_path, widths):
    """--stroke-width 8000,8192 at 64x64 with --tile grew to 22.7 GB; 500,1000 took 3.8 GB."""
    with pytest.raises(PixgenError, match="setting 'stroke_width'.*64 pixels"):
        _settings(tmp_path, drawer="lines", tile=True, size=[64, 64], stroke_width=widths)
    _settings(tmp_path, drawer="lines", tile=True, size=[64, 64], stroke_width=[1.0, 64.0])
    _settings(tmp_path, drawer="pixel", size=[64, 64], stroke_width=widths)  # not the run's drawer: unused


def test_the_memory_estimate_covers_the_lines_drawer_and_its_tile(tmp_path, monkeypatch):
    """4096 strokes as wide as a 64x64 tile: about 4 GiB of rasterising, refused in one line
    before the run starts when only 1 GiB is free; the default strokes are a few MB."""
    wide = dict(drawer="lines", tile=True, strokes=4096, stroke_width=[60.0, 64.0])
    run = api.prepare(_settings(tmp_path, **wide))
    work = LinesDrawer.work_floats(run.settings, 64, 64) * 4
    assert 2 * GiB < work < 8 * GiB  # measured: about 16 floats per reached pixel (4 GiB here)
    plain = LinesDrawer.work_floats(_settings(tmp_path, drawer="lines"), 64, 64) * 4
    assert plain < 32 * 2**20
    no_tile = LinesDrawer.work_floats(_settings(tmp_path, **dict(wide, tile=False)), 64, 64)
    assert no_tile * 4 < work  # without --tile a stroke reaches each tile once at most
    monkeypatch.setattr(api, "available_bytes", lambda device: GiB)
    with pytest.raises(PixgenError, match="setting 'size'.*lines drawer.*--strokes, --stroke-width"):
        api.generate(_settings(tmp_path, **wide))
    assert list(tmp_path.iterdir()) == []  # refused before its folder was made
    api.check_fits(_settings(tmp_path, drawer="lines"), run.models)  # the default fits


def test_a_tiled_stroke_stays_within_one_canvas_of_its_first_point():
    """With --tile the points are free (the canvas wraps): a stroke spanning many canvases would
    have as many periodic copies to draw. The clamp leaves points within reach untouched."""
    drawer = LinesDrawer(3, (32, 32), (1.0, 5.0), None, True, torch.device("cpu"))
    params = drawer.start(torch.Generator().manual_seed(0))
    before = params.clone()
    drawer.clamp_(params)
    assert torch.equal(params, before)  # a valid run's points are not moved (same pixels)
    strokes = params[:-3].view(3, -1)
    strokes[0, 6:8] = strokes[0, :2] + torch.tensor([40.0, -40.0])  # 40 canvases away
    drawer.clamp_(params)
    assert torch.allclose(strokes[0, 6:8], strokes[0, :2] + torch.tensor([1.0, -1.0]))
    assert torch.equal(strokes[1:], before[:-3].view(3, -1)[1:])


def test_a_preset_value_refused_says_where_it_came_from(tmp_path, cli):
    """--preset shapes --drawer pixel was refused about --init prior, which nobody typed (the prior
    start now reaches every drawer: a config file's value stands in for the preset's)."""
    config = tmp_path / "c.yaml"
    config.write_text("init_draws: 4\n")
    code, _, err = cli("a cat", "--config", config, "--drawer", "pixel", "-o", tmp_path)
    assert code == 2 and err.count("\n") == 1, err
    assert f"the config file {config}" in err and "--init-draws" in err
    code, _, err = cli("a cat", "--drawer", "pixel", "--init-draws", "4", "-o", tmp_path)
    assert code == 2 and "config" not in err.split("needs")[1]  # the user's own value: no such note


def test_the_studio_refuses_an_oversize_lines_job_and_a_deeply_nested_body(tmp_path, monkeypatch):
    """`pixgen serve --max-size 128` queued the 22 GB lines job; 100,000 nested `[` (200 KB, under
    the size limit) gave a 500 and an ASGI traceback."""
    from starlette.testclient import TestClient

    from pixgen.serve import app as studio
    from pixgen.serve.app import create_app
    from pixgen.serve.form import server_settings
    from pixgen.serve.jobs import JobQueue, Limits, load_server_models

    queue = JobQueue(load_server_models(server_settings("smoke")), tmp_path).start()
    with TestClient(create_app(queue, "smoke", limits=Limits(max_size=128))) as client:
        job = {"prompt": "a cat", "drawer": "lines", "tile": True, "size": "64x64", "iterations": 1}
        r = client.post("/api/jobs", json=dict(job, stroke_width="8000,8192"))
        assert r.status_code == 400 and "stroke_width" in r.json()["error"]
        monkeypatch.setattr(api, "available_bytes", lambda device: GiB)
        r = client.post("/api/jobs", json=dict(job, strokes=4096, stroke_width="60,64"))
        assert r.status_code == 400 and "GiB" in r.json()["error"]
        assert client.get("/api/jobs").json()["jobs"] == []  # neither was queued
        for body in ("[" * 100_000, "[" * 500 + "]" * 500, json.dumps({"prompt": [[[[[[[[["a"]]]]]]]]]})):
            r = client.post("/api/jobs", content=body.encode())
            assert r.status_code == 400 and "nests" in r.json()["error"], (body[:20], r.text)
    assert studio.nesting({"a": [1, [2]]}, 8) == 3
