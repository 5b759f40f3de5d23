"""Reproduction across machines: the environment the pixels depend on is recorded, `reproduce`
uses its thread count and device, and says in one line when they cannot match (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.api import settings_from_png
from pixgen.outputs.writer import read_png_metadata, save_png
from tests.conftest import SMOKE

FAST = (*SMOKE, "--set", "iterations=2", "--set", "save_every=0")


@pytest.fixture(autouse=True)
def _keep_threads():
    """Runs set torch's thread count for the process: put it back after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(cli, tmp_path, *extra) -> dict:
    code, out, err = cli("a red house", *FAST, "--seed", "5", "-o", tmp_path, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def _pixels(path):
    return np.asarray(Image.open(path))


def test_run_json_and_png_record_threads_torch_and_cpu(cli, tmp_path):
    res = _run(cli, tmp_path / "a")
    env = read_png_metadata(res["image"])["environment"]
    assert env == {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "precision": "fp32",  # what `auto` became (conftest pins the calibration to fp32)
    }
    record = json.loads((Path(res["run_dir"]) / "run.json").read_text())
    assert {k: record[k] for k in env} == env and record["settings"]["environment"] == env
    assert record["settings"]["threads"] == env["threads"] > 0  # 0 (torch's default) is resolved


def test_reproduce_uses_the_recorded_thread_count(cli, tmp_path):
    first = _run(cli, tmp_path / "a", "--set", "threads=1")["image"]
    torch.set_num_threads(2)  # another machine's default
    assert settings_from_png(first).threads == 1
    code, out, err = cli("reproduce", first, "-o", tmp_path / "b", "--json")
    assert code == 0 and "warning" not in err, err
    again = json.loads(out)
    assert torch.get_num_threads() == 1
    assert read_png_metadata(again["image"])["environment"]["threads"] == 1
    assert np.array_equal(_pixels(first), _pixels(again["image"]))


def _with_environment(src, dst, env):
    """A copy of a pixgen PNG whose recorded environment is `env` (None: none recorded)."""
    meta = read_png_metadata(src)
    meta.pop("environment")
    if env is not None:
        meta["environment"] = env
    image = torch.from_numpy(_pixels(src).copy()).permute(2, 0, 1).float() / 255
    save_png(dst, image, meta)
    return dst


def test_reproduce_warns_in_one_line_when_it_cannot_match(cli, tmp_path):
    first = _run(cli, tmp_path / "a", "--set", "threads=1")["image"]
    env = dict(read_png_metadata(first)["environment"], torch="1.0.0", device="cuda:3")
    other = _with_environment(first, tmp_path / "other.png", env)
    code, _, err = cli("reproduce", other, "-o", tmp_path / "b", "--threads", "2", "--json")
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if line.startswith("pixgen: warning:")]
    assert "device cuda:3 -> cpu" in line and f"torch 1.0.0 -> {torch.__version__}" in line
    assert "1 threads -> 2" in line and line.endswith("the pixels may differ")

    code, _, err = cli("reproduce", _with_environment(first, tmp_path / "old.png", None), "-o", tmp_path / "c")
    assert code == 0 and err.count("pixgen: warning:") == 1 and "records no device" in err


def test_reproduce_refuses_zero_threads(cli, tmp_path):
    first = _run(cli, tmp_path / "a")["image"]
    code, _, err = cli("reproduce", first, "--threads", "0")
    assert code == 2 and "Traceback" not in err and "--threads" in err


def test_a_thread_count_recorded_on_a_bigger_machine_is_capped_here():
    from pixgen.api import max_threads, settings_from_record

    s = settings_from_record({"prompt": "a cat", "threads": 4096})
    assert s.threads == min(4096, max_threads())
    assert settings_from_record({"prompt": "a cat", "threads": 1}).threads == 1


def test_reproduce_runs_the_precision_auto_chose_then(cli, tmp_path):
    """`auto` follows this machine's calibration, which can change (a new cache, another load):
    an image made under `auto` reproduces in the precision auto chose when it was made."""
    from pixgen.errors import PixgenError

    first = _run(cli, tmp_path / "a", "--set", "threads=1")["image"]
    meta = read_png_metadata(first)
    assert meta["precision"] == "auto" and meta["environment"]["precision"] == "fp32"
    bf16 = _with_environment(first, tmp_path / "bf16.png", dict(meta["environment"], precision="bf16"))
    assert settings_from_png(bf16).precision == "bf16"
    assert settings_from_png(first).precision == "fp32"
    bad = _with_environment(first, tmp_path / "bad.png", dict(meta["environment"], precision="fp64"))
    with pytest.raises(PixgenError, match="precision"):
        settings_from_png(bad)
    asked = _run(cli, tmp_path / "b", "--set", "threads=1", "--precision", "bf16")["image"]
    assert settings_from_png(asked).precision == "bf16"  # a precision asked for stays what was asked
