"""A preset's settings for each drawer (its `drawers:` entries), layered between the preset and
the flags, and every drawer starting from the prior's best sample (`--init prior`, the shapes
preset): drawn and ranked through the VQGAN, then fitted into the run's drawer."""

import json

import numpy as np
import pytest
from PIL import Image

from pixgen.drawers import drawer_classes
from pixgen.errors import PixgenError
from pixgen.settings import load_settings

PRESET = """# a test preset
iterations: 0
lr: 0.05
drawers:
  pixel: {iterations: 7, pixel_size: 16x16, lr: 0.02}
  fft: {iterations: 3}
"""


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """A presets folder holding `layered` (PRESET) and whatever a test writes beside it."""
    import pixgen.settings.layers

    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "layered.yaml").write_text(PRESET)
    monkeypatch.setattr(pixgen.settings.layers, "PRESETS_DIR", folder)
    return folder


def test_a_presets_drawer_entries_apply_for_that_drawer_and_flags_beat_them(presets, tmp_path):
    s = load_settings("layered")
    assert (s.drawer, s.iterations, s.lr, s.pixel_size) == ("vqgan", 0, 0.05, None)
    s = load_settings("layered", overrides={"drawer": "pixel"})
    assert (s.iterations, s.lr, s.pixel_size) == (7, 0.02, [16, 16])
    s = load_settings("layered", overrides={"drawer": "pixel", "iterations": 2, "lr": None})
    assert (s.iterations, s.lr) == (2, 0.02)  # a flag beats the entry; a flag not given does not
    s = load_settings("layered", overrides={"drawer": "pixel"}, sets=["drawer=fft"])
    assert (s.drawer, s.iterations, s.lr) == ("fft", 3, 0.05)  # the drawer the layers end on
    config = tmp_path / "c.yaml"
    config.write_text("drawer: pixel\nlr: 0.03\ndrawers:\n  pixel: {iterations: 9}\n")
    s = load_settings("layered", config)
    assert (s.iterations, s.lr, s.pixel_size) == (9, 0.03, [16, 16])  # each file above its own entries
    assert load_settings("layered", config, {"iterations": 1}).iterations == 1


@pytest.mark.parametrize(
    "text, needle",
    [
        ("drawers:\n  pixel: {pixel_sise: 4x4}\n", "unknown setting 'pixel_sise' in drawers.pixel of preset 'bad'"),
        ("drawers:\n  crayon: {iterations: 1}\n", "unknown drawer 'crayon' in drawers of preset 'bad'"),
        ("drawers:\n  pixel: {drawer: fft}\n", "unknown setting 'drawer' in drawers.pixel"),
        ("drawers:\n  pixel: 3\n", "drawers.pixel in preset 'bad' must be a mapping"),
        ("drawers: [pixel]\n", "'drawers' in preset 'bad' must be a mapping"),
        ("drawers:\n  fft: {fft_decay: lots}\n", "setting 'fft_decay' in preset 'bad' (drawers.fft)"),
    ],
)
def test_bad_drawer_entries_are_errors_naming_the_key(presets, text, needle):
    (presets / "bad.yaml").write_text(text)
    with pytest.raises(PixgenError) as e:
        load_settings("bad", overrides={"drawer": "fft"})
    assert needle in str(e.value)


def test_a_refused_value_from_a_drawer_entry_says_where_it_came_from(presets):
    with pytest.raises(PixgenError) as e:
        load_settings("layered", overrides={"drawer": "pixel", "size": [8, 8]})
    assert "pixel_size" in str(e.value) and "the preset 'layered' (drawers.pixel)" in str(e.value)


@pytest.mark.parametrize("drawer", list(drawer_classes()))
def test_the_shapes_preset_takes_every_drawer_and_its_settings_reproduce(drawer):
    from pixgen.api import settings_from_record

    s = load_settings("shapes", overrides={"drawer": drawer, "prompt": "a red circle on a blue background"})
    assert s.drawer == drawer and s.init == "prior"
    assert settings_from_record(s.to_dict()) == s  # run.json's resolved settings, without the preset
    assert load_settings("shapes", overrides={"drawer": drawer, "iterations": 4}).iterations == 4


def _run(cli, out, *args):
    code, stdout, err = cli(
        "a red circle on a blue background", "--preset", "shapes", "--offline", "--threads", "1",
        "--seed", "2", "--prior-samples", "3", "--no-gif", "-o", out, "--json", *args,
    )  # fmt: skip
    assert code == 0, err
    run_dir = out / json.loads(stdout)["run_dir"].split("/")[-1]
    return run_dir, np.asarray(Image.open(run_dir / "final.png").convert("RGB")).astype(int)


@pytest.mark.parametrize("drawer", ["pixel", "fft", "lines"])
def test_every_drawer_starts_from_the_priors_best_sample(cli, tmp_path, drawer):
    """`--preset shapes --drawer X` (with its settings for X, a step fewer) runs from the prior's
    best sample, fitted into the drawer; run.json says so."""
    run_dir, _ = _run(cli, tmp_path / drawer, "--drawer", drawer, "-i", "1")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["settings"]["drawer"] == drawer and record["settings"]["init"] == "prior"
    assert record["start"]["prior"] == "shapes" and record["start"]["fitted_into"] == drawer
    assert record["start"]["rank"] == 1 and len(record["start"]["losses"]) == 3


def test_the_start_is_the_vqgans_picture_of_the_same_sample(cli, tmp_path):
    """The prior's samples are drawn and ranked through the VQGAN whatever the drawer (the same
    samples from the same seed): fft's fit is exact, pixel's cells are the picture's block means."""
    _, vqgan = _run(cli, tmp_path / "vqgan")
    _, fft = _run(cli, tmp_path / "fft", "--drawer", "fft", "-i", "0")
    assert np.abs(fft - vqgan).max() <= 1
    _, pixel = _run(cli, tmp_path / "pixel", "--drawer", "pixel", "--pixel-size", "32x32", "-i", "0")
    blocks = vqgan.reshape(32, 2, 32, 2, 3).mean((1, 3))
    assert np.abs(pixel[::2, ::2] - blocks).max() <= 1


def test_a_drawer_from_the_prior_start_reproduces(cli, tmp_path):
    run_dir, image = _run(cli, tmp_path / "a", "--drawer", "pixel", "-i", "2")
    code, stdout, err = cli("reproduce", run_dir / "final.png", "-o", tmp_path / "b", "--json")
    assert code == 0, err
    again = np.asarray(Image.open(json.loads(stdout)["image"]).convert("RGB")).astype(int)
    assert np.array_equal(image, again)


def test_the_prior_start_loads_the_vqgan_decoder_and_only_it(monkeypatch, tmp_path):
    """A drawer that needs no VQGAN loads the decoder for the prior start (never the encoder), and
    not when an init image replaces that start."""
    import pixgen.models.loading
    from pixgen.api import prepare

    monkeypatch.setattr(pixgen.models.loading, "load_encoder", lambda *a, **k: pytest.fail("encoder loaded"))
    s = load_settings("shapes", overrides={"drawer": "pixel", "prompt": "a cat", "threads": 1})
    assert prepare(s).models.decoder is not None
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red.png")
    image = {"init_image": str(tmp_path / "red.png")}
    s = load_settings("shapes", overrides={"drawer": "pixel", "prompt": "a cat", **image})
    assert prepare(s).models.decoder is None
