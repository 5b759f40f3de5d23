"""`pixgen grid`: the axis syntax and its bad inputs (one line, exit 2, nothing written), the
labelled grid, resume, and a cell that equals the same run made alone, byte for byte."""

from __future__ import annotations

import pytest
from PIL import Image

from pixgen.apps.grid import MAX_AXIS, parse_axes, parse_axis
from pixgen.errors import PixgenError
from tests.conftest import SMOKE

FAST = (*SMOKE, "--set", "iterations=2", "--set", "save_every=0", "--set", "gif=false")


def test_values_ranges_and_separators():
    assert parse_axis("x", "seed=1..4").values == [1, 2, 3, 4]
    assert parse_axis("x", "seed=3..1").values == [3, 2, 1]
    assert parse_axis("x", "lr=0.1..0.3:3").values == [0.1, 0.2, 0.3]
    cut = parse_axis("y", "cut-pow=1, 2.5")
    assert (cut.key, cut.values, cut.labels) == ("cut_pow", [1, 2.5], ["1", "2.5"])
    assert parse_axis("x", "drawer=vqgan,pixel").values == ["vqgan", "pixel"]
    assert parse_axis("x", "size=32x32,64x48").values == [[32, 32], [64, 48]]
    # the prompt's values are split on ||, never on its own syntax (| , : ^)
    prompts = parse_axis("x", "prompt=a red house, at night | a lake:0.5 || a cat ^ a dog")
    assert prompts.values == ["a red house, at night | a lake:0.5", "a cat ^ a dog"]
    assert parse_axis("x", "augment=flip,noise||affine").values == [["flip", "noise"], ["affine"]]
    assert parse_axis("z", "seed=1,2").label(1) == "seed=2"


@pytest.mark.parametrize(
    "x, y, words",
    [
        ("colour=red,blue", None, "unknown setting 'colour'"),
        ("seed", None, "KEY=V1,V2"),
        ("seed=", None, "no values"),
        ("seed=1,1", None, "twice"),
        ("seed=1..1000000000000", None, f"at most {MAX_AXIS}"),
        ("seed=1..64", "cutn=1..8", "at most 256"),
        ("seed=1,2", "seed=3,4", "another setting"),
        ("output_dir=a,b", None, "unknown setting"),
        ("lr=0.1..0.2:1", None, "N must be"),
    ],
)
def test_bad_axes_are_refused(x, y, words):
    with pytest.raises(PixgenError, match=words):
        parse_axes(x, y)


@pytest.mark.parametrize(
    "axis, words",
    [
        ("--x=colour=red", "unknown setting 'colour'"),
        ("--x=cutn=4,0", "grid cell cutn=0: setting 'cutn'"),
        ("--x=lr=abc,0.1", "'lr'"),
        ("--x=drawer=vqgan,crayon", "'drawer'"),
        ("--x=seed=1..999", "at most 64"),
        ("--x=prompt=a cat || a | | b", "grid cell prompt=a | | b: empty prompt"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_runs(cli, tmp_path, axis, words):
    out = tmp_path / "grid"
    code, _, err = cli("grid", "a cat", axis, "-o", out, *FAST)
    assert code == 2, err
    assert err.startswith("pixgen: error:") and words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def _cli_grid(cli, out, *extra):
    code, _, err = cli("grid", "a cat", "--x", "seed=3,4", "--y", "cutn=2,4", "-o", out, *FAST, *extra)
    assert code == 0, err
    return err


def test_a_2x2_grid_is_labelled_and_resumes(cli, tmp_path):
    out = tmp_path / "grid"
    _cli_grid(cli, out)
    cells = sorted(p for p in (out / "cells").iterdir() if p.is_dir())
    assert [c.name[:4] for c in cells] == ["0001", "0002", "0003", "0004"]
    assert all((c / "final.png").is_file() for c in cells)
    page = (out / "index.html").read_text()
    for label in ("seed=3", "seed=4", "cutn=2", "cutn=4", "a cat"):
        assert label in page
    assert page.count("<img") == 4 and "not run" not in page
    sheet = Image.open(out / "grid.png")
    assert sheet.width > 2 * 128 and sheet.height > 2 * 128  # cells scaled up, labels beside them
    before = {c.name: (c / "final.png").stat().st_mtime_ns for c in cells}
    code, _, err = cli("grid", "a cat", "--x", "seed=3,4", "--y", "cutn=2,4", "-o", out, *FAST)
    assert code == 2 and "--resume" in err
    _cli_grid(cli, out, "--resume")  # finished cells are skipped, not redone
    assert {c.name: (c / "final.png").stat().st_mtime_ns for c in cells} == before


def test_a_shard_leaves_the_other_cells_not_run(cli, tmp_path):
    out = tmp_path / "grid"
    _cli_grid(cli, out, "--shard", "1/2")
    assert sorted(p.name[:4] for p in (out / "cells").iterdir() if p.is_dir()) == ["0002", "0004"]
    assert (out / "index.html").read_text().count("not run") == 2


def test_a_cell_equals_the_same_run_made_alone(cli, tmp_path):
    from pixgen.api import generate
    from pixgen.settings import load_settings

    out = tmp_path / "grid"
    code, _, err = cli("grid", "a cat", "--x", "seed=3,4", "-o", out, *FAST)
    assert code == 0, err
    cell = out / "cells" / "0002-a-cat" / "final.png"
    sets = {"iterations": 2, "save_every": 0, "gif": False, "seed": 4, "prompt": "a cat"}
    alone = generate(load_settings("smoke", overrides=sets), run_dir=tmp_path / "alone")
    assert alone.image.read_bytes() == cell.read_bytes()  # pixels and recorded settings alike
