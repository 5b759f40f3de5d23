"""The `batch` and `restyle` commands: many runs from one command line (registered by
pixgen.cli.app). No torch at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console
from pixgen.cli.options import ConfigOpt, OfflineOpt, PresetOpt, QuietOpt, SetOpt, with_setting_flags
from pixgen.cli.scale import RayCpusOpt, RayOpt, RayWorkersOpt
from pixgen.settings import OUTPUT

BATCH, RESTYLE = "Batch", "Restyle"  # the help panels of these commands' own options


BATCH_EPILOG = (
    "Scale out: --ray runs the jobs on every GPU of a machine or a Ray cluster (pip install 'pixgen[ray]'); "
    "or run one shard per machine/GPU, e.g. a Slurm array with "
    "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT and a shared --output-dir."
)


@with_setting_flags("output_dir")
def batch(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Prompts: .txt (one per line, # comments), .yaml list or .jsonl.")
    ],
    output_dir: Annotated[
        str, typer.Option("-o", "--output-dir", help="Folder for the job folders.", rich_help_panel=OUTPUT)
    ] = "outputs/batch",
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip finished jobs; redo unfinished ones.", rich_help_panel=BATCH)
    ] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="K/N: run jobs K, K+N, K+2N... (0-based).", rich_help_panel=BATCH)
    ] = None,
    candidates: Annotated[
        int, typer.Option("--candidates", help="Images per prompt, ranked by CLIP.", rich_help_panel=BATCH)
    ] = 1,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
    ray_workers: RayWorkersOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    *,
    flags: dict,
):
    """Run a prompt file: one folder per job, resumable, shardable, with index.html at the end."""
    from pixgen.apps.batch import run_batch
    from pixgen.cli.scale import check_ray_options, run_on_ray
    from pixgen.needs import check_run
    from pixgen.settings import load_settings

    check_ray_options(ray, shard, ray_cpus, ray_workers)

    def make_settings(job: dict):  # the batch's flags are the defaults of each job
        job = dict(job)
        settings = load_settings(job.pop("preset", preset), config, dict(flags, **job), set_ or [])
        check_run(settings)
        return settings

    def on_job(r, total):
        where = f" -> {r.image}" if r.image else ""
        msg = f"[{r.job.index + 1}] {r.status}: {r.job.prompt[:60]!r}{where}"
        console.note(msg + (f" ({r.error})" if r.error else ""))

    if ray is not None:
        return run_on_ray(file, output_dir, make_settings, resume, candidates, (ray, ray_cpus, ray_workers), offline)
    with console.running(False, offline) as hooks:
        results = run_batch(file, output_dir, make_settings, resume, shard, candidates, on_job, hooks)
    failed = [r for r in results if r.status == "failed"]
    console.note(
        f"{len(results) - len(failed)} of {len(results)} jobs finished; gallery: {Path(output_dir) / 'index.html'}"
    )
    if failed:
        raise typer.Exit(1)


RESTYLE_EPILOG = (
    'Example: pixgen restyle clip.mp4 "an oil painting" -i 20 --blend 0.5 --preset shapes. '
    "Re-run with --resume to go on after an interruption: frames already done are skipped."
)


@with_setting_flags(
    only=("iterations", "size", "seed"),
    helps={
        "iterations": "Steps per frame.",
        "size": "WIDTHxHEIGHT of the output frames.",
        "seed": "Random seed (the same for every frame).",
    },
)
def restyle(
    input_: Annotated[Path, typer.Argument(metavar="INPUT", help="A video file or a folder of image frames.")],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The style to steer every frame toward.")],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output-dir",
            help="Output folder.",
            show_default="outputs/restyle-INPUT-PROMPT",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    blend: Annotated[
        float,
        typer.Option(
            "--blend", help="Share of the previous result in each frame's start (0: none; <1).", rich_help_panel=RESTYLE
        ),
    ] = 0.5,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            help="Frame rate of the MP4 for a folder input (a video keeps its own).",
            rich_help_panel=RESTYLE,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an earlier restyle in the same folder.", rich_help_panel=RESTYLE)
    ] = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
    *,
    flags: dict,
):
    """Restyle a video or a folder of frames toward a prompt, frame by frame, without flicker."""
    from pixgen.apps.restyle import default_output_dir
    from pixgen.apps.restyle import restyle as run
    from pixgen.needs import check_run
    from pixgen.settings import load_settings

    settings = load_settings(preset, config, dict(flags, prompt=prompt), set_ or [])
    check_run(settings)
    out = output_dir or default_output_dir(input_, prompt, settings.output_dir)

    def on_frame(i, name, skipped):
        if not quiet:
            console.note(f"[{i + 1}] {name}" + (" (done before)" if skipped else ""))

    with console.running(quiet, offline) as hooks:
        result = run(input_, settings, out, blend, fps, resume, None, on_frame, hooks)
    where = f"; video: {result.video}" if result.video else ""
    console.note(f"restyled {result.rendered} of {len(result.frames)} frames into {result.out_dir}{where}")
