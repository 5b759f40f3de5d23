"""A drawer is one file (issue 27): a drawer defined in the tests (tests/throwaway_drawer.py),
registered from outside pixgen, draws through every command, and its setting travels with it:
flags, YAML and --set, batch lines, run.json and the PNG (reproduce), the saved state (resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SMOKE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def flat():
    from pixgen.drawers import register_drawer, unregister_drawer
    from tests.throwaway_drawer import FlatDrawer

    register_drawer(FlatDrawer)
    yield FlatDrawer
    unregister_drawer("flat")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_a_registered_drawer_generates_reproduces_resumes_and_batches(cli, tmp_path, flat):
    from pixgen import api
    from pixgen.settings import FIELDS, load_settings
    from tests.conftest import StopAfter

    assert FIELDS["flat_gain"].metadata["panel"] == "Drawer" and "flat" in FIELDS["drawer"].metadata["choices"]
    args = ("a red circle", *SMOKE, "-s", "16x16", "-i", "3", "--seed", "5", "--no-gif", "--json")
    code, out, err = cli(*args, "--drawer", "flat", "--set", "flat_gain=0.5", "-o", tmp_path / "gen")
    assert code == 0, err
    run = Path(json.loads(out)["run_dir"])
    recorded = json.loads((run / "run.json").read_text())["settings"]
    assert (recorded["drawer"], recorded["flat_gain"], recorded["lr"]) == ("flat", 0.5, flat.lr)
    image = pixels(run / "final.png")
    assert image.max() <= 128 and (image == image[0, 0]).all()  # one flat colour, at most half bright

    code, out, err = cli("reproduce", run / "final.png", "-o", tmp_path / "again", "--json")
    assert code == 0, err
    assert np.array_equal(pixels(Path(json.loads(out)["run_dir"]) / "final.png"), image)

    def settings(out_dir):
        base = dict(prompt="a red circle", seed=5, iterations=4, save_every=2, size=[16, 16], gif=False)
        return load_settings(
            preset="smoke", overrides=dict(base, drawer="flat", flat_gain=0.5, output_dir=str(out_dir))
        )

    full = api.generate(settings(tmp_path / "full"))
    with pytest.raises(api.Interrupted) as e:
        api.generate(settings(tmp_path / "cut"), **StopAfter(2).kw())
    code, out, err = cli("resume", e.value.args[0].run_dir, "--json")
    assert code == 0, err
    assert np.array_equal(pixels(Path(json.loads(out)["image"])), pixels(full.image))

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a blue box", "drawer": "flat", "flat_gain": 0.25}\n')
    code, _, err = cli("batch", jobs, *SMOKE, "-s", "16x16", "-i", "2", "--no-gif", "-o", tmp_path / "batch")
    assert code == 0, err
    job = tmp_path / "batch" / "0001-a-blue-box"
    assert json.loads((job / "run.json").read_text())["settings"]["flat_gain"] == 0.25
    assert pixels(job / "final.png").max() <= 64


def test_a_registered_drawer_is_checked_like_a_built_in_one(cli, tmp_path, flat):
    base = ("a cat", *SMOKE, "-s", "16x16", "-o", tmp_path)
    code, _, err = cli(*base, "--drawer", "flat", "--set", "flat_gain=9")
    assert code == 2 and "flat_gain" in err and "between 0 and 4" in err
    code, _, err = cli(*base, "--drawer", "flat", "--schedule", "progressive")
    assert code == 2 and "needs --drawer vqgan (drawer flat has no VQGAN)" in err


def test_unregistered_it_is_gone(flat):
    from pixgen.drawers import unregister_drawer
    from pixgen.errors import PixgenError
    from pixgen.settings import FIELDS, load_settings

    unregister_drawer("flat")
    assert "flat_gain" not in FIELDS and "flat" not in FIELDS["drawer"].metadata["choices"]
    with pytest.raises(PixgenError, match="unknown setting 'flat_gain'"):
        load_settings(overrides={"prompt": "x", "flat_gain": 1.0})


def test_an_entry_point_drawer_has_its_flags_and_help_without_torch(tmp_path):
    """Installed as a package declaring it in the pixgen.drawers entry-point group (a dist-info on
    the path, as pip writes one), the drawer's flag is in `pixgen generate --help`, and torch is not
    imported."""
    info = tmp_path / "flat_drawer-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flat-drawer\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pixgen.drawers]\nflat = tests.throwaway_drawer:FlatDrawer\n")
    code = "import sys; from pixgen.cli.app import main; main(['generate', '--help']); print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "--flat-gain" in done.stdout and "flat (one flat colour)" in done.stdout
    assert done.stdout.strip().endswith("False")  # no torch
