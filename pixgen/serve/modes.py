"""The studio's modes beyond one run, and the checks they share with it: a request's settings
checked once (`check_job`, behind both POST /api/jobs and POST /api/check, so the form checks
what the server checks), sample (pixgen sample), vary (pixgen vary) and sweep (pixgen grid);
the settings of a dropped PNG; deleting a run folder inside the output folder."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import secrets
import shutil
from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.serve.form import SERVER_KEYS, resolve_file, server_settings, settings_from_request, to_form
from pixgen.settings import FIELDS, Settings

MODES = ("generate", "sample", "vary", "sweep")
MODE_KEYS = ("mode", "keep", "x", "y", "z", "image", "strength", "count")  # a request's, not settings
MAX_VARY = 8  # variations one request queues
KEY = re.compile(r"setting '(\w+)'")


def error_key(message: str) -> str | None:
    """The setting a refusal names ("setting 'size': ..."), for the form to mark its field."""
    found = KEY.search(message)
    return found[1] if found and found[1] in FIELDS else None


def check_job(settings: Settings, models, limits) -> None:
    """Everything the server checks of a job's settings before it queues it (beyond
    pixgen.settings' own checks, done as they were made): its limits, the size against the
    drawer's and the prior start's factor, and the memory estimate. Also what /api/check asks."""
    from pixgen.api import check_fits, fit_size
    from pixgen.drawers import drawer_class
    from pixgen.settings import prior_start_on

    limits.check(settings)
    fit_size(settings, drawer_class(settings.drawer).size_factor(models.decoder))
    if prior_start_on(settings) and models.decoder is not None:
        f = models.decoder.factor
        if min(settings.size) < f:
            w, h = settings.size
            raise PixgenError(
                f"setting 'size': {w}x{h} is smaller than the VQGAN's factor {f}, which draws the prior start"
            )
    check_fits(settings, models)


def regions_of(settings: Settings) -> dict:
    """The regions of a job's prompt (its last phrase's, where the image ends), parsed as a run
    parses them, and the image's size: {"regions": [{"text", "box": [x0, y0, x1, y1]}], "size"}."""
    from pixgen.loop.prompts import parse_prompt_spec

    final = parse_prompt_spec(settings.prompt)[-1]
    regions = [{"text": p.text, "box": list(p.region)} for p in final if p.region is not None]
    return {"regions": regions, "size": list(settings.size)}


def split_request(data) -> tuple[dict, dict]:
    """A request's mode keys and its settings."""
    if not isinstance(data, dict):
        raise PixgenError("a job is a JSON object of setting: value, with at least a prompt")
    mode = {k: data[k] for k in MODE_KEYS if k in data}
    if mode.get("mode", "generate") not in MODES:
        raise PixgenError(f"mode: unknown mode {mode.get('mode')!r} (choose from {', '.join(MODES)})")
    return mode, {k: v for k, v in data.items() if k not in MODE_KEYS}


def _number(mode: dict, key: str, default, lo, hi):
    value = mode.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value) if isinstance(default, float) else int(value)
        except ValueError:
            value = None
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise PixgenError(f"{key}: must be a number between {lo} and {hi}")
    return value


def plan(data, preset: str | None, root: Path, models, limits) -> list[tuple]:
    """The jobs a request makes, as (settings, kind, extra) triples, every one checked: one run,
    one sample, the variations of an image in the output folder, or the sweep of a grid."""
    mode, values = split_request(data)
    kind = mode.get("mode", "generate")
    if kind == "vary":
        return _variations(mode, preset, root, models, limits)
    settings = settings_from_request(values, preset, root)
    check_job(settings, models, limits)
    if kind == "sample":
        from pixgen.apps.sample import check_keep

        keep = _number(mode, "keep", 4, 1, 64)
        check_keep(keep, settings.prior_samples)
        return [(settings, "sample", {"keep": keep})]
    if kind == "sweep":
        return [_sweep(mode, values, preset, root, models, limits, settings)]
    return [(settings, "generate", {})]


def _sweep(mode: dict, values: dict, preset, root: Path, models, limits, base: Settings) -> tuple:
    """A sweep: pixgen.apps.grid's axes over the form's settings, every cell checked."""
    from pixgen.apps.grid import parse_axes, plan_grid

    axes = parse_axes(*(str(mode[k]) if mode.get(k) else None for k in "xyz"))
    made: list[Settings] = []

    def make_settings(cell: dict) -> Settings:
        settings = settings_from_request(dict(values, **cell), preset, root)
        check_job(settings, models, limits)
        return settings

    grid = plan_grid(base.prompt, axes, make_settings, root / ".sweep")  # its folder is the job's
    made = [make_settings(job.overrides) for job in grid.jobs]
    return base, "sweep", {"grid": grid, "settings": made}


def server_owned(settings: Settings, preset: str | None, root: Path) -> Settings:
    """A PNG's settings on this server: its device, threads, precision and output folder; its
    models must be the server's (or it is refused)."""
    server = server_settings(preset, str(root))
    for key in ("vqgan", "clip", "vqgan_config", "vqgan_ckpt"):
        if getattr(settings, key) != getattr(server, key):
            raise PixgenError(f"setting {key!r}: this image was made with other models than this server's")
    keep = {k: getattr(server, k) for k in ("device", "threads", "precision", "compile", "output_dir")}
    return dataclasses.replace(settings, **keep)


def _variations(mode: dict, preset, root: Path, models, limits) -> list[tuple]:
    """`count` variations (pixgen.apps.vary) of a PNG in the output folder, each a run."""
    from pixgen.api import settings_from_png
    from pixgen.apps.vary import variation_settings
    from pixgen.settings import validate

    if not mode.get("image"):
        raise PixgenError("image: vary needs an image (a run from the history, or a dropped PNG)")
    path = Path(resolve_file(str(mode["image"]), root, "image"))
    strength = _number(mode, "strength", 0.5, 0.0, 1.0)
    count = _number(mode, "count", 4, 1, MAX_VARY)
    source = server_owned(settings_from_png(path), preset, root)
    first = secrets.randbelow(2**31)  # recorded in each variation: it reproduces
    out = []
    for i in range(int(count)):
        settings = variation_settings(source, path, float(strength), first + i)
        validate(settings)
        check_job(settings, models, limits)
        out.append((settings, "generate", {}))
    return out


def png_form(data: bytes, root: Path, uploads: str) -> dict:
    """A dropped PNG's settings as the form shows them, and where it is kept (as dropped, its
    settings in it, for vary): a PNG without pixgen settings is one PixgenError line."""
    from pixgen.api import settings_from_record
    from pixgen.files import atomic_write
    from pixgen.outputs.images import open_rgb
    from pixgen.outputs.writer import check_png_settings, read_png_metadata

    buf = io.BytesIO(data)
    try:
        meta = check_png_settings(read_png_metadata(buf), "the dropped image")
    except PixgenError as e:
        raise PixgenError(str(e).replace(str(buf), "the dropped image")) from None
    meta.pop("output_dir", None)
    settings = settings_from_record(meta)  # checked as reproduce checks them
    folder = root / uploads
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:20]}.png"
    atomic_write(path, data)
    try:
        open_rgb(path)  # the CLI's image checks (size caps, decompression bombs)
    except PixgenError:
        path.unlink(missing_ok=True)
        raise
    form = {k: to_form(k, getattr(settings, k), root) for k in FIELDS if k not in SERVER_KEYS}
    return {"form": form, "path": f"{uploads}/{path.name}"}


def delete_run(root: Path, name: str, busy: set[str]) -> None:
    """Remove the run folder `name`: a folder right inside the output folder (no link, no hidden
    folder) that holds a run, and no job is writing to."""
    base = root.resolve()
    folder = base / name
    if "/" in name or "\\" in name or name.startswith(".") or folder.is_symlink():
        raise PixgenError(f"no run {name!r} in the output folder")
    if folder.resolve().parent != base or not folder.is_dir():
        raise PixgenError(f"no run {name!r} in the output folder")
    if not ((folder / "run.json").is_file() or (folder / "cells.jsonl").is_file() or (folder / "grid.png").is_file()):
        raise PixgenError(f"{name!r} is not a run folder")
    if name in busy:
        raise PixgenError(f"run {name!r} is under way: cancel it first")
    shutil.rmtree(folder)
