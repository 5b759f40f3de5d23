"""Videos: a frame per step streamed into the MP4, interpolation through ffmpeg, resume."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from pixgen import api
from pixgen.settings import load_settings
from tests.conftest import SMOKE, StopAfter

pytest.importorskip("imageio_ffmpeg")


def _frames(path):
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [np.asarray(f) for f in reader]


def _settings(tmp_path, **kw):
    """The shapes models (smooth images, so that H.264 keeps them recognisable), 6 quick steps."""
    base = dict(prompt="a red circle on a blue background", seed=3, iterations=6, cutn=4, init="tokens")
    base.update(save_every=1, output_dir=str(tmp_path), video=True)
    return load_settings(preset="shapes", overrides=dict(base, **kw))


def _nearest(frame, images) -> int:
    """Which of `images` the (lossy) video frame is closest to."""
    return int(np.argmin([np.abs(frame.astype(float) - np.asarray(im).astype(float)).mean() for im in images]))


def test_video_has_a_frame_per_step_starting_from_the_start_image(tmp_path):
    r = api.generate(_settings(tmp_path))
    frames = _frames(r.run_dir / "progress.mp4")
    assert len(frames) == 7  # the starting image, the 5 images after it, the final image
    assert frames[0].shape == (64, 64, 3)
    # frames/00000K.png is the image step K started from: frame K-1 of the video; then final.png
    images = [Image.open(r.run_dir / "frames" / f"{k:06d}.png") for k in range(1, 7)] + [Image.open(r.image)]
    assert [_nearest(f, images) for f in frames] == list(range(7))
    assert not list(r.run_dir.glob(".*"))  # no temporary files left behind


def test_video_every_n_steps_and_its_own_fps(tmp_path):
    r = api.generate(_settings(tmp_path, video_every=2, video_fps=4, save_every=0))
    assert len(_frames(r.run_dir / "progress.mp4")) == 4  # steps 1, 3, 5 started from these; then final
    with imageio.get_reader(r.run_dir / "progress.mp4", format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == pytest.approx(4)
    assert not (r.run_dir / "frames").exists()


def test_interpolated_copy_beside_the_plain_video(tmp_path):
    r = api.generate(_settings(tmp_path, video_fps=5, video_interpolate=20))
    plain, smooth = r.run_dir / "progress.mp4", r.run_dir / "progress-smooth.mp4"
    assert len(_frames(plain)) == 7
    with imageio.get_reader(smooth, format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == pytest.approx(20)
    assert len(_frames(smooth)) > 20


def test_failing_interpolation_warns_and_keeps_the_plain_video(cli, tmp_path, monkeypatch):
    import pixgen.outputs.video

    monkeypatch.setattr(pixgen.outputs.video, "ffmpeg_exe", lambda: "/bin/false")  # an "ffmpeg" that always fails
    code, _, err = cli("a cat", *SMOKE, "-i", "4", "--video", "--video-interpolate", "30", "-o", tmp_path)
    assert code == 0, err
    assert "no progress-smooth.mp4 (ffmpeg failed" in err and "progress.mp4 is kept" in err
    (run,) = tmp_path.iterdir()
    assert len(_frames(run / "progress.mp4")) == 5 and not (run / "progress-smooth.mp4").exists()


def test_interrupted_video_run_resumes_into_one_whole_video(tmp_path):
    with pytest.raises(api.Interrupted) as e:
        api.generate(_settings(tmp_path), **StopAfter(3).kw())
    part = e.value.args[0]
    assert len(_frames(part.run_dir / "progress.mp4")) == 4  # 3 steps' start images, then the image so far
    done = api.resume(part.run_dir)
    frames = _frames(done.run_dir / "progress.mp4")
    assert len(frames) == 7
    images = [Image.open(done.run_dir / "frames" / f"{k:06d}.png") for k in range(1, 7)] + [Image.open(done.image)]
    assert [_nearest(f, images) for f in frames] == list(range(7))


def test_resume_without_a_matching_video_starts_it_at_the_resumed_step(tmp_path, caplog):
    with pytest.raises(api.Interrupted) as e:
        api.generate(_settings(tmp_path), **StopAfter(3).kw())
    run = e.value.args[0].run_dir
    (run / "progress.mp4").unlink()  # as after kill -9: the video was never finished
    api.resume(run)
    assert "the new video starts there" in caplog.text
    assert len(_frames(run / "progress.mp4")) == 4  # steps 4, 5, 6 and the final image


@pytest.mark.parametrize("key, value", [("video_every", 0), ("video_fps", 0), ("video_interpolate", -1)])
def test_bad_video_settings(cli, tmp_path, key, value):
    code, _, err = cli("a cat", *SMOKE, "--set", f"{key}={value}", "-o", tmp_path)
    assert code == 2 and key in err and len(err.strip().splitlines()) == 1


def test_resume_after_kill_9_starts_the_video_at_the_resumed_step(tmp_path):
    """The hard-kill path: no clean interrupt, so no finished progress.mp4 (only the manifest
    and the state); the resumed video starts at the step the state was saved at."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    cmd = [sys.executable, "-m", "pixgen", "a cat", *SMOKE, "--set", "iterations=40", "--save-every", "1",
           "--video", "-o", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run = time.time() + 180, None
    while run is None and time.time() < deadline and proc.poll() is None:
        for d in tmp_path.glob("*/state.safetensors"):
            if json.loads((d.parent / "run.json").read_text()).get("steps_done", 0) >= 10:
                run = d.parent
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run is not None and not (run / "progress.mp4").exists()
    step = int(load_file(str(run / "state.safetensors"))["step"])
    done = subprocess.run([sys.executable, "-m", "pixgen", "resume", str(run)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the new video starts there" in done.stderr and "Traceback" not in done.stderr
    assert len(_frames(run / "progress.mp4")) == 40 - step + 1  # steps step+1..40 and the final image
