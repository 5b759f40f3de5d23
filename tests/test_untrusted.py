"""Untrusted input: prompts, settings, batch lines, image files and the files pixgen reads back
(run.json, run state, PNG metadata, prior files) either work or raise PixgenError, never
anything else; folder names stay safe and bounded, and nothing is written where a file says."""

from __future__ import annotations

import io
import json
import math
import re
import string
from pathlib import Path

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
from tests.conftest import SMOKE

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


# ---------------------------------------------------------------- files that are not what they claim
# (issue 28): damaged or foreign run.json, state, PNG metadata and prior files are one line and
# exit code 2 (or, in a gallery, left out with a warning), never a traceback, and nothing is lost.

BAD_RECORDS = {
    "only-finished": {"finished": True},
    "seconds-null-no-seed": {"finished": True, "seconds": None, "settings": {"prompt": "a cat"}},
    "clip-score-text": {"finished": True, "clip_score": "high", "settings": {"prompt": "a cat", "seed": 1}},
    "settings-null": {"finished": True, "settings": None},
    "not-an-object": ["a", "list"],
}


def _finished_job(out, name, record):
    """A job folder as a run leaves it: final.png and its run.json (`record`)."""
    job = out / name
    job.mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(job / "final.png")
    (job / "run.json").write_text(json.dumps(record))
    return job


def _good_record(prompt, seconds=1.0):
    return {"settings": {"prompt": prompt, "seed": 1}, "finished": True, "seconds": seconds, "clip_score": 0.5}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_run_json_schema_names_the_file_and_the_fault(tmp_path, name):
    from pixgen.outputs.writer import check_run_record, read_run_record

    path = tmp_path / "run.json"
    path.write_text(json.dumps(BAD_RECORDS[name]))
    with pytest.raises(PixgenError, match=re.escape(str(path))):
        read_run_record(path)
    assert check_run_record(_good_record("a cat"), path)["seconds"] == 1.0


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_batch_resume_fails_only_the_job_of_a_damaged_run_json_and_keeps_it(cli, tmp_path, name):
    """One bad folder used to crash `batch --resume` (and so every shard): now that job fails in
    one line, its folder untouched, and the others go on into the gallery."""
    out = tmp_path / "out"
    bad = _finished_job(out, "0001-a-cat", BAD_RECORDS[name])
    _finished_job(out, "0002-a-dog", _good_record("a dog"))
    before = (bad / "run.json").read_bytes()
    code, _, err = cli("batch", _write_text(tmp_path / "p.txt", "a cat\na dog\n"), "-o", out, "--resume", *SMOKE)
    assert code == 1 and "Traceback" not in err
    assert "line 1" in err and str(bad / "run.json") in err
    assert (bad / "run.json").read_bytes() == before and (bad / "final.png").is_file()
    page = (out / "index.html").read_text()
    assert "<b>a dog</b>" in page and page.count("<figure>") == 1


def _write_text(path, text):
    path.write_text(text)
    return path


def test_gallery_leaves_out_damaged_records_with_a_warning(tmp_path, caplog):
    from pixgen.apps.batch import update_gallery

    out = tmp_path / "out"
    for i, name in enumerate(sorted(BAD_RECORDS)):
        _finished_job(out, f"{i + 1:04d}-bad", BAD_RECORDS[name])
    _finished_job(out, "0009-a-dog", _good_record("a dog"))
    update_gallery(out)
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 1 and "a dog" in page
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(BAD_RECORDS) and all("left out of the gallery" in w for w in warnings)


def test_gallery_orders_jobs_by_number_and_shows_only_the_files_jobs(cli, tmp_path):
    """Job 10000 comes after job 9999; a line edited since an earlier run shows its new job, not
    the stale one beside it (whose folder is kept)."""
    from pixgen.apps.batch import finished_jobs

    out = tmp_path / "out"
    _finished_job(out, "10000-b", _good_record("b"))
    _finished_job(out, "9999-a", _good_record("a"))
    assert [r.job.prompt for r in finished_jobs(out)] == ["a", "b"]

    out = tmp_path / "edited"
    _finished_job(out, "0001-a-cat", _good_record("a cat"))
    _finished_job(out, "0002-a-dog", _good_record("a dog"))  # line 2 before it was edited
    _finished_job(out, "0002-a-fox", _good_record("a fox"))  # line 2 now, already run
    code, _, err = cli("batch", _write_text(tmp_path / "p.txt", "a cat\na fox\n"), "-o", out, "--resume", *SMOKE)
    assert code == 0, err
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 2 and "a fox" in page and "a dog" not in page
    assert (out / "0002-a-dog" / "final.png").is_file()


def test_studio_history_leaves_out_damaged_records(tmp_path, caplog):
    pytest.importorskip("starlette")
    from pixgen.serve.app import read_runs

    for name in sorted(BAD_RECORDS):
        _finished_job(tmp_path, name, BAD_RECORDS[name])
    _finished_job(tmp_path, "good", _good_record("a dog"))
    assert [r["prompt"] for r in read_runs(tmp_path)] == ["a dog"]
    assert sum("left out of the history" in r.getMessage() for r in caplog.records) == len(BAD_RECORDS)


def test_resume_refuses_a_damaged_run_json_in_one_line(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"settings": None, "finished": False}))
    code, _, err = cli("resume", run)
    assert code == 2 and "Traceback" not in err and "'settings' must be an object" in err
    assert len(err.strip().splitlines()) == 1


def _interrupted_run(tmp_path, **sets):
    """A smoke run stopped after its first step (state saved): its folder."""
    from pixgen.api import generate
    from pixgen.errors import Interrupted
    from pixgen.settings import load_settings
    from tests.conftest import StopAfter

    overrides = {"prompt": "a cat", "output_dir": str(tmp_path), "iterations": 2, "save_every": 0, "seed": 3, **sets}
    with pytest.raises(Interrupted) as stopped:
        generate(load_settings("smoke", overrides=overrides), **StopAfter(1).kw())
    return stopped.value.args[0].run_dir


def test_resume_refuses_the_state_of_another_drawer(cli, tmp_path):
    """A state file of another drawer (the pixel drawer's (1, 3, H, W) image) or size copied into
    a run folder: one line, before anything is loaded, and the folder is as it was."""
    import torch

    from pixgen.outputs.state import load_state, save_state

    run = _interrupted_run(tmp_path)
    state = load_state(run / "state.safetensors")
    for z in (torch.rand(1, 3, 64, 64), torch.rand(1, 32, 16, 16)):  # another drawer; another size
        save_state(run / "state.safetensors", dict(state, z=z), 2)
        files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        code, _, err = cli("resume", run)
        assert code == 2 and "Traceback" not in err and "another drawer or size" in err, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


def test_resume_refuses_a_speck_guard_memory_of_another_shape_and_non_finite_latents(cli, tmp_path):
    """The speck guard's memory in a state file (its clean latent, its cells under specks) is
    checked as the latent is, and neither may hold nan or inf: one line, nothing changed."""
    import torch

    from pixgen.outputs.state import load_state, save_state

    run = _interrupted_run(tmp_path, speck_guard=True)
    state = load_state(run / "state.safetensors")
    rows, cols = state["z"].shape[-2:]
    bad = (
        (dict(speck_clean=torch.rand(1, 3, 8, 8)), "speck_clean"),
        (dict(speck_seen=torch.zeros(1, 1, rows + 1, cols, dtype=torch.bool)), "speck_seen"),
        (dict(speck_seen=torch.zeros(1, 1, rows, cols)), "speck_seen"),  # not bool
        (None, "speck_seen"),  # its clean latent without its cells under specks
        (dict(speck_clean=torch.full_like(state["speck_clean"], math.nan)), "non-finite"),
        (dict(z=torch.full_like(state["z"], math.inf)), "non-finite"),
    )
    without_seen = {k: v for k, v in state.items() if k != "speck_seen"}
    for each, needle in bad:
        save_state(run / "state.safetensors", dict(without_seen if each is None else state, **(each or {})), 2)
        files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        code, _, err = cli("resume", run)
        assert code == 2 and "Traceback" not in err and needle in err and len(err.strip().splitlines()) == 1, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


def test_a_resumed_run_counts_its_earlier_time(tmp_path):
    """run.json's seconds (and the gallery's caption, read from it) count both parts of a resumed
    batch job."""
    from pixgen.apps.batch import run_batch
    from pixgen.errors import Interrupted
    from pixgen.settings import load_settings
    from tests.conftest import StopAfter

    def make_settings(job):
        return load_settings("smoke", overrides=dict(job, iterations=2, save_every=0, seed=3))

    prompts, out = _write_text(tmp_path / "p.txt", "a cat\n"), tmp_path / "out"
    with pytest.raises(Interrupted):
        run_batch(prompts, out, make_settings, **StopAfter(1).kw())
    record_path = out / "0001-a-cat" / "run.json"
    record = json.loads(record_path.read_text())
    assert record["interrupted"] and record["steps_done"] == 1
    record_path.write_text(json.dumps(dict(record, seconds=1000.0)))  # the earlier part took 1000 s
    (result,) = run_batch(prompts, out, make_settings, resume=True)
    assert result.status == "done" and 1000 < result.seconds < 1100
    record = json.loads(record_path.read_text())
    assert record["finished"] and 1000 < record["seconds"] < 1100
    assert re.search(r"CLIP [-0-9.]+ &middot; 10\d\d\.\d s", (out / "index.html").read_text())


PNG_METADATA = {
    "a-list": '["prompt"]',
    "a-string": '"prompt: a cat"',
    "null": "null",
    "environment-not-a-dict": json.dumps({"prompt": "a cat", "environment": "notadict"}),
    "prompt-a-number": json.dumps({"prompt": 3}),
    "threads-a-string": json.dumps({"prompt": "a cat", "environment": {"device": "cpu", "threads": "many"}}),
}


@pytest.mark.parametrize("name", sorted(PNG_METADATA))
def test_reproduce_refuses_malformed_png_metadata_in_one_line(cli, tmp_path, name):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("pixgen", PNG_METADATA[name])
    path = tmp_path / f"{name}.png"
    rgb.save(path, pnginfo=info)
    code, _, err = cli("reproduce", path)
    assert code == 2 and "Traceback" not in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_reproduce_never_writes_where_the_png_says(cli, tmp_path, monkeypatch):
    """A PNG whose metadata says output_dir "../escaped": the run goes to the default outputs
    folder (or -o), never outside the current folder."""
    from PIL import PngImagePlugin

    meta = {"prompt": "a cat", "vqgan": "tiny", "clip": ["tiny"], "size": [32, 32], "iterations": 1, "cutn": 2}
    meta.update(save_every=0, seed=1, gif=False, output_dir="../escaped")
    info = PngImagePlugin.PngInfo()
    info.add_itxt("pixgen", json.dumps(meta))
    work = tmp_path / "work"
    work.mkdir()
    rgb.save(work / "crafted.png", pnginfo=info)
    monkeypatch.chdir(work)
    code, out, err = cli("reproduce", "crafted.png", "--json")
    assert code == 0, err
    assert not (tmp_path / "escaped").exists()
    assert Path(json.loads(out)["run_dir"]).resolve().parent == work / "outputs"


def _tampered_prior(tmp_path, name: str, cond: str = "clip", **changes):
    """A prior file whose recorded architecture is changed by `changes` after it was written (a
    crafted file; its tensors fit the original)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from pixgen.prior.model import Prior, PriorArch, save_prior
    from pixgen.prior.registry import SHAPES_PRIOR

    source = SHAPES_PRIOR
    if cond == "text":  # a small text prior with its vocabulary
        vocabulary = {"bpe_ids": [320, 1929, 2368], "context": 4}
        arch = PriorArch(
            vocab_size=64 + 2 + 3 + 1, block_size=4 + 15, n_layer=1, n_head=2, n_embd=16, n_codes=64, grid=(4, 4),
            cond="text", cond_len=4, cond_offset=64, null_token=69, vocabulary=vocabulary,
        )  # fmt: skip
        source = tmp_path / "text.safetensors"
        save_prior(source, Prior(arch))
    with safe_open(str(source), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    arch = dict(json.loads(meta["pixgen_prior_arch"]), **changes)
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata=dict(meta, pixgen_prior_arch=json.dumps(arch)))
    return path


CRAFTED_PRIORS = {
    "no-heads": ({"n_head": 0}, "clip", "heads"),
    "heads-do-not-divide": ({"n_head": 3}, "clip", "3 heads do not divide the width"),
    "negative-grid": ({"grid": [-8, -8]}, "clip", "grid must be two positive sizes"),
    "text-without-vocabulary": ({"vocabulary": {}}, "text", "needs its vocabulary"),
    "null-token-out-of-range": ({"null_token": 5000}, "text", "null_token 5000 is outside the vocabulary"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_PRIORS))
def test_crafted_prior_architecture_is_one_line_before_anything_is_built(tmp_path, name):
    from pixgen.prior.model import load_prior

    changes, cond, message = CRAFTED_PRIORS[name]
    path = _tampered_prior(tmp_path, name, cond, **changes)
    with pytest.raises(PixgenError, match=message) as refused:
        load_prior(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    assert load_prior(_tampered_prior(tmp_path, "untouched", cond)) is not None  # the file as written loads


def test_models_info_describes_the_vqgans_models_list_lists(cli):
    for name in ("shapes", "tiny"):
        code, out, err = cli("models", "info", name)
        assert code == 0 and "unknown VQGAN" not in err and "codebook:" in out, err


@pytest.mark.parametrize("damage", ["missing", "nan", "indivisible"])
def test_crafted_vqgan_architecture_is_one_line_before_and_at_loading(cli, tmp_path, monkeypatch, damage):
    """A cached VQGAN whose file's architecture is damaged: the memory check reads it before any
    model loads (building its shape on the meta device), then the loading reads it again; either
    way one line and exit 2, never the layer's traceback (a NaN width, channels GroupNorm's groups
    do not divide, a missing field)."""
    import json as _json

    from pixgen.models.vqgan import VQGAN_FORMAT, tiny_decoder

    dec = tiny_decoder()
    arch = _json.loads(dec.arch.to_json())
    if damage == "missing":
        del arch["n_embed"]
    else:
        arch["ddconfig"]["ch"] = float("nan") if damage == "nan" else 7
    folder = tmp_path / "cache" / "vqgan" / "evil"
    folder.mkdir(parents=True)
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in dec.state_dict().items()}
    save_file(tensors, str(folder / "decoder.safetensors"), metadata={VQGAN_FORMAT.arch_key: _json.dumps(arch)})
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("a cat", "--vqgan", "evil", "--clip", "tiny", "-i", "1", "-o", tmp_path / "out")
    assert code == 2 and "Traceback" not in err and err.count("pixgen: error:") == 1, err
    assert "architecture" in err and not (tmp_path / "out").exists()
