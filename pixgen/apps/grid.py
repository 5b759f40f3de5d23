"""`pixgen grid`: a parameter sweep as a labelled grid (an X/Y/Z plot). Each axis is a setting
and its values (`seed=1..4`, `lr=0.05,0.1`, `prompt=a red circle || a blue square`); every cell
is one run with the sweep's settings and the cell's values over them.

The cells run through the batch machinery (pixgen.apps.batch): a jobs file `cells.jsonl` and one
folder per cell under `cells/`, so a grid resumes, shards and loads each model set once, and each
cell's final.png reproduces alone (`pixgen reproduce`). Beside them `grid.png`, the cells with
their axis labels (one block per Z value, stacked), and `index.html`. Every cell is checked before
anything runs or is written: a bad axis or value is one PixgenError line."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixgen.apps.batch import Job, job_finished, job_seed, run_batch
from pixgen.errors import PixgenError
from pixgen.files import atomic_write
from pixgen.outputs.writer import slugify
from pixgen.phases import Hooks

MAX_AXIS = 64  # values on one axis
MAX_CELLS = 256  # cells in one grid (runs, like the jobs of a batch file)
TEXT_SEP = "||"  # between the values of prompt and of list settings: a prompt's own syntax never has it
NOT_AXES = ("output_dir",)  # where the cells go is the grid's (-o), not a cell's
RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")  # 1..8: whole numbers, both ends included
SPACED = re.compile(r"^\s*(-?[\d.eE+-]+)\s*\.\.\s*(-?[\d.eE+-]+)\s*:\s*(\d+)\s*$")  # 0.1..0.5:5, evenly spaced
CELL_SIDE = 128  # the least a cell is drawn at in grid.png (small images are scaled up, nearest)


@dataclass
class Axis:
    """One axis: its setting and its values, as typed (`labels`) and as a job gives them."""

    name: str  # x, y or z
    key: str
    labels: list[str]
    values: list

    def label(self, i: int) -> str:
        return f"{self.key}={self.labels[i]}"


@dataclass
class Grid:
    """A checked sweep: its axes (X first), the cells' job settings in job order (Z outer, then Y,
    then X) and where it goes."""

    prompt: str
    axes: list[Axis]
    cells: list[dict]
    out: Path
    jobs: list[Job] = field(default_factory=list)

    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) value counts (1 for an axis not given)."""
        counts = {a.name: len(a.values) for a in self.axes}
        return counts.get("x", 1), counts.get("y", 1), counts.get("z", 1)

    def axis(self, name: str) -> Axis | None:
        return next((a for a in self.axes if a.name == name), None)


def separator(key: str) -> str:
    """`||` between the values of the prompt and of settings whose own values hold commas (lists,
    pairs); a comma otherwise."""
    from pixgen.settings import FIELDS

    return TEXT_SEP if key == "prompt" or FIELDS[key].metadata["text"] in ("csv", "one", "pair") else ","


def _range(text: str, key: str) -> list[str] | None:
    """`A..B` (whole numbers, both included) or `A..B:N` (N evenly spaced) as value texts; None
    when `text` is no range. Too many values is an error before any is made."""
    whole = RANGE.match(text)
    if whole:
        a, b = int(whole[1]), int(whole[2])
        if abs(b - a) + 1 > MAX_AXIS:
            raise PixgenError(f"axis {key}={text}: {abs(b - a) + 1} values, at most {MAX_AXIS} on an axis")
        step = 1 if b >= a else -1
        return [str(v) for v in range(a, b + step, step)]
    spaced = SPACED.match(text)
    if not spaced:
        return None
    try:
        a, b, n = float(spaced[1]), float(spaced[2]), int(spaced[3])
    except ValueError:
        raise PixgenError(f"axis {key}={text}: a range is A..B or A..B:N (N values)") from None
    if not 2 <= n <= MAX_AXIS:
        raise PixgenError(f"axis {key}={text}: N must be between 2 and {MAX_AXIS}")
    return [f"{a + (b - a) * i / (n - 1):g}" for i in range(n)]


def _typed(key: str, text: str):
    """A value's text as the setting takes it (read as YAML, like --set), a prompt as it is."""
    from pixgen.settings import FIELDS, parse_set

    if key == "prompt" or str(FIELDS[key].type).startswith("str"):
        return text
    return parse_set([f"{key}={text}"])[key]


def parse_axis(name: str, text: str) -> Axis:
    """``"seed=1..4"`` -> the axis of the setting seed, values 1, 2, 3, 4. Values are separated
    by commas, or by `||` for the prompt and list settings; `A..B` and `A..B:N` are ranges."""
    from pixgen.settings import FIELDS

    if "=" not in text:
        raise PixgenError(f"--{name} expects KEY=V1,V2,... such as seed=1..4, got {text!r}")
    key, _, rest = text.partition("=")
    key = key.strip().replace("-", "_")
    if key not in FIELDS or key in NOT_AXES:
        known = ", ".join(k for k in FIELDS if k not in NOT_AXES)
        raise PixgenError(f"--{name}: unknown setting {key!r} (known: {known})")
    labels: list[str] = []
    for part in rest.split(separator(key)):
        part = part.strip()
        if not part:
            continue
        spread = None if separator(key) == TEXT_SEP else _range(part, f"{key}")
        labels.extend(spread or [part])
        if len(labels) > MAX_AXIS:
            raise PixgenError(f"--{name} {key}: more than {MAX_AXIS} values on an axis")
    if not labels:
        raise PixgenError(f"--{name} {key}: no values (give KEY=V1,V2,...)")
    if len(set(labels)) != len(labels):
        raise PixgenError(f"--{name} {key}: a value is given twice")
    return Axis(name, key, labels, [_typed(key, v) for v in labels])


def parse_axes(x: str | None, y: str | None = None, z: str | None = None) -> list[Axis]:
    """The axes given (X at least), each of another setting, at most MAX_CELLS cells in all."""
    if not x:
        raise PixgenError("a grid needs --x KEY=V1,V2,... (and optionally --y and --z)")
    axes = [parse_axis(name, text) for name, text in (("x", x), ("y", y), ("z", z)) if text]
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise PixgenError(f"each axis sweeps another setting, got {', '.join(keys)}")
    cells = 1
    for a in axes:
        cells *= len(a.values)
    if cells > MAX_CELLS:
        raise PixgenError(f"the grid has {cells} cells, at most {MAX_CELLS}")
    return axes


def default_folder(base: str | Path, prompt: str, axes: list[Axis]) -> Path:
    """`<output_dir>/grid-<prompt>-<hash of the sweep>`: the same command finds the same folder
    (so --resume and shards need no -o)."""
    spec = json.dumps([prompt, [(a.key, a.labels) for a in axes]])
    return Path(base) / f"grid-{slugify(prompt, 30)}-{hashlib.sha256(spec.encode()).hexdigest()[:6]}"


def plan_grid(prompt: str, axes: list[Axis], make_settings: Callable[[dict], object], out: Path) -> Grid:
    """Every cell's job settings, each checked by `make_settings` (as a batch job's are) before
    anything runs: a bad value is one PixgenError naming the cell. Without a seed given, every
    cell gets the same one, derived from the prompt (as a batch job's), so the cells differ only
    by the swept settings."""
    import itertools

    x, y, z = (next((a for a in axes if a.name == n), None) for n in "xyz")
    seed = job_seed(None, Job(0, 0, {"prompt": prompt}))
    cells = []
    for zi, yi, xi in itertools.product(*(range(len(a.values)) if a else [None] for a in (z, y, x))):
        job = {"prompt": prompt}
        for a, i in ((x, xi), (y, yi), (z, zi)):
            if a is not None:
                job[a.key] = a.values[i]
        where = ", ".join(a.label(i) for a, i in ((x, xi), (y, yi), (z, zi)) if a is not None)
        try:
            settings = make_settings(dict(job))
        except PixgenError as e:
            raise PixgenError(f"grid cell {where}: {e}") from None
        if settings.seed is None:
            job["seed"] = seed
        cells.append(job)
    grid = Grid(prompt, axes, cells, Path(out))
    grid.jobs = [Job(i, i + 1, dict(cell)) for i, cell in enumerate(cells)]
    return grid


def run_grid(
    grid: Grid,
    make_settings: Callable[[dict], object],
    resume: bool = False,
    shard: str | None = None,
    on_job: Callable | None = None,
    hooks: Hooks | None = None,
    run_jobs: Callable[[Path, Path], list] | None = None,
) -> list:
    """Run the grid's cells (this shard's) through pixgen.apps.batch.run_batch, or through
    `run_jobs(jobs_file, folder)` (a batch on Ray: pixgen.apps.ray_batch), then write grid.png and
    index.html of every finished cell; returns the batch's JobResults."""
    out = grid.out
    jobs_file = out / "cells.jsonl"
    text = "".join(json.dumps(cell, ensure_ascii=False) + "\n" for cell in grid.cells)
    if jobs_file.is_file() and jobs_file.read_text(encoding="utf-8") != text:
        raise PixgenError(f"{out} holds another grid; choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(jobs_file, text.encode("utf-8"))
    try:
        if run_jobs is not None:
            results = run_jobs(jobs_file, out / "cells")
        else:
            results = run_batch(jobs_file, out / "cells", make_settings, resume, shard, 1, on_job, hooks)
    finally:
        write_grid(grid)
    return results


def cell_images(grid: Grid) -> list[Path | None]:
    """Each cell's image on disk, in job order (None for a cell not finished: failed, another
    shard's or not run yet)."""
    found = []
    for job in grid.jobs:
        folder = grid.out / "cells" / job.name
        found.append(folder / "final.png" if job_finished(folder) else None)
    return found


def write_grid(grid: Grid) -> None:
    """grid.png and index.html from the finished cells on disk, under a lock (shards finishing at
    once never lose a cell)."""
    from filelock import FileLock

    with FileLock(str(grid.out / ".grid.lock")):
        images = cell_images(grid)
        sheet(grid, images).save(grid.out / ".grid.png.tmp", format="PNG")
        (grid.out / ".grid.png.tmp").replace(grid.out / "grid.png")
        atomic_write(grid.out / "index.html", page(grid, images).encode("utf-8"))


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _fit_text(draw, text: str, width: float, font) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _cell_size(images: list[Path | None]) -> tuple[int, int]:
    from PIL import Image

    for path in images:
        if path is not None:
            with Image.open(path) as im:
                return im.size
    return 64, 64


def sheet(grid: Grid, images: list[Path | None]):
    """The labelled grid: X values across the top, Y values down the left, one block per Z
    value (titled) stacked; a cell not finished is grey with "not run"."""
    from PIL import Image, ImageDraw

    nx, ny, nz = grid.shape()
    w, h = _cell_size(images)
    scale = max(1, -(-CELL_SIDE // max(1, min(w, h))))
    cw, ch, pad, font = w * scale, h * scale, 6, _font(14)
    x, y, z = grid.axis("x"), grid.axis("y"), grid.axis("z")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 0 if y is None else min(220, max(int(probe.textlength(y.label(i), font=font)) for i in range(ny)) + 2 * pad)
    line = 22
    title = line  # the prompt (and the Z value) above each block
    block_h = title + line + ny * (ch + pad)
    canvas = Image.new("RGB", (left + nx * (cw + pad) + pad, nz * block_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for zi in range(nz):
        top = zi * block_h
        head = grid.prompt if z is None else f"{z.label(zi)}   ·   {grid.prompt}"
        draw.text((pad, top + 4), _fit_text(draw, head, canvas.width - 2 * pad, font), fill="black", font=font)
        for xi in range(nx):
            text = x.label(xi) if x else ""
            draw.text((left + xi * (cw + pad) + pad, top + title + 4), _fit_text(draw, text, cw, font), "black", font)
        for yi in range(ny):
            cy = top + title + line + yi * (ch + pad)
            if y is not None:
                draw.text((pad, cy + ch // 2 - 8), _fit_text(draw, y.label(yi), left - 2 * pad, font), "black", font)
            for xi in range(nx):
                cx, path = left + xi * (cw + pad) + pad, images[(zi * ny + yi) * nx + xi]
                if path is None:
                    draw.rectangle((cx, cy, cx + cw - 1, cy + ch - 1), fill="#ccc")
                    draw.text((cx + 8, cy + ch // 2 - 8), "not run", fill="#555", font=font)
                else:
                    with Image.open(path) as im:
                        canvas.paste(im.convert("RGB").resize((cw, ch), Image.NEAREST), (cx, cy))
    return canvas


def page(grid: Grid, images: list[Path | None]) -> str:
    """index.html: a table per Z value, the X values as columns and the Y values as rows, each
    cell linking to its run folder (all text escaped)."""
    nx, ny, nz = grid.shape()
    x, y, z = grid.axis("x"), grid.axis("y"), grid.axis("z")
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>pixgen grid</title>",
        "<style>body{font:14px system-ui,sans-serif}td,th{padding:4px;text-align:center}"
        "img{width:128px;image-rendering:pixelated}.missing{background:#ccc;width:128px;height:128px}</style>",
        f"<h1>{esc(grid.prompt)}</h1><p><a href='grid.png'>grid.png</a></p>",
    ]
    for zi in range(nz):
        if z is not None:
            parts.append(f"<h2>{esc(z.label(zi))}</h2>")
        header = "".join(f"<th>{esc(x.label(i)) if x else ''}</th>" for i in range(nx))
        parts.append(f"<table><tr><th></th>{header}</tr>")
        for yi in range(ny):
            row = [f"<th>{esc(y.label(yi)) if y else ''}</th>"]
            for xi in range(nx):
                index = (zi * ny + yi) * nx + xi
                name = grid.jobs[index].name
                if images[index] is None:
                    row.append("<td><div class='missing'>not run</div></td>")
                else:
                    link = f"cells/{esc(name)}/"
                    row.append(f"<td><a href='{link}'><img src='{link}final.png' alt=''></a></td>")
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"
