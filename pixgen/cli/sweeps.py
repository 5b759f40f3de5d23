"""The `grid` and `vary` commands: sweeps of settings and variations of an image (registered by
pixgen.cli.app). No torch at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console
from pixgen.cli.options import ConfigOpt, OfflineOpt, PresetOpt, SetOpt, with_setting_flags
from pixgen.cli.scale import RayCpusOpt, RayOpt, RayWorkersOpt, check_ray_options, run_on_ray
from pixgen.settings import OUTPUT

SWEEP = "Sweep"
AXIS_HELP = (
    "KEY=V1,V2,... : a setting and its values; A..B is a range of whole numbers, A..B:N N evenly spaced "
    "values; the prompt's and list settings' values are separated by || instead of commas."
)
GRID_EPILOG = (
    'Examples: pixgen grid "a red circle on a blue background" --preset shapes --x seed=1..4 '
    "--y prior_temperature=0.7,1.0 ; --x 'prompt=a red circle || a blue square'. Each cell is a batch "
    "job (cells/NNNN-.../final.png, reproducible alone); grid.png and index.html label them. "
    "--resume and --shard K/N as for pixgen batch."
)


def _layered(preset, config, flags: dict, sets: list[str]):
    """make_settings for a job: the command's flags are the defaults of each job (as pixgen batch's)."""
    from pixgen.needs import check_run
    from pixgen.settings import load_settings

    def make_settings(job: dict):
        job = dict(job)
        settings = load_settings(job.pop("preset", preset), config, dict(flags, **job), sets)
        check_run(settings)
        return settings

    return make_settings


@with_setting_flags("output_dir")
def grid(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw (unless prompt is an axis).")],
    x: Annotated[str, typer.Option("--x", help="The X axis: " + AXIS_HELP, rich_help_panel=SWEEP)],
    y: Annotated[str | None, typer.Option("--y", help="The Y axis (rows).", rich_help_panel=SWEEP)] = None,
    z: Annotated[str | None, typer.Option("--z", help="The Z axis (one block each).", rich_help_panel=SWEEP)] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output-dir",
            help="Folder of the grid.",
            show_default="outputs/grid-PROMPT-HASH",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip finished cells; redo unfinished ones.", rich_help_panel=SWEEP)
    ] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="K/N: run cells K, K+N, ... (0-based).", rich_help_panel=SWEEP)
    ] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
    ray_workers: RayWorkersOpt = None,
    *,
    flags: dict,
):
    """Sweep settings over a labelled grid (an X/Y/Z plot): one run per cell, grid.png and index.html."""
    from pixgen.apps.grid import default_folder, parse_axes, plan_grid, run_grid

    check_ray_options(ray, shard, ray_cpus, ray_workers)
    axes = parse_axes(x, y, z)
    make_settings = _layered(preset, config, flags, set_ or [])
    base = make_settings({"prompt": prompt})
    out = Path(output_dir) if output_dir else default_folder(base.output_dir, prompt, axes)
    plan = plan_grid(prompt, axes, make_settings, out)

    def on_job(r, total):
        msg = f"[{r.job.index + 1}/{len(plan.cells)}] {r.status}" + (f" ({r.error})" if r.error else "")
        console.note(msg)

    if ray is not None:  # the cells as a batch on Ray: its own progress and summary
        ray_options = (ray, ray_cpus, ray_workers)
        on_ray = lambda jobs, folder: run_on_ray(jobs, str(folder), make_settings, resume, 1, ray_options, offline)  # noqa: E731
        run_grid(plan, make_settings, resume, run_jobs=on_ray)
        return
    with console.running(False, offline) as hooks:
        results = run_grid(plan, make_settings, resume, shard, on_job, hooks)
    failed = [r for r in results if r.status == "failed"]
    console.note(f"{len(results) - len(failed)} of {len(results)} cells finished; grid: {out / 'grid.png'}")
    if failed:
        raise typer.Exit(1)


VARY_EPILOG = (
    "An image made from the prior's sample (--init prior) is varied by redrawing its code grid from a "
    "point on (--strength 0.25: the last quarter); any other is mixed with fresh noise and takes that "
    "share of its steps again. Each variation-N/final.png reproduces (pixgen reproduce)."
)


def vary(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="A PNG written by pixgen.")],
    strength: Annotated[
        float, typer.Option("--strength", help="How much changes: 0 (none) to 1 (a new start).", rich_help_panel=SWEEP)
    ] = 0.5,
    count: Annotated[int, typer.Option("-n", help="Variations to draw.", rich_help_panel=SWEEP)] = 4,
    seed: Annotated[
        int, typer.Option("--vary-seed", help="The first variation's seed (then +1 each).", rich_help_panel=SWEEP)
    ] = 1,
    output_dir: Annotated[
        str | None, typer.Option("-o", "--output-dir", help="Where the variations' folder goes.")
    ] = None,
    offline: OfflineOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Draw N variations of a pixgen image, subtle to strong, with its own settings."""
    from pixgen.apps.vary import vary as run

    with console.running(json_out, offline) as hooks:
        result = run(image, strength, count, seed, output_dir, hooks=hooks)
    if json_out:
        console.echo_json({"folder": str(result.folder), "images": [str(p) for p in result.images]})
    else:
        console.note(f"{len(result.images)} variations in {result.folder}")
