"""Region prompts (issue 30): the syntax, cutouts that stay inside their boxes, the loss that
averages each prompt over its own region, the region start, and the scene judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.errors import PixgenError
from pixgen.loop.cutouts import Cutouts
from pixgen.loop.losses import prompt_loss, region_shares
from pixgen.loop.prompts import MAX_REGIONS, Prompt, parse_prompt, parse_prompt_spec
from pixgen.loop.targets import Targets
from pixgen.regions import REGIONS
from pixgen.shapes.scenes import TASKS, Asked, render_scene
from pixgen.shapes.world import Combo
from pixgen.starts.regions import codes_or_fit, letterbox, paste_codes, place, trim

LEFT, RIGHT = REGIONS["left"], REGIONS["right"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("a red house @left", Prompt("a red house", region=LEFT)),
        ("a lake @bottom:0.5", Prompt("a lake", 0.5, region=REGIONS["bottom"])),
        ("a lake @bottom:0.5:0.2", Prompt("a lake", 0.5, 0.2, REGIONS["bottom"])),
        ("a cat @Top-Left", Prompt("a cat", region=(0.0, 0.0, 0.5, 0.5))),
        ("a cat @centre", Prompt("a cat", region=(0.25, 0.25, 0.75, 0.75))),
        ("x @0.1,0.2,0.5,0.9:2", Prompt("x", 2.0, region=(0.1, 0.2, 0.5, 0.9))),
        ("at 10:30 @right:2", Prompt("at 10:30", 2.0, region=RIGHT)),  # the region ends the text
        # "@" that is no region stays text: an e-mail address, a word, a lone "@"
        ("write to bob@example.com", Prompt("write to bob@example.com")),
        ("back @home", Prompt("back @home")),
        ("meet @ noon", Prompt("meet @ noon")),
        ("price @5", Prompt("price @5")),
        ("a photo in 4:3", Prompt("a photo in 4:3")),
    ],
)
def test_region_syntax(spec, expected):
    assert parse_prompt(spec) == expected


@pytest.mark.parametrize(
    "spec, words",
    [
        ("a cat @lfet", "did you mean @left"),
        ("a cat @top-rigth", "did you mean @top-right"),
        ("a cat @0,0,1.5,1", "outside 0-1"),
        ("a cat @0,0,-0.5,1", "outside 0-1"),
        ("a cat @0.5,0,0.5,1", "empty or inverted"),
        ("a cat @0.6,0,0.2,1", "empty or inverted"),
        ("a cat @0,0,1", "four numbers"),
        ("a cat @0,0,1,1,1", "four numbers"),
        ("a cat @nan,0,1,1", "four numbers"),
        ("@left", "empty prompt"),
    ],
)
def test_bad_regions_are_one_clear_error(spec, words):
    with pytest.raises(PixgenError, match=words):
        parse_prompt(spec)


def test_more_regions_than_the_bound_is_an_error():
    boxes = [f"p{i} @{i / 40:.3f},0,1,1" for i in range(MAX_REGIONS + 1)]
    with pytest.raises(PixgenError, match=f"at most {MAX_REGIONS} regions"):
        parse_prompt_spec(" | ".join(boxes))
    assert len(parse_prompt_spec(" | ".join(boxes[:MAX_REGIONS]))[0]) == MAX_REGIONS


def test_bad_regions_exit_2_in_one_line(cli, tmp_path):
    code, _, err = cli("a cat @lfet | a dog @right", "--preset", "smoke", "-o", tmp_path)
    assert code == 2 and "did you mean @left" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_region_cutouts_stay_inside_their_boxes():
    """Each cutout of a region shows only that region: the image is 0 left, 1 right, and the
    cutouts of `left` read 0, those of `right` 1, those of the whole image some of each."""
    image = torch.zeros(1, 3, 48, 64)
    image[..., 32:] = 1
    cuts, owner = Cutouts(16, 30, cut_min=0.2).regional(image, torch.Generator().manual_seed(0), [None, LEFT, RIGHT])
    assert owner.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert cuts[owner == 1].max() < 1e-6 and cuts[owner == 2].min() > 1 - 1e-6
    assert cuts[owner == 0].min() < 0.5 < cuts[owner == 0].max()
    boxes = Cutouts(16, 200, cut_min=0.0).boxes_within((10.0, 20.0, 30.0, 60.0), torch.Generator().manual_seed(1), 200)
    assert boxes[:, 0].min() >= 10 and boxes[:, 2].max() <= 30 and boxes[:, 1].min() >= 20 and boxes[:, 3].max() <= 60
    sides = boxes[:, 2] - boxes[:, 0]
    assert torch.allclose(sides, boxes[:, 3] - boxes[:, 1], atol=1e-4) and sides.max() <= 20 and sides.min() >= 8


def test_each_prompt_averages_over_its_own_regions_cutouts():
    owner = torch.tensor([0, 0, 1, 1, 1])
    shares = region_shares(owner, torch.tensor([1, 0]))
    assert torch.allclose(shares, torch.tensor([[0, 0.5], [0, 0.5], [1 / 3, 0], [1 / 3, 0], [1 / 3, 0]]))
    embeds, targets = torch.randn(5, 8), torch.randn(2, 8)
    weights, stops = torch.tensor([1.0, 2.0]), torch.full((2,), -math.inf)
    got = prompt_loss(embeds, targets, weights, stops, share=shares)
    want = prompt_loss(embeds[2:], targets[:1], weights[:1], stops[:1]) + prompt_loss(
        embeds[:2], targets[1:], weights[1:], stops[1:]
    )
    assert torch.allclose(got, want)


def test_a_region_prompt_moves_only_its_region(tmp_path):
    """The gradient of a step's loss for a prompt @left reaches the left half of the image only
    (and the column the resampling's last bilinear tap touches)."""
    from pixgen.loop.optimise import ClipTerm
    from pixgen.models.loading import load_scorer

    scorer = load_scorer("tiny")
    targets = Targets.from_prompts(scorer, [Prompt("a cat", region=LEFT)]) + Targets.from_prompts(
        scorer, [Prompt("a dog", -1.0)]
    )
    assert targets.regions == (LEFT, None)
    left = Targets(targets.embeds[:1], targets.weights[:1], targets.stops[:1], (LEFT,))
    only_left = ClipTerm(scorer, Cutouts(scorer.input_size, 8), left)
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    only_left.loss(image, 1, torch.Generator().manual_seed(0), None).backward()
    assert image.grad[..., :16].abs().sum() > 0 and image.grad[..., 17:].abs().max() == 0
    whole = ClipTerm(scorer, Cutouts(scorer.input_size, 8), targets)
    image.grad = None
    whole.loss(image, 1, torch.Generator().manual_seed(0), None).backward()
    assert image.grad[..., 17:].abs().sum() > 0  # the negative applies everywhere


def test_trim_letterbox_and_place():
    picture = torch.zeros(1, 3, 20, 20)
    picture[..., 8:12, 6:14] = 1  # an 8x4 subject on black
    trimmed = trim(picture)
    assert trimmed.shape[-2:] == (4 + 2 * 1, 8 + 2 * 1) and trimmed.max() == 1
    boxed = letterbox(torch.ones(1, 3, 4, 8), 10, 10)
    assert boxed.shape == (1, 3, 10, 10) and torch.equal(boxed[..., 3:7, 1:9], torch.ones(1, 3, 4, 8))
    canvas = place(torch.full((1, 3, 32, 64), 0.5), [(LEFT, picture)])
    assert torch.equal(canvas[..., 32:], torch.full((1, 3, 32, 32), 0.5))  # the right half untouched
    assert canvas[..., :32].max() == 1 and canvas[..., :32].min() == 0
    # a subject is enlarged at most as far as its whole picture would fill the box (20 -> 32: 1.6x)
    assert int((canvas[0, 0, 16] > 0.5).sum()) == 12
    big = torch.zeros(1, 3, 64, 64)
    big[..., 30:34, 20:28] = 1  # drawn at 64: in a 32-wide box it keeps its 8 pixels
    assert int((place(torch.zeros(1, 3, 32, 64), [(LEFT, big)])[0, 0, 16] > 0.5).sum()) == 8


def test_paste_codes_centres_each_grid_in_the_whole_codes_of_its_box():
    canvas = torch.zeros(16, 16, dtype=torch.long)
    left, right = torch.full((8, 8), 1), torch.full((8, 8), 2)
    pasted = paste_codes(canvas, [(LEFT, left), (RIGHT, right)], 8)
    want = torch.zeros(16, 16, dtype=torch.long)
    want[4:12, :8], want[4:12, 8:] = 1, 2
    assert torch.equal(pasted, want) and not canvas.any()  # the canvas's grid itself is untouched
    box = (0.3, 0.0, 1.0, 1.0)  # x from 38.4 px: whole codes from the 5th, 11 of them; centred from the 6th
    assert paste_codes(canvas, [(box, left)], 8)[4:12, 6:14].eq(1).all()
    assert paste_codes(canvas, [(box, left)], 8).sum() == 64
    assert paste_codes(torch.zeros(8, 8, dtype=torch.long), [(LEFT, left)], 8) is None  # 4 codes wide


def test_a_composition_starts_from_what_its_clip_terms_score_better():
    """codes_or_fit keeps the prior's pasted codes over a fit of the composition only when the
    run's CLIP terms prefer them: pasted codes of the scene itself beat a fit of noise, and a fit of
    the scene beats pasted codes of noise."""
    from pixgen.api import clip_terms, make_run_drawer, prepare
    from pixgen.loop.ops import nearest_codes
    from pixgen.models.loading import load_models
    from pixgen.settings import load_settings

    red, blue = Combo("circle", "red", "white"), Combo("square", "blue", "white")
    prompt = f"{red.caption(0)} @left | {blue.caption(0)} @right"
    s = load_settings(preset="shapes", overrides={"prompt": prompt, "seed": 0})
    run = prepare(s, load_models(s.vqgan, s.clip, torch.device("cpu")))
    drawer, terms = make_run_drawer(run), clip_terms(run)
    scene = torch.from_numpy(render_scene([Asked(red, LEFT), Asked(blue, RIGHT)], 128)).permute(2, 0, 1)[None] / 255
    encoded = drawer.fit(scene.float())
    codes = nearest_codes(encoded, drawer.decoder.codebook)[0]
    noise = drawer.fit(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)))
    grids = [(LEFT, codes[4:12, 0:8]), (RIGHT, codes[4:12, 8:16])]  # the scene's own subjects
    z, how = codes_or_fit(drawer, terms, torch.Generator().manual_seed(1), noise, encoded, grids, cutn=16)
    assert how == "codes" and torch.equal(nearest_codes(z, drawer.decoder.codebook)[0], codes)
    random = [(box, torch.randint(0, len(drawer.decoder.codebook), (8, 8))) for box in (LEFT, RIGHT)]
    z, how = codes_or_fit(drawer, terms, torch.Generator().manual_seed(1), encoded, noise, random, cutn=16)
    assert how == "fit" and z is encoded


def test_the_scene_judge_reads_exact_scenes_and_catches_wrong_ones():
    red, blue = Combo("circle", "red", "white"), Combo("square", "blue", "white")
    scene = [Asked(red, LEFT), Asked(blue, RIGHT)]
    for task in TASKS:
        two = [Asked(red, LEFT), Asked(red, RIGHT)] if task == "counting" else scene
        assert TASKS[task](render_scene(two, 64), two)["all"], task
    swapped = render_scene([Asked(blue, LEFT), Asked(red, RIGHT)], 64)
    assert not TASKS["two_objects"](swapped, scene)["all"] and not TASKS["position"](swapped, scene)["all"]
    one = render_scene([Asked(red, LEFT)], 64)
    assert not TASKS["counting"](one, [Asked(red, LEFT), Asked(red, RIGHT)])["all"]
    spilt = render_scene(scene, 64)
    spilt[20:44, 36:60] = (230, 30, 30)  # red over the right box
    assert TASKS["two_objects"](spilt, scene)["spill"]


def _run(cli, tmp_path, prompt):
    code, out, err = cli(prompt, "--preset", "shapes", "--seed", "3", "-o", tmp_path, "--json", "--threads", "1")
    assert code == 0, err
    return json.loads(out)


def test_the_prior_start_draws_each_region_alone_and_reproduces(cli, tmp_path):
    prompt = "a red circle on a white background @left | a blue square on a white background @right"
    first = _run(cli, tmp_path / "a", prompt)
    record = json.loads((tmp_path / "a").glob("*/run.json").__next__().read_text())
    assert [r["region"] for r in record["start"]["regions"]] == [list(LEFT), list(RIGHT)]
    assert record["start"]["composition"] in ("codes", "fit")
    assert [p.get("region") for p in record["settings"]["prompts"]] == [list(LEFT), list(RIGHT)]
    assert record["settings"]["prior_speck_free"]  # the preset's, for whole pictures; subjects rank by loss
    assert all("ranked_last_for_a_speck" not in r for r in record["start"]["regions"])
    code, out, err = cli("reproduce", first["image"], "-o", tmp_path / "b", "--json")
    assert code == 0, err
    again = json.loads(out)["image"]
    assert np.array_equal(np.asarray(Image.open(first["image"])), np.asarray(Image.open(again)))


def test_a_batch_line_with_regions(cli, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    line = {"prompt": "a red circle on a white background @left | a blue square on a white background @right"}
    jobs.write_text(json.dumps(line) + "\n" + json.dumps({"prompt": "a cat @lfet"}) + "\n")
    code, _, err = cli("batch", jobs, "--preset", "shapes", "--seed", "1", "-o", tmp_path / "out")
    assert code == 1 and "did you mean @left" in err  # the bad line fails alone
    finished = list((tmp_path / "out").glob("*/final.png"))
    assert len(finished) == 1
    record = json.loads((finished[0].parent / "run.json").read_text())
    assert record["settings"]["prompts"][0]["region"] == list(LEFT)


def test_candidates_score_each_part_on_its_own_crop(tmp_path):
    """--candidates ranks by clip_score: a part with a region is compared with that part of the
    image, so the scene as asked scores above the same scene with its halves swapped."""
    from pixgen.apps.clip_tools import clip_score
    from pixgen.models.loading import load_scorer

    scorer = load_scorer("shapes")
    red, blue = Combo("circle", "red", "white"), Combo("square", "blue", "white")
    Image.fromarray(render_scene([Asked(red, LEFT), Asked(blue, RIGHT)], 64)).save(tmp_path / "scene.png")
    asked = "a red circle on a white background @left | a blue square on a white background @right"
    swapped = "a blue square on a white background @left | a red circle on a white background @right"
    assert clip_score(scorer, tmp_path / "scene.png", asked) > clip_score(scorer, tmp_path / "scene.png", swapped)


def test_a_drawer_without_codes_takes_the_regions_composition(cli, tmp_path):
    prompt = "a red circle on a white background @left | a blue square on a white background @right"
    code, out, err = cli(prompt, "--preset", "shapes", "--drawer", "pixel", "--seed", "3", "-o", tmp_path, "--json")
    assert code == 0, err
    record = json.loads((Path(json.loads(out)["run_dir"]) / "run.json").read_text())
    assert len(record["start"]["regions"]) == 2 and record["settings"]["drawer"] == "pixel"


def test_a_preset_gives_a_prompt_with_regions_its_own_settings(tmp_path):
    from pixgen.settings import load_settings

    two = "a red circle on a white background @left | a blue square on a white background @right"
    assert load_settings("shapes", overrides={"prompt": two}).size == [128, 128]
    assert load_settings("shapes", overrides={"prompt": "a red circle"}).size == [64, 64]
    assert load_settings("shapes", overrides={"prompt": "mail bob@example.com"}).size == [64, 64]
    assert load_settings("shapes", overrides={"prompt": two, "size": [96, 96]}).size == [96, 96]  # flags win
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: {sizes: [1, 1]}\n")
    with pytest.raises(PixgenError, match="unknown setting 'sizes' in regions"):
        load_settings(config=bad, overrides={"prompt": two})
