"""Interrupt and resume, numbers that go wrong, kill -9 during writes, full or read-only disks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen import api
from pixgen.errors import PixgenError
from pixgen.loop.optimise import NumericalFailure
from pixgen.models.loading import Models
from pixgen.outputs.writer import read_png_metadata
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


def test_resume_finishes_a_run_killed_during_its_final_writes(tmp_path):
    """Killed after its last state save but before final.png and the final run.json: resume
    writes the outputs from the state, the same as the run would have."""
    full = api.generate(_settings(tmp_path / "full", save_every=1))
    record = json.loads((full.run_dir / "run.json").read_text())
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("state.safetensors", "frames"):
        (full.run_dir / name).rename(cut / name)
    manifest = {"settings": record["settings"], "finished": False, "steps_done": 8, "losses": record["losses"]}
    (cut / "run.json").write_text(json.dumps(manifest))
    done = api.resume(cut)
    assert np.array_equal(_pixels(done.image), _pixels(full.image)) and done.losses == record["losses"]
    assert json.loads((cut / "run.json").read_text())["finished"] is True and (cut / "progress.gif").is_file()
    with pytest.raises(PixgenError, match="already complete"):
        api.resume(cut)


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
    from pixgen.models.scorer import load_clip
    from pixgen.models.vqgan import tiny_decoder

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


def _record(run):
    try:
        return json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _run_past(root, step, proc, known=()):
    """The new run folder under `root` (not in `known`) once that run, the one `proc` is
    running, has a saved state and is past `step` (run.json is written just before the state:
    the state may still be one save behind); None if it ends first."""
    deadline = time.time() + 180  # slow machines too
    while time.time() < deadline and proc.poll() is None:
        for run in root.glob("*/") if root.is_dir() else []:
            if run not in known and _record(run).get("steps_done", 0) >= step and (run / "state.safetensors").is_file():
                return run
        time.sleep(0.01)
    return None


def _check_file(path) -> str:
    """Open and fully read a file pixgen wrote; its kind."""
    from safetensors.torch import load_file

    if path.suffix == ".png":
        with Image.open(path) as im:
            im.load()
    elif path.suffix == ".gif":
        with Image.open(path) as im:
            for n in range(im.n_frames):
                im.seek(n)
                im.load()
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        assert "step" in load_file(str(path))
    else:
        raise AssertionError(f"unexpected file {path}")
    return path.suffix


# A child that writes through atomic_write and stops, deterministically, at the first C-level
# `write` or `fsync` call made while atomic_write is on the stack (a profile hook sees C calls),
# says so on stdout and sleeps there until it is killed.
_STALLED_WRITER = """
import sys, time
from pixgen.files import atomic_write

target, at = sys.argv[1], sys.argv[2]

def hook(frame, event, arg):
    if event != "c_call" or getattr(arg, "__name__", "") != at:
        return
    f = frame
    while f is not None and f.f_code.co_name != "atomic_write":
        f = f.f_back
    if f is not None:
        sys.setprofile(None)
        print("stalled", flush=True)
        time.sleep(60)

sys.setprofile(hook)
atomic_write(target, b"new " * 2_000_000)
sys.setprofile(None)
print("finished", flush=True)
"""


@pytest.mark.parametrize("at", ["write", "fsync"])
@pytest.mark.parametrize("old", [b"old complete content\n", None], ids=["old-file", "no-file"])
def test_kill_9_never_leaves_a_truncated_file(tmp_path, at, old):
    """kill -9 in the middle of atomic_write (which every run output goes through: the next test)
    leaves the target as it was, complete, or absent: never the new content in part."""
    target = tmp_path / "run.json"
    if old is not None:
        target.write_bytes(old)
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_WRITER, str(target), at], stdout=subprocess.PIPE)
    try:
        said = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert said == b"stalled\n", said
    if old is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == old
    assert all(p == target or p.name.startswith(".") for p in tmp_path.iterdir())  # leftovers are hidden


def test_every_run_output_is_written_atomically(tmp_path, monkeypatch):
    """The files of a run (images, GIF, run.json, state) all go through pixgen.files.atomic_path
    (atomic_write and the weights files write through it), so the test above covers them: a kill -9
    at any moment leaves none of them truncated. Each is recorded as atomic_path renames it."""
    import os
    import sys

    written, real = set(), os.replace

    def recording(src, dst, *a, **k):
        if sys._getframe(1).f_code.co_name == "atomic_path":
            written.add(Path(dst).resolve())
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", recording)
    result = api.generate(_settings(tmp_path, iterations=2, save_every=1))
    files = {p.resolve() for p in result.run_dir.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert {".png", ".json", ".safetensors"} <= {p.suffix for p in files}
    assert files <= written, sorted(str(p) for p in files - written)
    for path in files:
        _check_file(path)


def test_kill_9_mid_run_then_resume_is_bit_identical(tmp_path):
    """A run SIGKILLed mid-way (no clean exit, no final run.json) resumes from its last saved
    state, to the same latent, pixels and losses as the same run never interrupted."""
    from safetensors.torch import load_file

    cut, full = tmp_path / "cut", tmp_path / "full"
    cmd = _sixty_steps(cut, "--seed", "4", "--set", "threads=1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = _run_past(cut, 15, proc)
    proc.kill()
    proc.wait()
    assert run is not None and not (run / "final.png").exists()
    killed_at = int(load_file(str(run / "state.safetensors"))["step"])
    assert 14 <= killed_at < 60 and _record(run)["finished"] is False
    resumed = subprocess.run([sys.executable, "-m", "pixgen", "resume", str(run), "--json"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    reference = subprocess.run(
        _sixty_steps(full, "--seed", "4", "--set", "threads=1"), capture_output=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr
    (ref,) = full.iterdir()
    assert np.array_equal(_pixels(run / "final.png"), _pixels(ref / "final.png"))
    a, b = load_file(str(run / "state.safetensors")), load_file(str(ref / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the latent, Adam's moments...
    done, expected = _record(run), _record(ref)
    assert done["steps_done"] == 60 and done["finished"] is True and done["threads"] == 1
    assert done["losses"] == expected["losses"]  # those before the kill come from the manifest


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
