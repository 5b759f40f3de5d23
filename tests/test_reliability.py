"""Interrupt and resume, numbers that go wrong, kill -9 during writes, full or read-only disks."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen import api
from pixgen.errors import PixgenError
from pixgen.models import Models
from pixgen.optimise import NumericalFailure
from pixgen.outputs import read_png_metadata
from pixgen.settings import load_settings
from tests.conftest import SMOKE, StopAfter


def _settings(tmp_path, **kw):
    base = dict(prompt="a red house", seed=3, iterations=8, save_every=2, output_dir=str(tmp_path))
    return load_settings(preset="smoke", overrides=dict(base, **kw))


def _pixels(path):
    return np.asarray(Image.open(path))


def _sixty_steps(out, *extra):
    """A pixgen command line for a 60-step smoke run that saves every step into `out`."""
    return [sys.executable, "-m", "pixgen", "a cat", *SMOKE, "--set", "iterations=60", "--save-every", "1",
            "-o", str(out), *extra]  # fmt: skip


def test_interrupted_run_resumes_bit_identical(tmp_path):
    full = api.generate(_settings(tmp_path / "full"))
    with pytest.raises(api.Interrupted) as e:
        api.generate(_settings(tmp_path / "cut"), **StopAfter(3).kw())
    part = e.value.args[0]
    assert part.interrupted and (part.run_dir / "state.safetensors").is_file()
    assert read_png_metadata(part.image)["interrupted"] is True
    record = json.loads((part.run_dir / "run.json").read_text())
    assert record["interrupted"] is True and record["steps_done"] == 3
    done = api.resume(part.run_dir)
    assert np.array_equal(_pixels(done.image), _pixels(full.image))
    assert len(done.losses) == 8 and done.losses == pytest.approx(full.losses)
    assert json.loads((part.run_dir / "run.json").read_text())["interrupted"] is False


def test_resume_refuses_finished_or_foreign_folders(tmp_path):
    r = api.generate(_settings(tmp_path))
    with pytest.raises(PixgenError, match="already complete"):
        api.resume(r.run_dir)
    with pytest.raises(PixgenError, match="not a pixgen run folder"):
        api.resume(tmp_path)


def test_sigint_saves_and_exits_130_then_cli_resume_finishes(tmp_path):
    cmd = _sixty_steps(tmp_path, "--seed", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/frames/000002.png")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "pixgen resume" in err
    (run,) = tmp_path.iterdir()
    assert read_png_metadata(run / "final.png")["interrupted"] is True
    assert (run / "progress.gif").is_file() and (run / "state.safetensors").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "pixgen", "resume", str(run), "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "run.json").read_text())["steps_done"] == 60


class _Flaky(torch.nn.Module):
    """A decoder that returns NaN on chosen calls: numbers going wrong mid-run."""

    def __init__(self, inner, bad_calls):
        super().__init__()
        self.inner, self.bad, self.calls = inner, set(bad_calls), 0
        self.arch, self.codebook = inner.arch, inner.codebook

    @property
    def factor(self):
        return self.inner.factor

    @property
    def dtype(self):
        return self.inner.dtype

    def cast(self, dtype):
        self.inner.cast(dtype)
        return self

    def forward(self, z):
        self.calls += 1
        out = self.inner(z)
        return out * float("nan") if self.calls in self.bad else out


def _models(bad_calls):
    from pixgen.scorer import load_clip
    from pixgen.vqgan import tiny_decoder

    return Models(_Flaky(tiny_decoder(), bad_calls), [load_clip("tiny")]).to(torch.device("cpu"))


def test_nan_rolls_back_halves_lr_and_goes_on(tmp_path, caplog):
    r = api.generate(_settings(tmp_path), models=_models({3}))
    assert np.isfinite(r.losses[3]) and not np.isfinite(r.losses[2])
    assert _pixels(r.image).std() > 0
    assert any("halved the learning rate" in m for m in caplog.messages)


def test_repeated_nan_stops_with_the_last_good_image(tmp_path):
    with pytest.raises(NumericalFailure, match="non-finite 5 times"):
        api.generate(_settings(tmp_path), models=_models(set(range(4, 100))))
    (run,) = tmp_path.iterdir()
    assert (run / "final.png").is_file() and "error" in json.loads((run / "run.json").read_text())


def test_kill_9_never_leaves_a_truncated_file(tmp_path):
    rng = random.Random(0)
    cmd = _sixty_steps(tmp_path)
    for i in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180  # wait until this run is writing frames (slow machines too)
        while time.time() < deadline and len(list(tmp_path.glob("*/frames/*.png"))) <= i:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # then kill at a random moment of the writing
        proc.kill()
        proc.wait()
    checked = 0
    for path in tmp_path.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue  # temporary files of an unfinished write
        if path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        checked += 1
    assert checked > 0


def _mount_tmpfs(path, opts):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


@pytest.mark.parametrize("opts, needle", [("size=48k", "No space left"), ("ro,size=1m", "Read-only")])
def test_full_or_read_only_disk_is_a_clear_error(cli, tmp_path, opts, needle):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, opts)
    try:
        code, _, err = cli("a cat", *SMOKE, "--set", "iterations=30", "--save-every", "1", "-o", disk / "out")
        assert code == 2 and needle in err and "Traceback" not in err
        assert err.strip().count("\n") == 0
        leftovers = [p for p in disk.rglob("*") if p.is_file() and p.name.startswith(".")]
        assert leftovers == []  # no half-written temporary files
    finally:
        subprocess.run(["umount", str(disk)])


def test_same_settings_twice_never_overwrite(tmp_path):
    s = _settings(tmp_path, iterations=1)
    a, b = api.generate(s), api.generate(replace(s))
    assert a.run_dir != b.run_dir and a.image.is_file() and b.image.is_file()
