"""Numbers that are not numbers (issue 28): every float setting is finite, through every way in
(flags, YAML, --set, batch lines, PNG metadata); NaN, +-inf and values that round to 0 in float32
are refused in one line naming the key, and a legal extreme runs to completion."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from pixgen.errors import PixgenError
from pixgen.settings import FIELDS, load_settings
from tests.conftest import SMOKE

TINY = 5e-324  # the smallest positive float (a subnormal double; 0 in float32)
VALUES = (math.nan, math.inf, -math.inf, TINY)


def _floats(kind) -> bool:
    """Whether a field's type holds floats: float, float | None, list[float]..."""
    if kind is float:
        return True
    return any(_floats(arg) for arg in typing.get_args(kind))


def float_settings() -> list[str]:
    """Every float (or list-of-float) setting, from the Settings dataclass: a new one is covered."""
    import pixgen.settings as settings_module

    hints = typing.get_type_hints(settings_module.Settings, vars(settings_module))
    return [key for key in FIELDS if _floats(hints.get(key, FIELDS[key].type))]


def _given(key: str, value: float):
    """The value as the setting takes it: a list setting gets it in each place."""
    f = FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return [value] * len(default) if isinstance(default, list) else value


# What a setting needs to take effect on the smoke preset (its drawer, its mode).
CONTEXT = {
    "fft_decay": {"drawer": "fft"},
    "stroke_width": {"drawer": "lines"},
    "symmetry_weight": {"symmetry": "both"},
    "palette_weight": {"palette": ["gameboy"]},
    "init_pixel_weight": {"init": "composed"},
    "noise": {"augment": ["noise"]},
    "video_fps": {"video": True},
    "video_interpolate": {"video": True},
}
PRIOR = {"init": "prior", "prior_samples": 2}  # with a small prior file, for the prior_* settings


def test_the_float_settings_are_gathered_from_the_dataclass():
    found = float_settings()
    for key in ("lr", "ema", "fps", "prior_temperature", "prior_top_p", "stroke_width", "zoom_shift", "fft_decay"):
        assert key in found
    assert "iterations" not in found and "size" not in found


def _load(key: str, value: float):
    return load_settings("smoke", overrides=dict(CONTEXT.get(key, {}), prompt="a cat", **{key: _given(key, value)}))


@pytest.mark.parametrize("value", VALUES, ids=["nan", "inf", "-inf", "tiny"])
@pytest.mark.parametrize("key", float_settings())
def test_every_float_setting_is_refused_in_one_line_or_legal(key, value):
    """NaN, +-inf and 5e-324 for every float setting: a one-line error naming the key, or a value
    that validation accepts (then test_legal_extremes_run_to_completion runs it)."""
    try:
        _load(key, value)
    except PixgenError as e:
        assert f"'{key}'" in str(e) and "\n" not in str(e), str(e)
        return
    assert math.isfinite(value), f"{key}={value} was accepted"


def _accepted_extremes() -> list[str]:
    keys = []
    for key in float_settings():
        try:
            _load(key, TINY)
        except PixgenError:
            continue
        keys.append(key)
    return keys


@pytest.mark.parametrize("key", _accepted_extremes())
def test_legal_extremes_run_to_completion(key, tmp_path):
    """The smallest positive float, where it is legal, runs two steps on the smoke models and
    writes its image, its GIF and its run.json, without a traceback."""
    from pixgen.api import generate
    from tests.test_sampling import _prior_file

    s = dataclasses.replace(_load(key, TINY), iterations=2, save_every=1, seed=1, output_dir=str(tmp_path))
    if key.startswith("prior_"):
        s = dataclasses.replace(s, **PRIOR, prior=str(_prior_file(tmp_path)))
    result = generate(s)
    assert result.image.is_file() and (result.run_dir / "progress.gif").is_file()
    assert json.loads((result.run_dir / "run.json").read_text())["finished"] is True


# The hostile tester's flags (issue 28), on `pixgen` and `pixgen sample`.
@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("sample", "a cat", "--prior-temperature", "nan"), "prior_temperature"),
        (("sample", "a cat", "--prior-guidance", "nan"), "prior_guidance"),
        (("sample", "a cat", "--prior-top-p", "nan"), "prior_top_p"),
        (("sample", "a cat", "--prior-top-p", "1e-300"), "prior_top_p"),
        (("a cat", "--lr", "nan"), "lr"),
        (("a cat", "--lr", "inf"), "lr"),
        (("a cat", "--fps", "nan"), "fps"),
        (("a cat", "--ema", "nan"), "ema"),
        (("a cat", "--drawer", "fft", "--fft-decay", "nan"), "fft_decay"),
        (("a cat", "--tv-weight", "nan"), "tv_weight"),
        (("a cat", "--saturation-weight", "-inf"), "saturation_weight"),
        (("a cat", "--drawer", "lines", "--stroke-width", "1,nan"), "stroke_width"),
        (("a cat", "--zoom-shift", "inf,0"), "zoom_shift"),
        (("a cat", "--set", "lr=.nan"), "lr"),
        (("a cat", "--set", "cut_pow=.inf"), "cut_pow"),
    ],
)
def test_cli_refuses_non_finite_flags_in_one_line(cli, tmp_path, args, key):
    code, out, err = cli(*args, *SMOKE, "-i", "2", "-o", tmp_path)
    assert code == 2, err
    assert err.count("\n") == 1 and f"'{key}'" in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_yaml_nan_and_inf_are_refused(tmp_path):
    config = tmp_path / "c.yaml"
    for text, key in (("ema: .nan\n", "ema"), ("noise: .inf\n", "noise"), ("zoom_shift: [-.inf, 0]\n", "zoom_shift")):
        config.write_text(text)
        with pytest.raises(PixgenError, match=f"'{key}'"):
            load_settings("smoke", config)


def test_a_non_finite_batch_line_fails_alone(cli, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": "a red cat"},
        {"prompt": "a nan cat", "prior_temperature": "nan"},
        '{"prompt": "an infinite cat", "lr": Infinity}',
        {"prompt": "a blue cat"},
    ]
    jobs.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"
    code, _, err = cli("batch", jobs, *SMOKE, "-i", "2", "-o", out)
    assert code == 1 and "Traceback" not in err, err
    assert "line 2: setting 'prior_temperature'" in err and "line 3: setting 'lr'" in err
    assert "2 of 4 jobs finished" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0001-a-red-cat", "0004-a-blue-cat"]


def test_reproduce_refuses_non_finite_png_metadata(cli, tmp_path):
    from pixgen.outputs.writer import METADATA_KEY, read_png_metadata

    code, out, err = cli("a cat", *SMOKE, "-i", "2", "-o", tmp_path / "a", "--json")
    assert code == 0, err
    image = Path(json.loads(out)["image"])
    meta = read_png_metadata(image)
    for key, value in (("lr", math.nan), ("ema", math.inf), ("zoom_shift", [math.nan, 0.0])):
        bad = tmp_path / f"bad-{key}.png"
        info = PngImagePlugin.PngInfo()
        info.add_itxt(METADATA_KEY, json.dumps(dict(meta, **{key: value})))  # writes NaN / Infinity
        with Image.open(image) as im:
            im.save(bad, pnginfo=info)
        code, _, err = cli("reproduce", bad, "-o", tmp_path / "again")
        assert code == 2 and err.count("\n") == 1 and f"'{key}'" in err, err
        assert not (tmp_path / "again").exists()


def test_declared_infinite_allows_inf_never_nan_and_float32_refuses_underflow():
    from pixgen.declare import FLOAT32_TINY, setting
    from pixgen.settings import _number_error

    plain, infinite = setting(1.0, "").metadata, setting(1.0, "", infinite=True).metadata
    narrow = setting(1.0, "", float32=True).metadata
    assert _number_error(plain, math.inf) and _number_error(plain, -math.inf) and _number_error(plain, math.nan)
    assert _number_error(infinite, math.inf) is None and _number_error(infinite, math.nan)
    assert _number_error(plain, TINY) is None and _number_error(narrow, TINY) and _number_error(narrow, -1e-39)
    assert _number_error(narrow, 0.0) is None and _number_error(narrow, FLOAT32_TINY) is None
