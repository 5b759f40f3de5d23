"""Settings declared once: every field is checked by its declaration, the CLI's flags come from
it, and the choice lists match the tables that implement them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pixgen.settings import FIELDS, Settings
from tests.conftest import SMOKE


def _bad_values(name: str, f: dataclasses.Field) -> list[str]:
    """--set values of the wrong type, and values out of the declared range or choices."""
    meta, kind = f.metadata, str(f.type)
    bad = ["{a: 1}"] if kind.startswith("list") else ["[1, 2]"] if "str" in kind else ["lots"]
    if kind == "bool":
        bad = ["maybe"]
    if meta["choices"]:
        bad.append("[bogus]" if kind.startswith("list") else "bogus")
    if meta["lo"] is not None:
        below = meta["lo"] if meta["open_lo"] else meta["lo"] - 1
        bad.append(f"[{int(below)}, 64]" if name == "size" else str(below))
    if meta["hi"] is not None:
        above = meta["hi"] if meta["open_hi"] else meta["hi"] + 1
        bad.append(f"[{int(above)}, 64]" if name == "size" else str(above))
    return bad


CASES = [(name, value) for name, f in FIELDS.items() for value in _bad_values(name, f)]


@pytest.mark.parametrize("name, value", CASES)
def test_every_field_refuses_bad_values_by_name(cli, tmp_path, name, value):
    out = tmp_path / "o"
    code, _, err = cli("a cat", *SMOKE, "--set", f"{name}={value}", "-o", out)
    assert code == 2, err
    assert f"'{name}'" in err and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [(("--threads", "-2"), "'threads'"), (("--precision", "fp3"), "'precision'"), (("--seed", "-1"), "'seed'")],
)
def test_flags_are_validated_too(cli, tmp_path, args, needle):
    code, _, err = cli("a cat", *SMOKE, *args, "-o", tmp_path / "o")
    assert code == 2 and needle in err and err.strip().count("\n") == 0, err


def test_choices_match_the_tables_that_implement_them():
    from pixgen import settings
    from pixgen.drawers import vqgan as vqgan_drawer
    from pixgen.loop import cutouts, losses, optimise
    from pixgen.runtime import precision
    from pixgen.starts import images as init

    assert set(settings.AUGMENTS) == set(cutouts.AUGMENTATIONS)
    assert set(settings.OPTIMIZERS) == set(optimise.OPTIMIZERS)
    assert set(settings.CLIP_LOSSES) == set(losses.DISTANCES)
    assert set(settings.LR_SCHEDULES) == set(optimise.LR_SCHEDULES)
    assert set(settings.SYMMETRIES) == {"none", *losses.SYMMETRY_AXES}
    assert set(settings.INITS) == set(vqgan_drawer.INITS)
    assert set(settings.INIT_FITS) == set(init.FITS)
    assert set(settings.INIT_NOISES) == set(init.NOISES)
    assert set(settings.PRECISIONS) == {"auto", *precision.CHOICES}


def test_every_setting_has_help_and_every_flag_is_unique():
    from pixgen.settings import flag_of

    assert all(f.metadata["help"] for f in dataclasses.fields(Settings))
    flags = [flag_of(k) for k, f in FIELDS.items() if f.metadata["cli"]]
    shorts = [f.metadata["short"] for f in FIELDS.values() if f.metadata["short"]]
    assert len(set(flags)) == len(flags) and len(set(shorts)) == len(shorts)


def test_every_flag_has_a_help_panel_and_a_default_as_typed():
    from pixgen.settings import PANELS, default_text, metavar_of

    missing = [k for k, f in FIELDS.items() if f.metadata["cli"] and f.metadata["panel"] not in PANELS]
    assert not missing, f"settings with no help panel: {missing}"
    keys = ("iterations", "size", "lr", "zoom_shift", "gif", "video", "seed", "negative")
    assert [default_text(k) for k in keys] == ["300", "256x256", None, "0,0", "gif", "no-video", None, None]
    assert metavar_of("optimizer") == "[adam|adamw|adagrad|rmsprop|radam]"
    assert metavar_of("size") == "WxH" and metavar_of("cutn") is None


def test_batch_takes_every_generate_flag_as_the_jobs_default(cli, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\na dog\n")
    code, _, err = cli("batch", f, *SMOKE, "-i", "2", "-s", "32x32", "--seed", "5", "--no-gif", "-o", tmp_path / "o")
    assert code == 0, err
    for job in ("0001-a-cat", "0002-a-dog"):
        record = json.loads((tmp_path / "o" / job / "run.json").read_text())["settings"]
        assert (record["iterations"], record["size"], record["seed"], record["gif"]) == (2, [32, 32], 5, False)


def test_story_mode_records_each_phrase_with_its_phase(cli, tmp_path):
    code, out, err = cli("a red house ^ a lake:0.5", *SMOKE, "-i", "2", "-o", tmp_path, "--json")
    assert code == 0, err
    record = json.loads((tmp_path / json.loads(out)["run_dir"].split("/")[-1] / "run.json").read_text())
    assert record["settings"]["prompts"] == [
        {"text": "a red house", "weight": 1.0, "stop": float("-inf"), "phase": 0},
        {"text": "a lake", "weight": 0.5, "stop": float("-inf"), "phase": 1},
    ]
