"""The drawers (issue 21): their maths on small tensors, runs on the tiny models without a VQGAN,
seamless tiles, and bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.drawers.fft import FFTDrawer, colour_matrix, spectrum_scale
from pixgen.drawers.palettes import NAMED, palette_colours
from pixgen.drawers.pixel import PixelDrawer, snap_to_palette
from tests.conftest import SMOKE

SEAM_SEED = 0  # the seam tests pass on seeds 0-19 (their docstrings give the spread)


def test_snap_to_palette_shows_the_nearest_colour_and_passes_the_gradient_straight_through():
    palette = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    cells = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.1, 0.0], [0.8, 0.9, 0.7]]).T.reshape(1, 3, 1, 3)
    cells.requires_grad_(True)
    out = snap_to_palette(cells, palette)
    assert out.detach()[0, :, 0].T.tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 1]]
    (out * torch.arange(9.0).view(1, 3, 1, 3)).sum().backward()
    assert torch.equal(cells.grad, torch.arange(9.0).view(1, 3, 1, 3))


def test_pixel_drawer_draws_flat_cells_and_exports_one_pixel_per_cell():
    d = PixelDrawer((4, 2), (8, 16), None, torch.device("cpu"))
    cells = d.start(torch.Generator().manual_seed(0))
    assert cells.shape == (1, 3, 2, 4)
    image = d.render(cells)
    assert image.shape == (1, 3, 8, 16)
    assert torch.equal(image[..., :4, :4], cells[..., :1, :1].expand(1, 3, 4, 4))  # one flat block
    assert torch.allclose(d.fit(image, None), cells)
    png = Image.open(__import__("io").BytesIO(d.extras(cells)["cells.png"]))
    assert png.size == (4, 2)


def test_fft_drawer_fits_an_image_exactly_and_scales_coarse_frequencies_up():
    scale = spectrum_scale(8, 8, 1.0)
    assert scale.shape == (8, 5) and abs(float(scale.pow(2).mean()) - 1) < 1e-5
    assert scale[0, 0] == scale.max() and scale[0, 1] > scale[0, 4]  # 1/f: lower frequencies more
    assert torch.allclose(colour_matrix().norm(dim=0).max(), torch.tensor(1.0))
    d = FFTDrawer((8, 12), 1.0, torch.device("cpu"))
    image = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    params = d.fit(image, None)
    assert params.shape == d.start(torch.Generator().manual_seed(0)).shape == (1, 3, 8, 7, 2)
    assert torch.allclose(d.render(params), image, atol=1e-4)


def test_named_palettes_and_bad_ones():
    from pixgen.errors import PixgenError

    assert len(palette_colours(["gameboy"])) == 4 and len(palette_colours(["PICO-8"])) == 16
    assert palette_colours(["grayscale-4"])[1] == pytest.approx((85 / 255,) * 3)
    assert palette_colours(["#f00", "00ff00"]) == [(1, 0, 0), (0, 1, 0)]
    assert set(NAMED) >= {"gameboy", "pico-8", "c64", "grayscale-2", "grayscale-16"}
    with pytest.raises(PixgenError, match="unknown palette 'gameboyy'"):
        palette_colours(["gameboyy"])


def run_smoke(cli, tmp_path, *args):
    code, out, err = cli("a cat", *SMOKE, "-i", "2", "-s", "32x32", "--no-gif", "-o", tmp_path, "--json", *args)
    assert code == 0, err
    return tmp_path / json.loads(out)["run_dir"].split("/")[-1]


@pytest.mark.parametrize("drawer, extra", [("pixel", "cells.png"), ("fft", None), ("lines", "final.svg")])
def test_drawers_run_without_a_vqgan(cli, tmp_path, monkeypatch, drawer, extra):
    import pixgen.models.loading

    def no_vqgan(*a, **k):
        raise AssertionError("the VQGAN was loaded")

    monkeypatch.setattr(pixgen.models.loading, "load_decoder", no_vqgan)
    args = ("--drawer", drawer, "--pixel-size", "8x4", "--palette", "gameboy", "--strokes", "8")
    run = run_smoke(cli, tmp_path, *args)
    record = json.loads((run / "run.json").read_text())
    assert record["settings"]["drawer"] == drawer and record["settings"]["lr"] > 0
    if extra == "final.svg":
        assert (run / extra).read_text().startswith("<svg") and (run / extra).read_text().count("<path") >= 8
    if extra == "cells.png":
        assert Image.open(run / extra).size == (8, 4)
        colours = {tuple(c) for c in np.asarray(Image.open(run / "final.png")).reshape(-1, 3)}
        assert colours <= {tuple(int(v[i : i + 2], 16) for i in (1, 3, 5)) for v in NAMED["gameboy"]}


def seam_steps(image: np.ndarray) -> tuple[float, float]:
    """Tile `image` 2x2: the mean absolute step across the seams (the middle row and column) and
    the median mean step between any other two neighbouring rows or columns."""
    t = np.tile(image.astype(float), (2, 2, 1))
    h, w = image.shape[:2]
    rows = np.abs(np.diff(t, axis=0)).mean(axis=(1, 2))[: 2 * h - 1]  # step from row i to i + 1
    cols = np.abs(np.diff(t, axis=1)).mean(axis=(0, 2))[: 2 * w - 1]
    seam = (rows[h - 1] + cols[w - 1]) / 2
    return seam, float(np.median(np.concatenate([np.delete(rows, h - 1), np.delete(cols, w - 1)])))


def tiled_and_untiled(cli, tmp_path, drawer, seed=SEAM_SEED):
    """(seam, interior median) of the same run, tiled and untiled."""
    out = []
    for tile in (("--tile",), ()):
        args = ("--drawer", drawer, "--seed", seed, "--strokes", "16", *tile)
        run = run_smoke(cli, tmp_path / ("tiled" if tile else "untiled"), *args)
        out.append(seam_steps(np.asarray(Image.open(run / "final.png").convert("RGB"))))
    return out


def test_a_tiled_vqgan_run_has_no_seam(cli, tmp_path):
    """The tiled VQGAN's seam is an ordinary step of its image (within 0.72-1.39x the median step);
    the same run untiled has an edge unlike the rest (zero padding fades both edges alike: its seam
    is about 0.5-0.67x the median). Over seeds 0-19: tiled 0.91-1.29x, untiled 0.49-0.67x."""
    (seam, interior), (seam_u, interior_u) = tiled_and_untiled(cli, tmp_path, "vqgan")
    assert abs(np.log(seam / interior)) < 0.33, (seam, interior)
    assert abs(np.log(seam_u / interior_u)) > 0.33, (seam_u, interior_u)  # the check can tell


def test_tiled_strokes_wrap_across_the_seam(cli, tmp_path):
    """Wrapped strokes cross the seam: it is a fraction of the same run's untiled seam, where
    strokes end at the edges (0.11-0.46x over seeds 0-19, 0.27x at seed 0)."""
    (seam, _), (seam_u, _) = tiled_and_untiled(cli, tmp_path, "lines")
    assert seam < 0.5 * seam_u, (seam, seam_u)


# The pixel and fft drawers are periodic by construction (a cell grid, an inverse real FFT): their
# seam is one more cell boundary or an ordinary step with or without --tile, so a seam measure
# cannot fail for them. What --tile changes for them is that CLIP's cutouts wrap around the edges.
@pytest.mark.parametrize("drawer", ["pixel", "fft"])
def test_a_tiled_run_cuts_across_its_edges(drawer):
    from pixgen import api
    from pixgen.settings import load_settings

    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = []
    for tile in (True, False):
        s = load_settings(
            preset="smoke", overrides=dict(prompt="a cat", seed=0, size=[32, 32], drawer=drawer, tile=tile)
        )
        cut = api.clip_terms(api.prepare(s))[0].cutouts
        plain = copy.copy(cut)  # the same cutouts and augmentations, not wrapping
        plain.wrap = False
        torch.manual_seed(0)
        ours = cut(image, torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        got.append(torch.equal(ours, plain(image, torch.Generator().manual_seed(1))))
    assert got == [False, True]  # tiled: the image rolled first; untiled: as plain cutouts


def test_lines_drawer_packs_its_strokes_and_fits_an_image():
    from pixgen.drawers.lines import LinesDrawer

    d = LinesDrawer(5, (16, 24), (1.0, 3.0), None, False, torch.device("cpu"))
    params = d.start(torch.Generator().manual_seed(0))
    points, widths, colours, paper = d.split(params)
    assert points.shape == (5, 4, 2) and widths.shape == (5,) and colours.shape == (5, 3)
    assert torch.allclose(d.pack(points, widths, colours, paper), params, atol=1e-6)
    image = torch.zeros(1, 3, 16, 24)
    image[:, 0] = 1  # all red
    _, _, colours, paper = d.split(d.fit(image, torch.Generator().manual_seed(0)))
    assert torch.equal(paper, torch.tensor([1.0, 0, 0])) and torch.equal(colours, paper.expand(5, 3))
    assert torch.allclose(d.render(d.fit(image, torch.Generator())), image, atol=1e-3)


def test_a_tiled_vqgan_pads_circularly_and_an_untiled_one_with_zeros():
    from pixgen.drawers.vqgan import VQGANDrawer
    from pixgen.models.vqgan import tiny_decoder

    dec = tiny_decoder()
    VQGANDrawer(dec, tile=True)
    modes = {m.padding_mode for m in dec.modules() if isinstance(m, torch.nn.Conv2d) and m.padding[0] > 0}
    assert modes == {"circular"}
    z = torch.randn(1, dec.arch.embed_dim, 4, 4)
    with torch.no_grad():
        a = VQGANDrawer(dec, tile=True).render(z)
        b = VQGANDrawer(dec, tile=True).render(z.roll(1, -1))
        assert torch.allclose(a.roll(dec.factor, -1), b, atol=1e-5)  # periodic: shifting the latent shifts the image
        VQGANDrawer(dec, tile=False)
    assert {m.padding_mode for m in dec.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}


def test_wrapping_cutouts_roll_the_image():
    from pixgen.loop.cutouts import Cutouts

    image = torch.rand(1, 3, 16, 16)
    plain, wrapped = Cutouts(8, 4, cut_min=1.0), Cutouts(8, 4, cut_min=1.0, wrap=True)
    same = plain(image, torch.Generator().manual_seed(0))
    assert not torch.allclose(wrapped(image, torch.Generator().manual_seed(0)), same)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--drawer", "pixel", "--pixel-size", "0x5"), "pixel_size"),
        (("--drawer", "pixel", "--pixel-size", "65x8"), "larger than the 64x64 image"),
        (("--drawer", "lines", "--strokes", "-1"), "strokes"),
        (("--drawer", "lines", "--stroke-width", "3,1"), "stroke_width"),
        (("--drawer", "pixel", "--palette", "nosuch"), "unknown palette 'nosuch'"),
        (("--tile", "--zoom-scale", "1.1"), "tile"),
        (("--drawer", "fft", "--zoom-rotate", "3"), "needs --drawer vqgan"),
        (("--drawer", "fft", "--schedule", "progressive"), "needs --drawer vqgan"),
        (("--drawer", "lines", "--speck-guard"), "it holds a drawer's cells back: --drawer vqgan or pixel"),
        (("--drawer", "crayon"), "drawer"),
    ],
)
def test_bad_drawer_input_is_one_line_and_exit_2(cli, tmp_path, args, needle):
    code, _, err = cli("a cat", *SMOKE, *args, "-o", tmp_path / "o")
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("drawer", ["pixel", "lines"])
def test_a_drawer_run_resumes_bit_identical(tmp_path, drawer):
    from pixgen import api
    from pixgen.settings import load_settings
    from tests.conftest import StopAfter

    def settings(out):
        base = dict(prompt="a red house", seed=3, iterations=4, save_every=2, size=[32, 32], gif=False)
        return load_settings(preset="smoke", overrides=dict(base, drawer=drawer, strokes=8, output_dir=str(out)))

    full = api.generate(settings(tmp_path / "full"))
    with pytest.raises(api.Interrupted) as e:
        api.generate(settings(tmp_path / "cut"), **StopAfter(2).kw())
    done = api.resume(e.value.args[0].run_dir)
    assert np.array_equal(np.asarray(Image.open(done.image)), np.asarray(Image.open(full.image)))
    extra = "cells.png" if drawer == "pixel" else "final.svg"
    assert (done.run_dir / extra).read_bytes() == (full.run_dir / extra).read_bytes()


def test_batch_and_serve_take_the_drawer_settings(cli, tmp_path):
    from pixgen.serve.form import settings_from_request

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- a cat\n- {prompt: a dog, drawer: pixel, pixel_size: 4x4}\n- {prompt: a cow, drawer: fft}\n")
    code, _, err = cli("batch", jobs, *SMOKE, "-i", "1", "-s", "16x16", "--no-gif", "-o", tmp_path / "o")
    assert code == 0, err
    assert Image.open(tmp_path / "o" / "0002-a-dog" / "cells.png").size == (4, 4)
    assert json.loads((tmp_path / "o" / "0003-a-cow" / "run.json").read_text())["settings"]["drawer"] == "fft"
    request = {"prompt": "x", "drawer": "lines", "stroke_width": "1,3", "tile": True, "palette": "gameboy"}
    s = settings_from_request(request, "smoke", tmp_path)
    assert (s.drawer, s.stroke_width, s.tile, s.palette) == ("lines", [1.0, 3.0], True, ["gameboy"])


def test_the_missing_models_check_needs_no_vqgan_for_other_drawers(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("a cat", "--drawer", "pixel", "--offline", "-o", tmp_path / "o")
    assert code == 2 and "no VQGAN needed" in err and "vqgan_imagenet" not in err, err


def test_restyle_draws_each_frame_through_the_drawer(cli, tmp_path, monkeypatch):
    import pixgen.models.loading

    def no_encoder(*a, **k):
        raise AssertionError("the VQGAN encoder was loaded")

    monkeypatch.setattr(pixgen.models.loading, "load_encoder", no_encoder)
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "out"
    args = ("--set", "drawer=pixel", "--set", "pixel_size=4x4", "-s", "16x16", "-i", "1", "-o", out)
    code, _, err = cli("restyle", src, "a red circle", *SMOKE, *args)
    assert code == 0, err
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["0.png", "1.png"]
