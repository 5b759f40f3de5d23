"""pixgen restyle: video and frame-folder inputs, blending, audio, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import wave

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SMOKE

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


def _clip_frames(n=3, size=64):
    """A red square moving right over a blue background."""
    frames = []
    for i in range(n):
        f = np.zeros((size, size, 3), np.uint8)
        f[..., 2] = 200
        f[20:40, 8 + 8 * i : 28 + 8 * i] = (220, 30, 30)
        frames.append(f)
    return frames


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    with imageio.get_writer(path, format="FFMPEG", fps=5, codec="libx264", macro_block_size=8) as w:
        for f in _clip_frames():
            w.append_data(f)
    return path


def _frames(path):
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [np.asarray(f) for f in reader], reader.get_meta_data()


def test_restyle_a_video(cli, tmp_path, clip):
    out = tmp_path / "out"
    code, _, err = cli("restyle", clip, "a red circle", *SMOKE, "-i", "2", "-o", out, "--seed", "1")
    assert code == 0, err
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000001.png", "000002.png", "000003.png"]
    frames, meta = _frames(out / "restyled.mp4")
    assert len(frames) == 3 and meta["fps"] == pytest.approx(5) and frames[0].shape == (64, 64, 3)
    record = json.loads((out / "restyle.json").read_text())
    assert record["prompt"] == "a red circle" and record["seed"] == 1 and record["blend"] == 0.5
    assert "restyled 3 of 3 frames" in err
    assert not list(out.glob(".*"))


def test_rerun_needs_resume_and_skips_done_frames_with_the_same_result(cli, tmp_path, clip):
    out = tmp_path / "out"
    args = ("restyle", clip, "a red circle", *SMOKE, "-i", "2", "-o", out, "--seed", "1")
    assert cli(*args)[0] == 0
    third = np.asarray(Image.open(out / "frames" / "000003.png"))
    code, _, err = cli(*args)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    (out / "frames" / "000003.png").unlink()  # as if interrupted during the last frame
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    assert "restyled 1 of 3 frames" in err and "(done before)" in err
    assert np.array_equal(np.asarray(Image.open(out / "frames" / "000003.png")), third)
    code, _, err = cli("restyle", clip, "a blue square", *SMOKE, "-i", "2", "-o", out, "--resume")
    assert code == 2 and "prompt" in err


def test_restyle_a_folder_keeps_names_and_takes_fps(cli, tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for name, f in zip(["b.png", "a.jpg", "c.png"], _clip_frames(), strict=True):
        Image.fromarray(f).save(src / name)
    (src / "notes.txt").write_text("not a frame")
    out = tmp_path / "out"
    code, _, err = cli("restyle", src, "a red circle", *SMOKE, "-i", "1", "-o", out, "--fps", "4", "--blend", "0")
    assert code == 0, err
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["a.png", "b.png", "c.png"]
    frames, meta = _frames(out / "restyled.mp4")
    assert len(frames) == 3 and meta["fps"] == pytest.approx(4)


def test_blending_with_the_previous_result_steadies_the_frames(tmp_path, clip):
    from pixgen.apps.restyle import restyle
    from pixgen.settings import load_settings

    def flicker(blend):
        settings = load_settings(
            preset="shapes", overrides=dict(prompt="a green triangle", iterations=3, cutn=4, seed=0, lr=0.05)
        )
        r = restyle(clip, settings, tmp_path / f"b{blend}", blend=blend)
        images = [np.asarray(Image.open(p), dtype=float) for p in r.frames]
        return np.mean([np.abs(a - b).mean() for a, b in zip(images, images[1:], strict=False)])

    assert flicker(0.8) < flicker(0.0)


def test_audio_is_copied_from_the_input(cli, tmp_path):
    from pixgen.outputs.video import has_audio

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    src = tmp_path / "with_audio.mp4"
    subprocess.run(
        [exe, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=4:duration=0.75", "-f", "lavfi",
         "-i", "sine=frequency=440:duration=0.75", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-shortest", str(src)],
        check=True,
    )  # fmt: skip
    out = tmp_path / "out"
    code, _, err = cli("restyle", src, "a red circle", *SMOKE, "-i", "1", "-o", out)
    assert code == 0, err
    assert has_audio(exe, out / "restyled.mp4")
    assert len(_frames(out / "restyled.mp4")[0]) == len(list((out / "frames").iterdir()))


def _bad(cli, tmp_path, source, *extra):
    code, out, err = cli("restyle", source, "a cat", *SMOKE, "-i", "1", "-o", tmp_path / "out", *extra)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_and_exit_2(cli, tmp_path, monkeypatch):
    assert "input not found" in _bad(cli, tmp_path, tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    assert "holds no image frames" in _bad(cli, tmp_path, tmp_path / "empty")
    (tmp_path / "fake.mp4").write_text("not a video at all")
    assert "cannot read video" in _bad(cli, tmp_path, tmp_path / "fake.mp4")
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:  # audio only: no video stream
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    assert "no video stream" in _bad(cli, tmp_path, tmp_path / "sound.wav")
    assert "--blend" in _bad(cli, tmp_path, tmp_path / "fake.mp4", "--blend", "1")

    def no_ffmpeg():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    err = _bad(cli, tmp_path, tmp_path / "fake.mp4")
    assert "ffmpeg is not available" in err and "pixgen[video]" in err
    assert not (tmp_path / "out").exists()  # nothing was written for bad input
