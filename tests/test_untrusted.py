"""Untrusted input: prompts, settings, batch lines and image files either work or raise
PixgenError, never anything else; folder names stay safe and bounded."""

from __future__ import annotations

import io
import re
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixgen.apps.batch import read_jobs
from pixgen.errors import PixgenError
from pixgen.loop.prompts import parse_prompts
from pixgen.outputs.images import open_rgb
from pixgen.outputs.writer import make_run_dir, slugify
from pixgen.settings import load_settings, parse_set

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
prompt_text = st.text(alphabet=st.characters(), max_size=80) | st.text(alphabet=":|0123456789.-e +abc", max_size=30)


@FUZZ
@given(prompt_text)
def test_prompt_parser_returns_prompts_or_pixgen_error(spec):
    try:
        prompts = parse_prompts(spec)
    except PixgenError:
        return
    assert prompts and all(p.text.strip() and p.weight != 0 for p in prompts)


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=4))
def test_set_and_settings_loader_return_settings_or_pixgen_error(items):
    try:
        load_settings(overrides={"prompt": "a cat"}, sets=items)
    except PixgenError:
        pass


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["prompt", "size", "iterations", "lr", "seed", "augment", "cutn", "bogus", "device", "init", "save_every"]
        ),
        yaml_values,
        max_size=5,
    )
)
def test_job_mappings_give_settings_or_pixgen_error(job):
    try:
        load_settings(overrides=dict({"prompt": "x"}, **job))
    except PixgenError:
        pass


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_batch_files_parse_or_pixgen_error(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("b")
    for name in ("p.txt", "p.yaml", "p.jsonl"):
        (d / name).write_bytes(data)
        try:
            read_jobs(d / name)
        except PixgenError:
            pass


SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@FUZZ
@given(st.text(max_size=300))
def test_slugs_are_safe_and_bounded(text):
    slug = slugify(text)
    assert slug == "untitled" or SLUG.match(slug)
    assert 0 < len(slug) <= 60


@pytest.mark.parametrize(
    "prompt", ["../../etc/x", "/etc/passwd", "a\x00b", "x" * 10_000, "🎨🖌️", "שלום עולם", "..", "CON", ""]
)
def test_run_folders_stay_inside_the_output_dir(tmp_path, prompt):
    run = make_run_dir(tmp_path, prompt)
    assert run.parent == tmp_path and len(run.name) < 100


def test_parse_set_handles_odd_values():
    assert parse_set(["size=64x32"])["size"] == [64, 32]
    with pytest.raises(PixgenError):
        parse_set(["novalue"])


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


rgb = Image.fromarray((np.arange(32 * 32 * 3) % 255).astype(np.uint8).reshape(32, 32, 3))
GOOD = {
    "palette.png": _save(rgb.convert("P"), "PNG"),
    "alpha.png": _save(rgb.convert("RGBA"), "PNG"),
    "gray16.png": _save(Image.fromarray((np.arange(1024).reshape(32, 32) * 60).astype(np.uint16)), "PNG"),
    "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
    "plain.webp": _save(rgb, "WEBP"),
    "la.png": _save(rgb.convert("LA"), "PNG"),
}
BAD = {
    "empty.png": b"",
    "truncated.png": _save(rgb, "PNG")[:60],
    "text.jpg": b"this is not an image",
    "truncated.jpg": _save(rgb, "JPEG")[:100],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_odd_but_valid_images_become_rgb(tmp_path, name):
    (tmp_path / name).write_bytes(GOOD[name])
    im = open_rgb(tmp_path / name)
    assert im.mode == "RGB" and im.size == (32, 32)


@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_images_are_a_clear_error(tmp_path, name):
    (tmp_path / name).write_bytes(BAD[name])
    with pytest.raises(PixgenError, match=name):
        open_rgb(tmp_path / name)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)  # tiny file, 400 megapixels
    with pytest.raises(PixgenError, match="too large"):
        open_rgb(path)


def test_all_torch_loads_are_weights_only():
    import pathlib

    for path in pathlib.Path("pixgen").rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_punctuation_only_prompt_gets_a_slug():
    assert slugify(string.punctuation) == "untitled"
