import math

import pytest
import torch

from pixgen.loop.losses import prompt_loss, spherical_distance, total_variation
from pixgen.loop.ops import clamp_with_grad, nearest_codes, quantize_st


def test_spherical_distance_known_angles():
    a = torch.tensor([[1.0, 0.0]])
    assert spherical_distance(a, a).item() == 0
    assert math.isclose(spherical_distance(a, torch.tensor([[0.0, 3.0]])).item(), math.pi**2 / 8, rel_tol=1e-5)
    assert math.isclose(spherical_distance(a, -a).item(), math.pi**2 / 2, rel_tol=1e-5)


def test_spherical_distance_broadcasts():
    a, b = torch.randn(5, 1, 8), torch.randn(1, 3, 8)
    assert spherical_distance(a, b).shape == (5, 3)


def _grad_toward(weight: float, stop: float = -math.inf):
    target = torch.tensor([[1.0, 0.0]])
    x = torch.tensor([[0.6, 0.8]], requires_grad=True)
    prompt_loss(x, target, torch.tensor([weight]), torch.tensor([stop])).backward()
    return x.grad


def test_prompt_loss_positive_weight_pulls_and_negative_pushes():
    g_pos, g_neg = _grad_toward(1.0), _grad_toward(-1.0)
    # gradient descent moves x by -grad: toward the target's x axis for +1, away for -1
    assert g_pos[0, 0] < 0 < g_neg[0, 0]
    assert torch.allclose(g_pos, -g_neg)


def test_prompt_loss_weight_scales_and_stop_cuts_gradient():
    assert torch.allclose(_grad_toward(2.0), 2 * _grad_toward(1.0))
    assert torch.count_nonzero(_grad_toward(1.0, stop=10.0)) == 0  # already below the stop
    assert torch.count_nonzero(_grad_toward(1.0, stop=0.0)) > 0


def test_prompt_loss_value_unchanged_by_stop():
    x, t = torch.randn(4, 8), torch.randn(2, 8)
    w = torch.tensor([1.0, 0.5])
    a = prompt_loss(x, t, w, torch.tensor([-math.inf, -math.inf]))
    b = prompt_loss(x, t, w, torch.tensor([10.0, 10.0]))
    assert torch.allclose(a, b)


def test_clamp_with_grad_passes_gradient_back_into_range():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = clamp_with_grad(x)
    assert torch.equal(y, torch.tensor([0.0, 0.5, 1.0]))
    # loss that wants all values larger: grad -1 everywhere
    (-y.sum()).backward()
    assert x.grad.tolist() == [-1.0, -1.0, 0.0]  # 1.5 would be pushed further out: blocked


def test_quantize_straight_through():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    z = torch.tensor([[[[0.9]], [[0.8]]]], requires_grad=True)  # (1, 2, 1, 1) near code 1
    assert nearest_codes(z, codebook).item() == 1
    zq = quantize_st(z, codebook)
    assert torch.equal(zq.detach().flatten(), torch.tensor([1.0, 1.0]))
    (zq * torch.tensor([2.0, 3.0]).view(1, 2, 1, 1)).sum().backward()
    assert z.grad.flatten().tolist() == [2.0, 3.0]


def test_total_variation_zero_for_flat_positive_for_edges():
    flat = torch.ones(1, 3, 8, 8)
    assert total_variation(flat).item() == 0
    edge = flat.clone()
    edge[..., 4:] = 0
    assert total_variation(edge).item() > 0


def test_cosine_distance_orders_like_spherical():
    from pixgen.loop.losses import DISTANCES, cosine_distance

    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    cos = cosine_distance(a, b)
    assert torch.allclose(cos, torch.tensor([0.0, 1 - math.sqrt(0.5), 1.0, 2.0]), atol=1e-6)
    sph = spherical_distance(a, b)
    assert torch.equal(cos.argsort(), sph.argsort())
    assert set(DISTANCES) == {"spherical", "cosine"}
    w, s = torch.tensor([1.0]), torch.tensor([-math.inf])
    assert prompt_loss(a, b[1:2], w, s, "cosine") == pytest.approx(1 - math.sqrt(0.5), abs=1e-6)


def _flat_picture():
    """A red square on blue (3, 32, 32) in [0, 1], with a soft edge: a column of their blend."""
    image = torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1).repeat(1, 32, 32)
    image[:, 8:24, 8:24] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    image[:, 8:24, 24] = torch.tensor([0.5, 0.15, 0.5]).view(3, 1)
    return image


def test_two_colours_are_the_ones_most_pixels_share():
    from pixgen.loop.specks import two_colours

    image = _flat_picture()
    image[:, 7, 8:24] = torch.tensor([0.75, 0.1, 0.1]).view(3, 1)  # a darker rim, in red's coarse colour
    a, b = two_colours(image)  # the median of the pixels near each, not the mean of its coarse colour
    assert torch.allclose(a, torch.tensor([0.1, 0.2, 0.9])) and torch.allclose(b, torch.tensor([0.9, 0.1, 0.1]))


def test_a_speck_is_a_small_group_of_no_blend_of_the_two_colours():
    from pixgen.loop.specks import group_sizes, speck_count, speck_counts, stray_pixels

    image = _flat_picture()
    assert speck_count(image) == 0 and not stray_pixels(image).any()  # the soft edge is no speck
    image[:, 2:4, 2:5] = torch.tensor([0.2, 0.9, 0.3]).view(3, 1, 1)  # 6 green pixels
    image[:, 28, 28] = image[:, 29, 29] = torch.tensor([0.9, 0.9, 0.2])  # 2 yellow, touching corners
    image[:, 26:32, 0:6] = torch.tensor([0.2, 0.9, 0.3]).view(3, 1, 1)  # 36 pixels: a region, no speck
    image[:, 30, 20] = torch.tensor([0.2, 0.9, 0.3])  # one pixel: no speck
    sizes = group_sizes(stray_pixels(image)[None])[0]
    assert sorted(sizes[sizes > 0].tolist()) == [1, 2, 6, 36]
    assert speck_count(image) == 2
    masks = torch.stack([stray_pixels(image), stray_pixels(_flat_picture()), stray_pixels(image)])
    assert speck_counts(masks).tolist() == [2, 0, 2]  # each mask its own groups, all at once
    from pixgen.loop.specks import speck_pixels

    want = torch.zeros(32, 32, dtype=torch.bool)
    want[2:4, 2:5] = want[28, 28] = want[29, 29] = True
    assert torch.equal(speck_pixels(image), want)  # the specks' pixels, not the region's or the lone one


def _guard_setup(cells: int = 16):
    """A pixel drawer of one pixel per cell and a red square on blue as its tensor."""
    from pixgen.drawers.pixel import PixelDrawer
    from pixgen.loop.specks import SpeckGuard

    drawer = PixelDrawer((cells, cells), (cells, cells), None, torch.device("cpu"))
    z = torch.tensor([0.1, 0.2, 0.9]).view(1, 3, 1, 1).repeat(1, 1, cells, cells)
    z[..., 4:12, 4:12] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    return drawer, z, SpeckGuard(drawer, z)


def test_the_speck_guard_holds_back_the_cells_of_a_speck_a_step_adds():
    drawer, z, guard = _guard_setup()
    assert torch.equal(guard.check(z, drawer.render(z), drawer.render), drawer.render(z))  # nothing to hold
    step = z.clone()
    step[..., 12, 8] = torch.tensor([0.5, 0.15, 0.5])  # a step softens the square's edge...
    step[..., 1:3, 1:3] = torch.tensor([0.2, 0.9, 0.3]).view(1, 3, 1, 1)  # ...and adds a green speck
    image = guard.check(step, drawer.render(step), drawer.render)
    want = z.clone()
    want[..., 12, 8] = step[..., 12, 8]  # the cells far from the speck keep their step
    assert torch.equal(step, want) and torch.equal(image, drawer.render(want))
    assert torch.equal(guard.clean, want) and not guard.seen.any()


def test_the_speck_guard_lets_through_a_speck_that_was_there_already():
    drawer, start, guard = _guard_setup()
    start[..., 1:3, 1:3] = torch.tensor([0.2, 0.9, 0.3]).view(1, 3, 1, 1)  # the start has a speck
    guard.reset(start)
    z = start.clone()
    guard.check(z, drawer.render(z), drawer.render)  # nothing clean to go back to: it stays
    assert torch.equal(z, start) and guard.seen[..., 1:3, 1:3].all()
    z[..., 1, 1] = torch.tensor([0.2, 0.8, 0.3])  # a step moves it: seen before, so let through
    moved = z.clone()
    guard.check(z, drawer.render(z), drawer.render)
    assert torch.equal(z, moved)
    assert torch.equal(guard.final(z, drawer.render), moved)
