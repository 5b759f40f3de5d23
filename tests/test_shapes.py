"""The shapes world, its judge, the training scripts, and the shipped models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.models.loading import load_decoder, load_scorer
from pixgen.shapes import world
from pixgen.shapes.judge import judge
from pixgen.shapes.models import CLIP_ARCH
from pixgen.shapes.train import (
    PART_GROUPS,
    _part_classes,
    judged_samples,
    part_captions,
    train_clip,
    train_vqgan,
)


def test_world_is_deterministic_and_holds_out_combos():
    a = world.batch(np.random.default_rng(5), 8)
    b = world.batch(np.random.default_rng(5), 8)
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    assert not set(world.HELD_OUT) & set(world.TRAIN_COMBOS)
    assert len(world.HELD_OUT) == 10 and all(c.colour != c.background for c in world.ALL_COMBOS)
    assert world.Combo("circle", "red", "blue").caption(1) == "a blue background with a red circle"


def test_judge_reads_rendered_images_right():
    rng = np.random.default_rng(0)
    combos = [world.ALL_COMBOS[i] for i in rng.integers(len(world.ALL_COMBOS), size=300)]
    right = sum(judge(world.sample(rng, c)) == c for c in combos)
    assert right / len(combos) >= 0.99


def test_judge_says_none_for_a_flat_image():
    flat = np.full((64, 64, 3), world.COLOURS["blue"], np.uint8)
    got = judge(flat)
    assert got.background == "blue" and got.shape == "none"


def test_training_scripts_run_and_write_loadable_weights(tmp_path):
    v = train_vqgan(2, 0, tmp_path, batch=2, log_every=0)
    c = train_clip(2, 0, tmp_path, batch=4, log_every=0)
    assert np.isfinite(v["final_mse"]) and np.isfinite(c["final_loss"])
    from pixgen.models.scorer import load_clip_file
    from pixgen.models.vqgan import load_decoder_safetensors

    dec = load_decoder_safetensors(tmp_path / "vqgan.safetensors")
    assert dec(torch.randn(1, 32, 8, 8)).shape == (1, 3, 64, 64)
    scorer = load_clip_file(CLIP_ARCH, tmp_path / "clip.safetensors")
    assert scorer.encode_text(["a red circle"]).shape == (1, 64)


def test_attribute_captions_are_all_seen_in_training_and_name_no_held_out_combination(tmp_path):
    """The ranking CLIP's attribute captions: every one a held-out prompt needs is among the
    training classes (each attribute and pair of them occurs in the training combinations), and
    none of them names a held-out combination whole."""
    classes = _part_classes()
    assert [len(g) for g in classes] == [3, 6, 6, 18, 30]
    for combo in world.HELD_OUT:
        assert all(t in classes[g] for g, t in enumerate(part_captions(combo)))
    held = {c.caption(t) for c in world.HELD_OUT for t in range(len(world.TEMPLATES))}
    assert not held & {t for g in classes for t in g} and len(PART_GROUPS) == 5
    assert part_captions(world.Combo("square", "blue", "black"))[3] == "a square on a black background"
    c = train_clip(2, 0, tmp_path, batch=4, log_every=0, parts=1.0, decoded=1.0, pool=8)
    assert np.isfinite(c["final_loss"]) and c["parts"] == 1.0
    first = tmp_path / "first.safetensors"
    (tmp_path / "clip.safetensors").rename(first)
    more = train_clip(1, 1, tmp_path, batch=4, log_every=0, decoded=1.0, pool=4, start=first, judged=6)
    assert np.isfinite(more["final_loss"]) and more["start"] == str(first)


def test_judged_samples_are_labelled_by_the_judge_and_never_held_out(monkeypatch):
    images, combos = judged_samples(12, 3)
    assert len(images) == len(combos) > 0 and images.dtype == np.uint8
    assert all(c in world.TRAIN_COMBOS and judge(a) == c for a, c in zip(images, combos, strict=True))
    # a picture the judge reads as a held-out combination is dropped
    reads = iter([world.HELD_OUT[0], world.TRAIN_COMBOS[0]] * 6)
    monkeypatch.setattr("pixgen.shapes.train.judge", lambda image: next(reads))
    images, combos = judged_samples(12, 3)
    assert len(images) == 6 and set(combos) == {world.TRAIN_COMBOS[0]}


def test_shipped_models_load_through_the_real_loaders():
    dec, scorer = load_decoder("shapes"), load_scorer("shapes")
    assert dec.factor == 8 and scorer.input_size == 64
    assert sum(p.numel() for p in scorer.parameters()) > 1_000_000


def test_shipped_clip_knows_the_world():
    scorer = load_scorer("shapes")
    rng = np.random.default_rng(1)
    labels = [c.caption(0) for c in world.ALL_COMBOS]
    text = scorer.encode_text(labels)
    combos = [world.ALL_COMBOS[i] for i in rng.integers(len(world.ALL_COMBOS), size=60)]
    images = torch.from_numpy(np.stack([world.sample(rng, c) for c in combos])).permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        pred = (scorer.encode_image(images) @ text.T).argmax(1)
    right = sum(world.ALL_COMBOS[int(i)] == c for i, c in zip(pred, combos, strict=True))
    assert right / len(combos) >= 0.7


def test_generation_follows_held_out_colour_prompts(cli, tmp_path):
    """The semantic end-to-end test: held-out prompts through the CLI, graded by the independent
    judge. The preset gets both colours right on every one of 60 held-out runs (BENCHMARKS.md);
    this asks for both colours on each of the first three at seed 0, and the shape too on two."""
    right = whole = 0
    for i, combo in enumerate(world.HELD_OUT[:3]):
        out = tmp_path / str(i)
        code, _, err = cli(combo.caption(0), "--preset", "shapes", "--seed", "0", "-o", out, "--no-gif")
        assert code == 0, err
        (run,) = out.iterdir()
        got = judge(np.asarray(Image.open(run / "final.png").convert("RGB")))
        right += (got.background, got.colour) == (combo.background, combo.colour)
        whole += got == combo
    assert right == 3 and whole >= 2


def _gen(tmp_path, prompt, **kw):
    from pixgen import api
    from pixgen.settings import load_settings

    s = load_settings(
        preset="shapes", overrides=dict(prompt=prompt, seed=0, output_dir=str(tmp_path), gif=False, save_every=0, **kw)
    )
    return np.asarray(Image.open(api.generate(s).image).convert("RGB")).astype(np.float32)


def test_image_prompt_moves_toward_a_green_square(tmp_path):
    """An image prompt of a rendered green square pulls the image's colour toward green."""
    square = world.render(world.Combo("square", "green", "white"), 32, 32, 36)
    Image.fromarray(square).save(tmp_path / "sq.png")
    plain = _gen(tmp_path / "a", "a shape")
    steered = _gen(tmp_path / "b", "a shape", image_prompts=[f"{tmp_path / 'sq.png'}:2"])
    green = np.array(world.COLOURS["green"], np.float32)
    dist = lambda img: np.linalg.norm(img - green, axis=-1).min(axis=None)  # noqa: E731
    share = lambda img: (np.linalg.norm(img - green, axis=-1) < 90).mean()  # noqa: E731
    assert share(steered) > share(plain) and dist(steered) <= dist(plain)


def test_negative_red_lowers_red_content(tmp_path):
    """Against the same seed, a negative prompt "red" removes red pixels the prompt asked for."""
    prompt = "a red square on a white background"
    plain = _gen(tmp_path / "a", prompt)
    neg = _gen(tmp_path / "b", prompt, negative=["red"])
    red = np.array(world.COLOURS["red"], np.float32)
    share = lambda img: (np.linalg.norm(img - red, axis=-1) < 100).mean()  # noqa: E731
    assert share(neg) < 0.5 * share(plain)


def test_off_palette_flags_colours_outside_the_world():
    from pixgen.shapes.judge import off_palette

    img = world.render(world.Combo("circle", "red", "blue"), 32, 32, 30)
    assert not off_palette(img)
    orange = img.copy()
    orange[:20, :20] = (240, 140, 20)  # a flat orange patch, far from all six colours
    assert off_palette(orange)


def test_specks_counts_small_stray_groups_not_soft_edges_or_world_images():
    from pixgen.shapes.judge import specks

    rng = np.random.default_rng(0)
    assert sum(specks(world.sample(rng, c)) for c in world.ALL_COMBOS) == 0
    img = world.render(world.Combo("square", "red", "blue"), 32, 32, 30)
    soft = img.copy()  # a soft edge, speck-sized: blends of red and blue on the square's left side
    soft[20:25, 16] = (128, 45, 130)
    soft[20:25, 15] = (80, 50, 180)
    assert specks(soft) == 0
    specked = img.copy()
    specked[10:12, 10] = (40, 240, 230)  # two cyan pixels: a speck
    specked[40, 50:52] = (250, 130, 250)  # two pink pixels, apart: another
    specked[50, 20] = (40, 240, 230)  # one pixel is no speck
    assert specks(specked) == 2
    specked[25:45, 25:45] = (240, 140, 20)  # a large off-palette patch is a region, not a speck
    assert specks(specked) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["clip", "--steps", "0"], "at least 1"),
        (["vqgan", "--steps", "x"], "whole number"),
        (["clip"], "not a folder"),
        (["encoder", "--lr", "nan"], "must be a finite number"),
    ],
)
def test_training_cli_rejects_bad_steps_and_out(tmp_path, capsys, args, message):
    from pixgen.shapes.train import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(blocker)])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parts", "nan"], "--parts: must be a finite number at least 0, got 'nan'"),
        (["--decoded", "inf"], "--decoded: must be a finite number between 0 and 1"),
        (["--lr", "0"], "--lr: must be a finite number above 0"),
        (["--judged", "5"], "give --decoded too"),
        (["--from", "missing.safetensors"], "no such file"),
        (["--from", "{bad}"], "are unreadable"),
    ],
)
def test_training_cli_rejects_bad_clip_options_in_one_line(tmp_path, capsys, args, message):
    from pixgen.shapes.train import main

    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a safetensors file")
    with pytest.raises(SystemExit) as e:
        main(["clip", "--steps", "1", "--out", str(tmp_path / "out"), *(a.format(bad=bad) for a in args)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "clip.safetensors").exists()


def test_stray_loss_is_zero_on_blends_of_the_two_colours_and_grows_off_them():
    from pixgen.shapes.train import stray_loss

    bg, fg = torch.tensor([[1.0, -1, -1]]), torch.tensor([[-1.0, -1, 1]])  # red and blue in [-1, 1]
    t = torch.linspace(0, 1, 5)[None, :, None]  # (1, 5, 1): five blends from red to blue
    blends = (bg[:, :, None] + t.transpose(1, 2) * (fg - bg)[:, :, None])[..., None]  # (1, 3, 5, 1)
    assert stray_loss(blends, bg, fg) == 0
    green = blends.clone()
    green[0, :, 2, 0] = torch.tensor([-1.0, 1, -1])  # one stray pixel of five
    far = float(torch.tensor([-1.0, 1, -1]).sub(torch.tensor([0.0, -1, 0])).norm())  # to the blend's midpoint
    assert float(stray_loss(green, bg, fg)) == pytest.approx((far - 0.1) ** 2 / 5, rel=1e-5)


def test_snapped_redraws_a_picture_in_its_two_colours_without_its_speck():
    from pixgen.shapes import world
    from pixgen.shapes.judge import specks
    from pixgen.shapes.train import snapped

    image = world.render(world.Combo("circle", "red", "blue"), 32, 32, 30).copy()
    image[10:13, 10:13] = (120, 200, 160)  # a speck of no world colour
    image[40:50, 40:50] = (40, 70, 215)  # a smudge near the background's blue
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    picture, two = snapped(x)
    out = ((picture[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {world.COLOURS["red"], world.COLOURS["blue"]} and specks(out) == 0 and specks(image) > 0
    assert {tuple(((c + 1) * 127.5).round().int().tolist()) for c in two[0]} == colours


def test_despecked_changes_a_speck_and_its_rim_and_keeps_the_soft_edges_and_the_rest():
    from pixgen.shapes import world
    from pixgen.shapes.judge import specks
    from pixgen.shapes.train import despecked

    image = world.render(world.Combo("circle", "red", "blue"), 32, 32, 30).copy()
    image[:, 31] = (160, 20, 70)  # a soft edge: a blend of red and blue, a column long
    image[10:13, 10:13] = (120, 200, 160)  # a speck of no world colour
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    out, mask = despecked(x)
    assert mask[0, 0, 9:14, 9:14].all() and mask.sum() == 25  # the speck, grown by a pixel
    assert torch.equal(out[~mask.expand_as(out)], x[~mask.expand_as(x)])  # the rest as it was
    back = ((out[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    assert specks(image) > 0 and specks(back) == 0


def test_scene_batch_draws_training_subjects_in_their_own_boxes_on_one_background():
    from pixgen.shapes import world
    from pixgen.shapes.judge import palette_labels
    from pixgen.shapes.scenes import read_box
    from pixgen.shapes.train import scene_batch

    quarters = [(0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1)]
    halves = [(0, 0, 0.5, 1), (0.5, 0, 1, 1), (0, 0, 1, 0.5), (0, 0.5, 1, 1)]
    for image in scene_batch(np.random.default_rng(0), 12):
        labels = palette_labels(image)
        corners = {tuple(image[y, x]) for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1))}
        assert len(corners) == 1  # one background
        read = [read_box(labels, box) for box in quarters + halves]
        subjects = [c for c in read[:4] if c.shape != "none"]
        assert len(subjects) >= 1 and all(c in world.TRAIN_COMBOS for c in subjects if c.colour != c.background)


def test_moved_pictures_are_the_world_pictures_moved_as_the_zoom_moves_them_drawn_sharp():
    from pixgen.drawers.vqgan import warp
    from pixgen.shapes.train import moved_pictures

    small, moves, sharp, combos = moved_pictures(np.random.default_rng(1), 24)
    assert small.shape == sharp.shape == (24, 3, 64, 64) and len(moves) == len(combos) == 24
    assert all(c in world.TRAIN_COMBOS for c in combos)
    still = [i for i, m in enumerate(moves) if m == (1.0, (0.0, 0.0), 0.0)]
    moved = [i for i, m in enumerate(moves) if m[0] != 1.0]
    assert still and moved
    for i in still:  # the same picture, only its edge antialiased
        assert (sharp[i] - small[i]).abs().amax(0).gt(0.02).float().mean() < 0.1

    def centre(x, combo):  # the subject's centre of mass, its pixels weighted by how near its colour
        subject, background = (torch.tensor(world.COLOURS[c]) / 255 for c in (combo.colour, combo.background))
        near = 1 - (x - subject[:, None, None]).norm(dim=0) / (background - subject).norm()
        w = near.clamp(0, 1)
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum()

    off = []  # where the 64 px warp puts it, drawn sharp (to a fraction of a pixel; the reflected
    for i in moved:  # edges differ by up to a pixel and a half)
        blurred = warp(small[i : i + 1], *moves[i]).clamp(0, 1)[0]
        assert (sharp[i] - blurred).abs().mean() < 0.03
        off.append(float((centre(sharp[i], combos[i]) - centre(blurred, combos[i])).abs().max()))
    assert np.median(off) < 0.2 and max(off) < 1.5


def test_finetune_encoder_changes_the_encoder_and_keeps_the_decoder(tmp_path):
    from pixgen.models.vqgan import load_decoder_safetensors, load_encoder_safetensors
    from pixgen.shapes.models import ENCODER_FILE, VQGAN_FILE
    from pixgen.shapes.train import finetune_encoder

    info = finetune_encoder(2, 0, tmp_path, batch=2, pool=4, log_every=0, evaluate=8)
    assert np.isfinite(info["final_mse"]) and info["held_out_drawn_moved_with_a_speck"].endswith("/8")

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    assert same(load_decoder_safetensors(tmp_path / "vqgan.safetensors"), load_decoder_safetensors(VQGAN_FILE))
    assert not same(
        load_encoder_safetensors(tmp_path / "vqgan_encoder.safetensors"), load_encoder_safetensors(ENCODER_FILE)
    )
