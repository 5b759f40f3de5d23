"""Videos through imageio-ffmpeg (the optional `video` extra): MP4s written one frame at a time,
smooth frame interpolation with ffmpeg's minterpolate filter, reading videos frame by frame, and
copying an input's audio. Nothing here runs at import; ffmpeg is looked up when first needed.

Every file is written to a hidden temporary name in the same folder and renamed into place
when complete, so a killed process never leaves a truncated MP4 under the real name.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pixgen.errors import PixgenError
from pixgen.outputs.images import to_pil

log = logging.getLogger("pixgen")


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg uses; a PixgenError saying how to get one if there is none."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError) as e:
        raise PixgenError(
            f"ffmpeg is not available ({first_line(e)}); install the video extra: pip install 'pixgen[video]'"
        ) from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def to_array(image) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1], a PIL image or an array -> uint8 (H, W, 3)."""
    if hasattr(image, "detach"):
        image = to_pil(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.part.mp4")


class VideoWriter:
    """An H.264 MP4 written frame by frame (streamed to ffmpeg, nothing kept in memory), under a
    temporary name until `close()` renames it into place; `abort()` removes it."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self.fps = fps
        self.writer = None
        self.count = 0

    def append(self, image) -> None:
        import imageio.v2 as imageio

        if self.writer is None:
            self.writer = imageio.get_writer(
                self.tmp,
                format="FFMPEG",
                fps=self.fps,
                codec="libx264",
                quality=8,
                macro_block_size=8,
                ffmpeg_log_level="error",
            )
        self.writer.append_data(to_array(image))
        self.count += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; None when no frame was written."""
        if self.writer is None:
            return None
        try:
            self.writer.close()
            self.writer = None
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None
        try:
            self.tmp.unlink()
        except OSError:
            pass


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Frames of a video as uint8 (H, W, 3) arrays, decoded one at a time by ffmpeg."""
    import imageio_ffmpeg

    ffmpeg_exe()
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as e:
            raise PixgenError(f"cannot read video {path}: {first_line(e)}") from None
        width, height = meta["size"]
        for frame in gen:
            yield np.frombuffer(frame, np.uint8).reshape(height, width, 3)
    finally:
        gen.close()


def video_info(path: str | Path) -> dict:
    """{"fps", "frames", "size", "audio"} of a video, from ffmpeg's description of its streams. A missing
    file, one ffmpeg cannot read, or one without a video stream is a PixgenError."""
    import re

    path = Path(path)
    if not path.exists():
        raise PixgenError(f"input not found: {path}")
    exe = ffmpeg_exe()
    proc = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace")
    lines = proc.stderr.splitlines()
    streams = [line for line in lines if "Stream #" in line]
    if not streams:
        reason = next((line.strip() for line in reversed(lines) if line.strip() and "output file" not in line), "")
        reason = reason.rsplit("] ", 1)[-1] if reason.startswith("[") else reason
        reason = reason.split(": ", 1)[-1] if reason.startswith(str(path)) else reason
        raise PixgenError(f"cannot read video {path}: {reason[:200] or 'ffmpeg found no streams'}")
    video = next((line for line in streams if "Video:" in line), None)
    if video is None:
        raise PixgenError(f"cannot read video {path}: it has no video stream")
    rate = re.search(r"([\d.]+) fps", video) or re.search(r"([\d.]+)k? tbr", video)
    size = re.search(r", (\d{2,5})x(\d{2,5})", video)
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", proc.stderr)
    fps = float(rate.group(1)) if rate else 24.0
    seconds = int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)) if duration else 0
    return {
        "fps": fps,
        "frames": round(seconds * fps),  # about; 0 when ffmpeg gives no duration
        "size": (int(size.group(1)), int(size.group(2))) if size else (0, 0),
        "audio": any("Audio:" in line for line in streams),
    }


def has_audio(exe: str, path: Path) -> bool:
    """Whether ffmpeg sees an audio stream in the file."""
    proc = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace")
    return any("Audio:" in line and "Stream #" in line for line in proc.stderr.splitlines())


def _run_ffmpeg(args: list[str], out: Path) -> Path:
    """Run ffmpeg writing to a temporary file, then move it to `out`."""
    exe = ffmpeg_exe()
    tmp = temp_name(out)
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-v", "error", "-y", *args, str(tmp)],
            capture_output=True,
            text=True,
            errors="replace",
        )
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise PixgenError(f"ffmpeg failed: {reason[:200]}")
        os.replace(tmp, out)
    except OSError as e:
        raise PixgenError(f"ffmpeg could not run: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def interpolate(src: str | Path, out: str | Path, fps: float) -> Path:
    """`src` re-timed to `fps` with motion-compensated interpolated frames (ffmpeg's minterpolate)."""
    return _run_ffmpeg(
        [
            "-i",
            str(src),
            "-vf",
            f"minterpolate=fps={fps:g}:mi_mode=mci",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-an",
        ],
        Path(out),
    )


def add_audio(video: str | Path, audio_from: str | Path, out: str | Path) -> Path:
    """`video`'s pictures with `audio_from`'s audio (cut to the shorter of the two), no re-encoding of the video."""
    return _run_ffmpeg(
        [
            "-i",
            str(video),
            "-i",
            str(audio_from),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0?",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-shortest",
        ],
        Path(out),
    )


def smooth_copy(src: Path, fps: float) -> Path | None:
    """Write `<name>-smooth.mp4` beside `src` at `fps`; on failure warn and keep `src` alone."""
    out = src.with_name(f"{src.stem}-smooth.mp4")
    try:
        return interpolate(src, out, fps)
    except PixgenError as e:
        log.warning("no %s (%s); %s is kept", out.name, e, src.name)
        return None
