"""Video style transfer: every frame of a video (or a folder of frames) is an init image, steered
toward a prompt for a few steps.

To keep the frames from flickering, each frame starts from the VQGAN encoding of a blend of two
images: the new input frame and the previous frame's result (`blend` is the previous result's
share; blending the two latents instead can land between codes and snap to unrelated ones). The
previous result is always read back as the 8-bit image that was saved, so a resumed restyle
computes exactly what an uninterrupted one would have.

Output, in one folder: ``frames/<name>.png`` (a folder's frames keep their names with a .png
suffix; a video's are numbered 000001.png...), ``restyled.mp4`` at the input's frame rate with
the input's audio when it has any, and ``restyle.json``. Re-running with `resume` skips the
frames already done.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pixgen._version import __version__
from pixgen.api import make_loop, make_run_drawer, prepare
from pixgen.apps.clip_tools import IMAGE_SUFFIXES
from pixgen.errors import PixgenError
from pixgen.loop.prompts import plan_prompts
from pixgen.outputs.images import open_rgb, to_pil
from pixgen.outputs.video import VideoWriter, add_audio, first_line, video_info
from pixgen.outputs.writer import save_png, slugify, write_json
from pixgen.phases import Hooks
from pixgen.runtime.device import resolve_seed
from pixgen.settings import Settings
from pixgen.starts.images import fit_image
from pixgen.starts.make import ready_to_fit

log = logging.getLogger("pixgen")
RECORD = "restyle.json"
MAX_FRAMES = 100_000  # input frames a restyle takes (about an hour of video at 25 fps)
VIDEO = "restyled.mp4"


class RestyleInterrupted(PixgenError):
    """Stopped on request between steps; the frames done so far are kept (exit code 130)."""

    exit_code = 130


@dataclass
class Source:
    """Where the frames come from: a folder of images or a video file."""

    path: Path
    kind: str  # "folder" or "video"
    fps: float | None = None  # a video's frame rate
    audio: bool = False
    files: list[Path] = field(default_factory=list)  # a folder's frames, in name order

    def frames(self) -> Iterator[tuple[str, object]]:
        """(output name, PIL image or uint8 array) for each frame, in order."""
        if self.kind == "folder":
            from pixgen.outputs.images import open_rgb

            for p in self.files:
                yield f"{p.stem}.png", _Lazy(open_rgb, p)
        else:
            from pixgen.outputs.video import read_video

            for i, frame in enumerate(read_video(self.path), 1):
                yield f"{i:06d}.png", frame


class _Lazy:
    """A folder frame read only when it has to be restyled (skipped frames are never opened)."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __call__(self):
        return self.fn(self.arg)


def open_source(path: str | Path) -> Source:
    """A folder of image frames or a video file; anything else is a one-line PixgenError."""

    path = Path(path)
    if not path.exists():
        raise PixgenError(f"input not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PixgenError(f"{path} holds no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if len(files) > MAX_FRAMES:
            raise PixgenError(f"{path} holds {len(files)} frames; pixgen restyle takes at most {MAX_FRAMES}")
        seen: dict[str, Path] = {}
        for p in files:
            if p.stem in seen:
                raise PixgenError(f"{seen[p.stem].name} and {p.name} in {path} would both become {p.stem}.png")
            seen[p.stem] = p
        return Source(path, "folder", files=files)

    info = video_info(path)
    if info["frames"] > MAX_FRAMES:
        raise PixgenError(f"{path} has about {info['frames']} frames; pixgen restyle takes at most {MAX_FRAMES}")
    return Source(path, "video", fps=info["fps"], audio=info["audio"])


def default_output_dir(source: str | Path, prompt: str, root: str | Path = "outputs") -> Path:
    """outputs/restyle-<input name>-<prompt>: the same command finds the same folder to resume."""

    return Path(root) / f"restyle-{slugify(Path(source).stem, 30)}-{slugify(prompt, 40)}"


@dataclass
class RestyleResult:
    out_dir: Path
    frames: list[Path]
    rendered: int  # frames restyled by this call (the others were already done)
    video: Path | None


def _to_tensor(image, width: int, height: int, fit: str) -> torch.Tensor:
    """A PIL image or uint8 array -> (1, 3, height, width) in [0, 1], fitted like init images."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image).convert("RGB")
    arr = np.asarray(fit_image(image, width, height, fit), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def _check_record(out_dir: Path, record: dict, resume: bool) -> dict:
    """A new folder gets the record; an existing one needs `resume` and the same input and prompt."""
    path = out_dir / RECORD
    if not path.is_file():
        if (out_dir / "frames").is_dir() and any((out_dir / "frames").iterdir()):
            raise PixgenError(f"{out_dir} already holds frames that pixgen restyle did not record; choose another -o")
        return record
    if not resume:
        raise PixgenError(f"{out_dir} already holds a restyle; add --resume to continue it, or choose another -o")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PixgenError(f"{path} is unreadable: {e}") from None
    for key in ("input", "prompt", "blend", "iterations", "size"):
        if old.get(key) != record.get(key):
            raise PixgenError(
                f"{out_dir} was restyled with {key} {old.get(key)!r}, not {record.get(key)!r}; "
                "resume with the same input and settings, or choose another -o"
            )
    return dict(record, seed=old["seed"])


def restyle(
    source: str | Path,
    settings: Settings,
    out_dir: str | Path,
    blend: float = 0.5,
    fps: float | None = None,
    resume: bool = False,
    models=None,
    on_frame: Callable[[int, str, bool], None] | None = None,
    hooks: Hooks | None = None,
) -> RestyleResult:
    """Restyle every frame of `source` toward `settings.prompt`, `settings.iterations` steps each.

    `blend` (0 to below 1) is the previous result's share in each frame's starting latent.
    `fps` sets the video's frame rate for a folder of frames (default `settings.fps`); a video
    input keeps its own. `on_frame(index, name, skipped)` is called before each frame;
    `hooks` (as for `pixgen.api.generate`) hear each step, and when `hooks.should_stop()` says
    yes the frame in progress is dropped and RestyleInterrupted is raised; re-running with
    `resume` continues.
    """

    out_dir = Path(out_dir)
    src, record = _begin(source, settings, blend, fps, out_dir, resume)
    settings = replace(settings, seed=record["seed"], init_image=None, init_noise=None, video=False)
    hooks = hooks or Hooks()
    run = prepare(settings, models, hooks)
    drawer = make_run_drawer(run)
    ready_to_fit(drawer, hooks)
    frames_dir = _open_folder(out_dir, record, run.settings, src.kind)
    done: list[Path] = []
    previous = None  # the previous frame's result, as saved (8-bit)
    rendered = 0
    for index, (name, frame) in enumerate(src.frames()):
        out = frames_dir / name
        if on_frame:
            on_frame(index, name, out.is_file())
        if out.is_file():
            previous = open_rgb(out)
        else:
            result = _restyle_frame(run, drawer, frame, previous, blend, hooks)
            if result is None:
                raise RestyleInterrupted(
                    f"interrupted; {len(done)} frames are done in {out_dir}; add --resume to the same command to go on"
                )
            meta = dict(run.settings.to_dict(), restyle_frame=name, restyle_input=record["input"], blend=blend)
            save_png(out, result, meta)
            previous = to_pil(result)
            rendered += 1
        done.append(out)
    video = out_dir / VIDEO
    if rendered or not video.is_file():
        video = write_video(done, video, fps or src.fps or run.settings.fps, src.path if src.audio else None)
    return RestyleResult(out_dir, done, rendered, video)


def _begin(source, settings: Settings, blend: float, fps: float | None, out_dir: Path, resume: bool):
    """Check the inputs before anything loads: (the Source, the folder's record, seed drawn)."""

    if not 0 <= blend < 1:
        raise PixgenError(f"--blend must be at least 0 and below 1, got {blend}")
    if fps is not None and not 0 < fps <= 240:
        raise PixgenError(f"--fps must be between 0 and 240, got {fps}")
    plan_prompts(settings)
    src = open_source(source)
    record = {
        "input": str(Path(source).resolve()),
        "prompt": settings.prompt,
        "blend": blend,
        "iterations": settings.iterations,
        "size": list(settings.size),
        "seed": resolve_seed(settings.seed),
    }
    return src, _check_record(out_dir, record, resume)


def _open_folder(out_dir: Path, record: dict, settings: Settings, kind: str) -> Path:
    """Create the output folder's frames/ and write its restyle.json; returns frames/."""

    frames_dir = out_dir / "frames"
    try:
        frames_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PixgenError(f"cannot create {frames_dir}: {e.strerror or e}") from None
    record.update(settings=settings.to_dict(), pixgen_version=__version__, source=kind)
    write_json(out_dir / RECORD, record)
    return frames_dir


def _restyle_frame(run, drawer, frame, previous, blend: float, hooks: Hooks) -> torch.Tensor | None:
    """One frame's result image, started from the drawer's fit of the frame blended with the
    previous result (for the VQGAN: its encoding); None when `hooks.should_stop()` said yes."""

    s, device = run.settings, run.device
    image = frame() if isinstance(frame, _Lazy) else frame
    init = _to_tensor(image, s.width, s.height, s.init_fit).to(device)
    start = init
    if previous is not None and blend > 0:  # blended as images: a blend of two latents can snap to unrelated codes
        start = torch.lerp(init, _to_tensor(previous, s.width, s.height, "stretch").to(device), blend)
    z = drawer.fit(start, torch.Generator().manual_seed(s.seed))
    loop = make_loop(run, start=(z, init), drawer=drawer)
    for step in loop.run(s.iterations):
        if hooks.on_step:
            hooks.on_step(step, s.iterations)
        if hooks.stop_requested():
            return None
    with torch.no_grad():
        return loop.drawer.render(loop.result())


def write_video(frames: list[Path], out: Path, fps: float, audio_from: Path | None) -> Path | None:
    """The restyled frames as an MP4, with `audio_from`'s audio when given. A failing ffmpeg
    warns once and keeps the frames (and, if only the audio failed, the silent video)."""

    silent = out.with_name(f".{out.stem}-silent.mp4") if audio_from else out
    writer = VideoWriter(silent, fps)
    try:
        for path in frames:
            writer.append(open_rgb(path))
        writer.close()
    except Exception as e:
        writer.abort()
        log.warning("no %s (%s); the frames are kept", out.name, first_line(e))
        return None
    if audio_from is None:
        return out
    try:
        add_audio(silent, audio_from, out)
        os.unlink(silent)
    except PixgenError as e:
        log.warning("%s has no audio (%s)", out.name, e)
        os.replace(silent, out)
    return out
