"""score, classify and search with the shipped shapes CLIP, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixgen.clip_tools import INDEX_NAME
from pixgen.shapes import world


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """A folder of rendered images: 4 red circles, and 8 other shapes and colours."""
    root = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    others = [c for c in world.TRAIN_COMBOS if c.colour != "red"][::7][:8]
    for i in range(4):
        Image.fromarray(world.sample(rng, world.Combo("circle", "red", ["blue", "white", "green", "black"][i]))).save(
            root / f"red_circle_{i}.png"
        )
    for i, c in enumerate(others):
        Image.fromarray(world.sample(rng, c)).save(root / f"other_{i}.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_classify_colours_of_rendered_shapes(cli, tmp_path):
    rng = np.random.default_rng(1)
    combos = [world.TRAIN_COMBOS[i] for i in rng.integers(len(world.TRAIN_COMBOS), size=24)]
    paths = []
    for i, c in enumerate(combos):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(world.sample(rng, c)).save(paths[-1])
    labels = ",".join(world.COLOURS)
    code, out, err = cli(
        "classify", *paths, "--labels", labels, "--template", "a {} shape", "--clip", "shapes", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)
    right = sum(r["label"] == c.colour for r, c in zip(rows, combos, strict=True))
    assert right / len(combos) >= 0.75  # stated rate for the shape colour, zero-shot
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)


def test_search_ranks_red_circles_first_and_caches(cli, gallery):
    code, out, err = cli("search", gallery, "a red circle", "--top", "4", "--clip", "shapes", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert sum("red_circle" in h["image"] for h in hits) >= 3
    assert "skipping" in err and "broken.png" in err  # a bad file is skipped with a warning
    index = gallery / INDEX_NAME
    assert index.is_file()
    stamp = index.stat().st_mtime_ns
    code, out2, _ = cli("search", gallery, "a red circle", "--top", "4", "--clip", "shapes", "--json")
    assert code == 0 and json.loads(out2) == hits and index.stat().st_mtime_ns == stamp  # reused as is


def test_score_table_and_json(cli, gallery):
    code, out, err = cli(
        "score",
        gallery / "red_circle_0.png",
        gallery / "other_0.png",
        "--prompt",
        "a red circle",
        "--prompt",
        "a green square",
        "--clip",
        "shapes",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["scores"]["a red circle"] > rows[1]["scores"]["a red circle"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("classify", "x.png", "--labels", "cat"), "at least two labels"),
        (("classify", "/nope.png", "--labels", "cat,dog"), "/nope.png"),
        (("score", "/nope.png", "--prompt", "a cat"), "/nope.png"),
        (("search", "/nope", "a cat"), "not a folder"),
        (("classify", "x.png", "--labels", "a,b", "--template", "no slot"), "template"),
    ],
)
def test_clip_tool_bad_input(cli, args, needle):
    code, _, err = cli(*args, "--clip", "shapes")
    assert code == 2 and needle in err and "Traceback" not in err
