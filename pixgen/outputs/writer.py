"""Run folders and files: PNGs carrying their settings, frames, GIF, run.json.

Every file is written atomically (a temporary file in the same folder, then a rename), so an
interrupted write never leaves a truncated file. Run folders are never reused.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from pixgen.errors import PixgenError
from pixgen.files import atomic_write  # its home; callers may import it from here too
from pixgen.outputs.images import to_pil  # likewise
from pixgen.outputs.video import VideoWriter, first_line, smooth_copy

METADATA_KEY = "pixgen"
CONTACT_SHEET = "contact_sheet.png"
CONTACT_SHEET_MARKER = "pixgen-contact-sheet"  # a PNG text chunk: `pixgen search` skips these


def slugify(text: str, max_len: int = 60) -> str:
    """A safe, bounded folder-name fragment: ascii letters, digits and dashes only."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def make_run_dir(output_dir: str | Path, prompt: str, now: datetime | None = None) -> Path:
    """Create ``<output_dir>/<YYYYmmdd-HHMMSS>-<slug>``, adding -2, -3... rather than reuse one."""
    root = Path(output_dir)
    if not root.exists() and root.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4"):
        import logging

        logging.getLogger("pixgen").warning(
            "-o names the output folder: created folder %s/, the image goes to %s/<run>/final.png", root, root
        )
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slugify(prompt)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = root / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise PixgenError(f"cannot create a run folder in {root}: {e.strerror or e}") from None
    raise PixgenError(f"too many runs named {base!r} in {root}")


def write_json(path: str | Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode())


def save_png(path: str | Path, image, metadata: dict | None = None) -> None:
    """Save a PNG, with `metadata` as JSON in a text chunk named "pixgen"."""
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_itxt(METADATA_KEY, json.dumps(metadata, default=str))
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", pnginfo=info)
    atomic_write(path, buf.getvalue())


def _kind(value) -> str:
    """A JSON value's kind in words, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(type(value), "a number")


def _is_number(value) -> bool:
    """A JSON number (NaN and infinities, which Python's json reads, included: the readers that show
    them, such as the studio's history, turn them into null)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


ENVIRONMENT_KEYS = {"device": str, "threads": int, "torch": str, "cpu_capability": str, "gpu": str, "precision": str}


def check_png_settings(meta, path: str | Path) -> dict:
    """The PNG metadata's schema, as `pixgen reproduce` reads it: an object with a prompt, and
    an environment (when recorded) of the kinds pixgen.runtime.environment writes. The settings' own
    values are checked by pixgen.settings. Returns `meta`; anything else is one PixgenError line."""
    if not isinstance(meta, dict):
        raise PixgenError(f"{path}: its pixgen settings are {_kind(meta)}, not an object")
    if not isinstance(meta.get("prompt"), str):
        got = "lack a prompt" if "prompt" not in meta else f"have {_kind(meta['prompt'])} as prompt"
        raise PixgenError(f"{path}: its pixgen settings {got}")
    env = meta.get("environment", {})
    if not isinstance(env, dict):
        raise PixgenError(f"{path}: its recorded environment is {_kind(env)}, not an object")
    for key, kind in ENVIRONMENT_KEYS.items():
        if key in env and (not isinstance(env[key], kind) or isinstance(env[key], bool)):
            raise PixgenError(f"{path}: its recorded environment's {key!r} is {_kind(env[key])}")
    return meta


def read_png_metadata(path: str | Path) -> dict:
    """The settings JSON stored in a pixgen PNG. A PNG without it is a PixgenError."""
    try:
        with Image.open(path) as im:
            text = im.info.get(METADATA_KEY) if hasattr(im, "info") else None
    except FileNotFoundError:
        raise PixgenError(f"image not found: {path}") from None
    except (OSError, Image.UnidentifiedImageError, ValueError) as e:
        raise PixgenError(f"cannot read image {path}: {e}") from None
    if not text:
        raise PixgenError(f"{path} carries no pixgen settings (was it made by pixgen?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise PixgenError(f"{path}: its pixgen settings are not valid JSON") from None


def save_gif(path: str | Path, frame_paths: list[Path], fps: float = 10.0) -> None:
    """Assemble the saved frames into a looping GIF."""
    import imageio.v3 as iio

    if not frame_paths:
        return
    frames = [iio.imread(p) for p in frame_paths]
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
    atomic_write(path, buf.getvalue())


def run_finished(record: dict) -> bool:
    """Whether a run.json says its run finished: not the manifest of a run under way (or killed),
    not an interrupted run (records older than the manifest have no "finished" key)."""
    return bool(record.get("finished", True)) and not record.get("interrupted", False)


def check_run_record(record, source: str | Path) -> dict:
    """run.json's schema, as its readers use it (`run_finished`, `batch --resume`, the gallery,
    `pixgen resume`, the studio's history): an object; "finished" and "interrupted" booleans;
    "seconds" a number of at least 0 and "clip_score" a number (either may be null); "steps_done"
    a count; "losses" and "seconds_per_step" lists of numbers; and either "settings" (an object
    whose "prompt" is text and "seed" an integer, which a finished run must have) or, for a job of
    candidates, a "ranking" of {seed, clip_score, image}. Returns `record`; anything else is one
    PixgenError line naming `source` and what is wrong."""

    def bad(what: str):
        raise PixgenError(f"{source}: {what}")

    if not isinstance(record, dict):
        bad(f"expected a JSON object, got {_kind(record)}")
    for key in ("finished", "interrupted"):
        if key in record and not isinstance(record[key], bool):
            bad(f"{key!r} must be true or false, not {_kind(record[key])}")
    for key in ("seconds", "clip_score"):
        value = record.get(key)
        if value is not None and not _is_number(value):
            bad(f"{key!r} must be a number, not {_kind(value)}")
    if record.get("seconds") is not None and record["seconds"] < 0:
        bad("'seconds' must be at least 0")
    done = record.get("steps_done", 0)
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        bad("'steps_done' must be a count of steps")
    for key in ("losses", "seconds_per_step"):
        values = record.get(key, [])
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            bad(f"{key!r} must be a list of numbers")
    if "ranking" in record:
        ranking = record["ranking"]
        if not isinstance(ranking, list) or not ranking:
            bad("'ranking' must be a non-empty list of candidates")
        for c in ranking:
            if not (isinstance(c, dict) and _is_int(c.get("seed")) and _is_number(c.get("clip_score"))):
                bad("each candidate of 'ranking' needs an integer 'seed' and a number 'clip_score'")
        if not isinstance(record.get("prompt", ""), str):
            bad("'prompt' must be text")
        return record
    settings = record.get("settings")
    if not isinstance(settings, dict):
        bad(f"'settings' must be an object, not {_kind(settings)}")
    if not isinstance(settings.get("prompt", ""), str):
        bad(f"'settings.prompt' must be text, not {_kind(settings['prompt'])}")
    if "seed" in settings and not _is_int(settings["seed"]):
        bad(f"'settings.seed' must be an integer, not {_kind(settings['seed'])}")
    if "seed" not in settings and run_finished(record):
        bad("a finished run needs 'settings.seed'")
    return record


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_run_record(path: str | Path) -> dict:
    """A run.json, read and checked against its schema (`check_run_record`): a missing, unreadable
    or malformed file is one PixgenError line naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PixgenError(f"{path.parent} is not a pixgen run folder (no run.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PixgenError(f"{path} is unreadable: {getattr(e, 'strerror', None) or e}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise PixgenError(f"{path} is not valid JSON ({e.msg})") from None
    return check_run_record(record, path)


class RunWriter:
    """The output stage of one run: frames as they come, the video streamed step by step, then
    final.png, the GIF, the MP4 (and its smooth copy) and run.json.

    With `video` in the settings every `video_every`-th step's image (the image the step started
    from, so the first frame is the starting image) goes straight to the MP4 encoder, and the
    final image closes it. A resumed run carries over the progress.mp4 its interruption left
    (re-encoded once) when that video matches the step it resumes from; otherwise (e.g. after a
    kill -9, which leaves no finished MP4) the new video starts at the resumed step, with a warning.
    """

    def __init__(self, run_dir: Path, settings: dict):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.frames: list[Path] = []
        self.video = None  # pixgen.outputs.video.VideoWriter once the first frame arrives
        self.video_failed = False
        self.skipped: list[str] = []  # outputs a stop left unwritten

    def start(self) -> None:
        """run.json at the start of a run: its settings, seed and environment, marked unfinished."""
        self.progress(0, [], [])

    def progress(self, step: int, losses: list, seconds: list) -> None:
        """run.json as the state of `step` is about to be saved (so `pixgen resume` works after a
        kill -9): the steps done, their losses and times, still marked unfinished."""
        record = {"settings": self.settings, "finished": False, "steps_done": step}
        write_json(self.run_dir / "run.json", dict(record, losses=list(losses), seconds_per_step=list(seconds)))

    def frame(self, i: int, image) -> None:
        frames_dir = self.run_dir / "frames"
        frames_dir.mkdir(exist_ok=True)
        path = frames_dir / f"{i:06d}.png"
        save_png(path, image)
        self.frames.append(path)

    @property
    def video_fps(self) -> float:
        return float(self.settings.get("video_fps") or self.settings.get("fps") or 10.0)

    def video_step(self, i: int, image) -> None:
        """Step `i` (1-based) started from `image`: encode it when it is a video frame."""
        if not self.settings.get("video") or self.video_failed:
            return
        every = int(self.settings.get("video_every") or 1)
        if (i - 1) % every:
            return
        try:
            if self.video is None:
                self.video = VideoWriter(self.run_dir / "progress.mp4", self.video_fps)
                if i > 1:
                    self._carry_over(i - 1, every)
            self.video.append(image)
        except Exception as e:  # ffmpeg missing or failing: the run and its PNGs go on
            self._video_failed(e)

    def _carry_over(self, done: int, every: int) -> None:
        """Resuming after `done` steps: start the new video with the old one's frames, if it fits."""
        import imageio.v2 as imageio

        old = self.run_dir / "progress.mp4"
        expected = (done + every - 1) // every + 1  # the kept steps' frames and the interrupted image
        frames = []
        if old.is_file():
            try:
                with imageio.get_reader(old, format="FFMPEG") as reader:
                    frames = [frame for frame in reader.iter_data()]  # list() asks len(): inf
            except Exception:
                frames = []
        if len(frames) != expected:
            import logging

            logging.getLogger("pixgen").warning(
                "progress.mp4 does not match the resumed step %d; the new video starts there", done
            )
            return
        for frame in frames[:-1]:  # the last one was the interrupted image: the run goes on from it
            self.video.append(frame)

    def _video_failed(self, e: Exception) -> None:
        import logging

        self.video_failed = True
        if self.video is not None:
            self.video.abort()
            self.video = None
        logging.getLogger("pixgen").warning("no progress.mp4 (%s); the PNG frames are kept", first_line(e))

    def _finish_video(self, image) -> None:
        if not self.settings.get("video") or self.video_failed:
            return
        try:
            if self.video is None:  # no step ran (a resumed run that was already at its end)
                self.video = VideoWriter(self.run_dir / "progress.mp4", self.video_fps)
            self.video.append(image)
            path = self.video.close()
            self.video = None
        except Exception as e:
            self._video_failed(e)
            return
        smooth = float(self.settings.get("video_interpolate") or 0)
        if path is not None and smooth:
            smooth_copy(path, smooth)

    def finish(
        self,
        image,
        record: dict,
        gif: bool,
        interrupted: bool = False,
        video: bool = False,
        fps: float = 10.0,
        stop=None,
    ) -> Path:
        """Write final.png first, then the renders: a failing encoder never loses the images.
        `stop(phase, text)` is asked before each render (a pixgen.phases.Phase): when it says yes
        the render is skipped (named in `self.skipped` and run.json), and run.json is still written."""
        from pixgen.phases import Phase

        meta = dict(self.settings, interrupted=interrupted) if interrupted else self.settings
        final = self.run_dir / "final.png"
        save_png(final, image, meta)
        gif_render = lambda: save_gif(self.run_dir / "progress.gif", self.frames, fps)  # noqa: E731
        renders = [("progress.gif", Phase.WRITING_GIF, gif, gif_render)]
        renders.append(("progress.mp4", Phase.WRITING_VIDEO, video, lambda: self._finish_video(image)))
        for name, phase, wanted, render in renders:
            if not wanted:
                continue
            if self.skipped or (stop and stop(phase, f"writing {name}…")):
                self.skipped.append(name)
                if name == "progress.mp4" and self.video is not None:
                    self.video.abort()
                    self.video = None
                continue
            render()
        extra = {"skipped": self.skipped} if self.skipped else {}
        done = {"settings": self.settings, "interrupted": interrupted, "finished": not interrupted}
        write_json(self.run_dir / "run.json", {**done, **record, **extra})
        return final


def write_gallery(out_dir: Path, results: list, thumb: int = 192, title: str = "pixgen batch") -> None:
    """index.html (self-contained: images inline) and contact_sheet.png for finished jobs."""
    import base64
    import html
    from urllib.parse import quote

    from PIL import ImageDraw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cards, tiles = [], []
    for r in results:
        try:
            with Image.open(r.image) as im:
                im = im.convert("RGB")
                im.thumbnail((thumb, thumb))
        except OSError:
            continue
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        score = "n/a" if r.score is None else f"{r.score:.3f}"
        image_rel = Path(r.image).resolve().relative_to(out_dir.resolve())
        image_href = html.escape(quote(image_rel.as_posix()), quote=True)
        run_href = html.escape(quote(image_rel.parent.as_posix()) + "/", quote=True)
        cards.append(
            f'<figure><a href="{image_href}" title="full size"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(r.job.prompt, quote=True)}"></a>'
            f"<figcaption><b>{html.escape(r.job.prompt)}</b><br>seed {r.seed} &middot; CLIP {score} &middot; "
            f'{r.seconds:.1f} s<br><small><a href="{image_href}">{html.escape(image_rel.as_posix())}</a> '
            f'&middot; <a href="{run_href}">run folder</a></small>'
            "</figcaption></figure>"
        )
        tiles.append((im, r))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:"
        f"{thumb + 16}px;vertical-align:top;margin:.5em}}img{{width:{thumb}px}}figcaption{{font-size:.8em;"
        "overflow-wrap:anywhere}</style></head><body><h1>"
        + html.escape(title)
        + "</h1>"
        + "".join(cards)
        + "</body></html>\n"
    )
    atomic_write(out_dir / "index.html", page.encode("utf-8"))
    if tiles:
        cols = min(len(tiles), 6)
        rows = (len(tiles) + cols - 1) // cols
        sheet = Image.new("RGB", (cols * (thumb + 8), rows * (thumb + 24)), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (tile, r) in enumerate(tiles):
            x, y = (i % cols) * (thumb + 8) + 4, (i // cols) * (thumb + 24) + 4
            sheet.paste(tile, (x, y))
            label = r.job.prompt.encode("ascii", "replace").decode("ascii")[:30]
            draw.text((x, y + tile.height + 2), label, fill="black")
        buf = io.BytesIO()
        info = PngImagePlugin.PngInfo()
        info.add_text(CONTACT_SHEET_MARKER, "1")  # so that `pixgen search` knows to skip it
        sheet.save(buf, format="PNG", pnginfo=info)
        atomic_write(out_dir / CONTACT_SHEET, buf.getvalue())
