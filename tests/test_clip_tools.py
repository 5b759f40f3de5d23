"""score, classify and search with the shipped shapes CLIP, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixgen.apps.clip_tools import INDEX_NAME
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


def test_search_skips_contact_sheets_and_keeps_the_index_outside_on_request(cli, tmp_path, gallery):
    import shutil

    from pixgen.outputs.writer import CONTACT_SHEET_MARKER

    folder = tmp_path / "pics"
    shutil.copytree(gallery, folder, ignore=shutil.ignore_patterns(INDEX_NAME, "broken.png"))
    batch = folder / "batch"
    batch.mkdir()
    Image.open(folder / "red_circle_0.png").save(batch / "contact_sheet.png")  # beside its index.html
    (batch / "index.html").write_text("<html></html>")
    moved = folder / "elsewhere"
    moved.mkdir()
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text(CONTACT_SHEET_MARKER, "1")
    Image.open(folder / "red_circle_1.png").save(moved / "contact_sheet.png", pnginfo=info)  # marked
    Image.open(folder / "red_circle_2.png").save(moved / "not_a_sheet.png")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    index = tmp_path / "cache" / "pics.safetensors"
    index.parent.mkdir()
    code, out, err = cli(
        "search", folder, "a red circle", "--top", "50", "--clip", "shapes", "--json", "--index", index
    )
    assert code == 0, err
    names = [h["image"] for h in json.loads(out)]
    assert not any(n.endswith("contact_sheet.png") for n in names)
    assert any(n.endswith("not_a_sheet.png") for n in names) and len(names) == 13
    assert index.is_file() and sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # folder untouched
    stamp = index.stat().st_mtime_ns
    code, out2, _ = cli("search", folder, "a red circle", "--top", "50", "--clip", "shapes", "--json", "--index", index)
    assert json.loads(out2) == json.loads(out) and index.stat().st_mtime_ns == stamp


def test_score_piped_keeps_long_paths_whole(cli, tmp_path, gallery, monkeypatch):
    """Piped (as here), a table is plain tab-separated lines: a long path stays whole in a narrow
    terminal. On a terminal it folds whole: tests/test_listing.py."""
    import shutil

    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "and_an_even_longer_image_file_name_red_circle.png"
    deep.parent.mkdir(parents=True)
    shutil.copy(gallery / "red_circle_0.png", deep)
    monkeypatch.setenv("COLUMNS", "50")
    code, out, err = cli("score", deep, "--prompt", "a red circle", "--clip", "shapes")
    assert code == 0, err
    header, row = out.splitlines()
    assert header == "image\ta red circle" and row.split("\t")[0] == str(deep)
    assert 0 < float(row.split("\t")[1]) <= 1 and "…" not in out
