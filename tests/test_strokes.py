import xml.etree.ElementTree as ET

import pytest
import torch

from pixgen.drawers.strokes import random_strokes, rasterise, sample_curves, segment_distance2, to_svg

PAPER = torch.tensor([1.0, 0.95, 0.9])
SVG = "{http://www.w3.org/2000/svg}"


def _naive(points, widths, colours, paper, height, width, wrap=False, softness=1.0, samples=16):
    """Every pixel against every segment of every stroke (and 7x7 periodic copies with wrap)."""
    curves = sample_curves(points, samples)
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    ks = range(-3, 4) if wrap else [0]
    shifts = torch.tensor([[i * width, j * height] for i in ks for j in ks], dtype=points.dtype)[:, None, None, None]
    image = paper[:, None, None].expand(3, height, width)
    for curve, w, colour in zip(curves, widths, colours, strict=True):
        a, b = curve[:-1, None, None] + shifts, curve[1:, None, None] + shifts  # (copies, segments, 1, 1, 2)
        d2 = segment_distance2(x, y, *a.unbind(-1), *b.unbind(-1))
        a = torch.sigmoid((w / 2 - d2.amin((0, 1)).clamp_min(1e-12).sqrt()) / softness)
        if len(colour) == 4:
            a = a * colour[3]
        image = torch.lerp(image, colour[:3, None, None], a)
    return image[None]


def _line(x0, y0, x1, y1):
    """A straight Bézier from (x0, y0) to (x1, y1): (1, 4, 2)."""
    t = torch.tensor([0, 1 / 3, 2 / 3, 1.0])[:, None]
    return (torch.tensor([x0, y0]) * (1 - t) + torch.tensor([x1, y1]) * t)[None]


def test_sample_curves_ends_on_end_points_and_straight_curves_stay_straight():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(5, 4, 2, generator=g) * 100
    samples = sample_curves(points, 9)
    assert samples.shape == (5, 9, 2)
    assert torch.equal(samples[:, 0], points[:, 0]) and torch.equal(samples[:, -1], points[:, -1])
    # control points on one line, unevenly spaced: every sample on that line, between the ends
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([40.0, 25.0])
    line = (a + torch.tensor([0.0, 0.7, 0.2, 1.0])[:, None] * (b - a))[None]
    s = sample_curves(line, 16)[0] - a
    cross = s[:, 0] * (b - a)[1] - s[:, 1] * (b - a)[0]
    assert cross.abs().max() < 1e-3
    along = s @ (b - a) / (b - a).pow(2).sum()
    assert along.min() >= -1e-6 and along.max() <= 1 + 1e-6
    with pytest.raises(ValueError):
        sample_curves(points, 1)


def test_horizontal_stroke_inks_within_half_its_width_and_leaves_far_pixels_paper():
    ink = torch.tensor([0.1, 0.2, 0.6])
    image = rasterise(_line(-5, 16, 45, 16), torch.tensor([4.0]), ink[None], PAPER, 32, 40, softness=0.5)
    cover = ((PAPER[:, None, None] - image[0]) / (PAPER - ink)[:, None, None]).mean(0)  # (32, 40)
    assert torch.allclose(cover, cover[:, :1].expand_as(cover), atol=1e-5)  # the same in every column
    row = cover[:, 20]
    # pixel centres at y = 15.5 and 16.5 lie 0.5 px from the line, 14.5 and 17.5 lie 1.5 px away
    assert (row[14:18] > 0.7).all() and (row[15:17] > 0.9).all()
    assert (row[:14] < 0.5).all() and (row[18:] < 0.5).all()
    assert torch.equal(image[0, :, :8], PAPER[:, None, None].expand(3, 8, 40))  # 8 px and more away
    assert torch.equal(image[0, :, 25:], PAPER[:, None, None].expand(3, 7, 40))


@pytest.mark.parametrize("wrap", [False, True])
def test_matches_every_pixel_against_every_segment(wrap):
    g = torch.Generator().manual_seed(3)
    points, widths, colours = random_strokes(12, 30, 44, g, width_range=(1.0, 9.0))
    points = torch.cat([points, torch.rand(3, 4, 2, generator=g) * 100 - 30])  # long, some off the canvas
    widths = torch.cat([widths, torch.tensor([2.0, 6.0, 0.5])])
    colours = torch.cat([colours, torch.rand(3, 3, generator=g)])
    colours = torch.cat([colours, torch.rand(15, 1, generator=g)], dim=1)  # with alpha
    for softness in (0.5, 2.0):
        fast = rasterise(points, widths, colours, PAPER, 30, 44, wrap=wrap, softness=softness, samples=10)
        slow = _naive(points, widths, colours, PAPER, 30, 44, wrap=wrap, softness=softness, samples=10)
        assert (fast - slow).abs().max() < 2e-3


def test_later_strokes_lie_on_top():
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    across, down = _line(0, 10, 20, 10), _line(10, 0, 10, 20)
    points, widths = torch.cat([across, down]), torch.tensor([4.0, 4.0])
    image = rasterise(points, widths, torch.stack([red, blue]), PAPER, 20, 20, softness=0.2)
    assert torch.allclose(image[0, :, 10, 10], blue, atol=1e-3)  # the crossing
    assert torch.allclose(image[0, :, 10, 3], red, atol=1e-3) and torch.allclose(image[0, :, 3, 10], blue, atol=1e-3)
    image = rasterise(points.flip(0), widths, torch.stack([blue, red]), PAPER, 20, 20, softness=0.2)
    assert torch.allclose(image[0, :, 10, 10], red, atol=1e-3)  # the same strokes, drawn in the other order
    assert torch.allclose(image[0, :, 10, 3], red, atol=1e-3) and torch.allclose(image[0, :, 3, 10], blue, atol=1e-3)


def test_alpha_mixes_the_stroke_with_what_lies_below():
    ink = torch.tensor([[0.0, 0.0, 0.0, 0.25]])
    image = rasterise(_line(0, 10, 20, 10), torch.tensor([6.0]), ink, PAPER, 20, 20, softness=0.1)
    assert torch.allclose(image[0, :, 10, 10], 0.75 * PAPER, atol=1e-3)


def test_gradients_reach_points_widths_and_colours_near_a_stroke():
    points = _line(4, 12, 28, 20).requires_grad_()
    widths = torch.tensor([3.0], requires_grad=True)
    colours = torch.tensor([[0.2, 0.4, 0.6, 0.9]], requires_grad=True)
    image = rasterise(points, widths, colours, PAPER, 32, 32)
    # one pixel 3 px outside the stroke's edge: it still pulls the stroke
    centre_y = 12 + 8 * (15.5 - 4) / 24  # the line's y at x = 15.5
    image[0, :, round(centre_y + 4.5), 15].sum().backward()
    for t in (points, widths, colours):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # the ink is darker than the paper: moving the stroke down toward the pixel, or widening it,
    # inks the pixel more and lowers its sum
    assert points.grad[0, :, 1].sum() < 0 and widths.grad[0] < 0


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(1)
    points, widths, colours = random_strokes(2, 12, 14, g, width_range=(2.0, 4.0))
    colours = torch.cat([colours, torch.full((2, 1), 0.8)], dim=1)
    inputs = tuple(t.double().requires_grad_() for t in (points, widths, colours))
    for wrap in (False, True):
        f = lambda p, w, c, wrap=wrap: rasterise(p, w, c, PAPER.double(), 12, 14, wrap=wrap, samples=6)
        assert torch.autograd.gradcheck(f, inputs, atol=1e-5, fast_mode=True)


def test_wrapped_stroke_continues_on_the_opposite_edge_and_unwrapped_is_cut_off():
    ink = torch.tensor([[0.0, 0.0, 0.0]])
    points, widths = _line(24, 8, 40, 8), torch.tensor([3.0])  # leaves the 32 px canvas at the right
    wrapped = rasterise(points, widths, ink, PAPER, 16, 32, wrap=True, softness=0.3)
    cut = rasterise(points, widths, ink, PAPER, 16, 32, wrap=False, softness=0.3)
    assert (wrapped[0, :, 8, :6] < 0.05).all()  # x in [0, 6] is x in [32, 38]
    assert torch.allclose(cut[0, :, 8, :6], PAPER[:, None].expand(3, 6), atol=1e-3)
    assert torch.allclose(wrapped[0, :, :, 24:], cut[0, :, :, 24:], atol=1e-3)
    shifted = rasterise(points - torch.tensor([32.0, -16.0]), widths, ink, PAPER, 16, 32, wrap=True, softness=0.3)
    assert torch.allclose(shifted, wrapped, atol=1e-5)  # whole periods change nothing


def _crossing_strokes(seed):
    g = torch.Generator().manual_seed(seed)
    points, widths, colours = random_strokes(40, 24, 32, g, width_range=(1.0, 6.0))
    return points * 1.3 - 4, widths, colours  # many cross the edges


def test_wrapped_image_is_periodic():
    points, widths, colours = _crossing_strokes(0)
    image = rasterise(points, widths, colours, PAPER, 24, 32, wrap=True)
    # moving every stroke by (dx, dy) rolls the image by as much
    moved = rasterise(points + torch.tensor([5.0, 7.0]), widths, colours, PAPER, 24, 32, wrap=True)
    assert torch.allclose(moved, image.roll((7, 5), dims=(2, 3)), atol=2e-3)


def test_tiled_2x2_seams_change_no_more_than_the_interior():
    for wrap in (True, False):
        images = torch.cat([rasterise(*_crossing_strokes(seed), PAPER, 24, 32, wrap=wrap) for seed in range(3)])
        tiled = images.repeat(1, 1, 2, 2)
        for dim, size in ((2, 24), (3, 32)):
            gap = tiled.diff(dim=dim).abs().mean((0, 1, 5 - dim))  # mean change across each row (column) gap
            interior = torch.cat([gap[: size - 1], gap[size : 2 * size - 1]])
            if wrap:
                assert gap[size - 1] <= interior.max()
            else:  # cut-off strokes: the seam stands out
                assert gap[size - 1] > 2 * interior.max()


def test_svg_has_a_path_per_stroke_in_the_strokes_colours():
    g = torch.Generator().manual_seed(2)
    points, widths, colours = random_strokes(6, 40, 50, g)
    text = to_svg(points, widths, colours, PAPER, 40, 50)
    assert text == to_svg(points, widths, colours, PAPER, 40, 50)  # deterministic
    root = ET.fromstring(text)
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("50", "40", "0 0 50 40")
    rect = root.find(f"{SVG}rect")
    assert rect.get("fill") == "#fff2e5"
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 6
    for path, p, w, c in zip(paths, points, widths, colours, strict=True):
        assert [int(path.get("stroke")[i : i + 2], 16) for i in (1, 3, 5)] == [round(v * 255) for v in c.tolist()]
        assert float(path.get("stroke-width")) == pytest.approx(w.item(), abs=0.01)
        assert path.get("stroke-linecap") == "round" and path.get("fill") == "none"
        d = path.get("d").split()
        assert d[0] == "M" and d[3] == "C" and len(d) == 10
        numbers = [float(v) for v in d[1:3] + d[4:]]
        assert numbers == pytest.approx(p.flatten().tolist(), abs=0.01)


def test_svg_alpha_and_wrapped_copies():
    ink = torch.tensor([[0.0, 0.5, 1.0, 0.4], [1.0, 0.0, 0.0, 1.0]])
    points = torch.cat([_line(24, 8, 40, 8), _line(10, 4, 20, 12)])  # the first leaves at the right
    root = ET.fromstring(to_svg(points, torch.tensor([2.0, 2.0]), ink, PAPER, 16, 32, wrap=True))
    paths = root.findall(f"{SVG}path")
    assert [p.get("stroke") for p in paths] == ["#0080ff", "#0080ff", "#ff0000"]
    assert paths[0].get("stroke-opacity") == "0.4"
    starts = sorted(float(p.get("d").split()[1]) for p in paths[:2])
    assert starts == [-8.0, 24.0]  # drawn where it is and a canvas width to the left
    plain = ET.fromstring(to_svg(points, torch.tensor([2.0, 2.0]), ink, PAPER, 16, 32))
    assert len(plain.findall(f"{SVG}path")) == 2


def test_random_strokes_are_short_seeded_and_in_range():
    a = random_strokes(50, 100, 200, torch.Generator().manual_seed(7), width_range=(2.0, 3.0))
    b = random_strokes(50, 100, 200, torch.Generator().manual_seed(7), width_range=(2.0, 3.0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    points, widths, colours = a
    assert points.shape == (50, 4, 2) and widths.shape == (50,) and colours.shape == (50, 3)
    assert (points[:, 0, 0] < 200).all() and (points[:, 0, 1] < 100).all() and (points[:, 0] >= 0).all()
    step = points.diff(dim=1).abs()
    assert (step[..., 0] <= 20).all() and (step[..., 1] <= 10).all()
    assert ((widths >= 2) & (widths <= 3)).all() and ((colours >= 0) & (colours <= 1)).all()


def test_no_strokes_is_paper_and_bad_points_are_refused():
    points = torch.zeros(0, 4, 2, requires_grad=True)
    image = rasterise(points, torch.zeros(0), torch.zeros(0, 3), PAPER, 10, 12, wrap=True)
    assert torch.equal(image, PAPER[None, :, None, None].expand(1, 3, 10, 12))
    image.sum().backward()  # still in the graph
    with pytest.raises(ValueError):
        rasterise(torch.zeros(2, 3, 2), torch.ones(2), torch.zeros(2, 3), PAPER, 10, 10)
    with pytest.raises(ValueError):
        rasterise(torch.zeros(2, 4, 2), torch.ones(2), torch.zeros(2, 3), PAPER, 10, 10, softness=0)
