"""The command line: parses arguments, builds Settings, calls the library and reports (through
pixgen.cli.console). The other commands live beside it in pixgen.cli. No torch at import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pixgen._version import __version__
from pixgen.cli import clip as clip_commands
from pixgen.cli import console, runs, sweeps
from pixgen.cli import models as models_commands
from pixgen.cli import serve as serve_commands
from pixgen.cli.options import (
    CandidatesOpt,
    ConfigOpt,
    ForceOpt,
    GenerateJsonOpt,
    JsonOpt,
    OfflineOpt,
    PanelCommand,
    PresetOpt,
    QuietOpt,
    RunJsonOpt,
    SeedsOpt,
    SetOpt,
    with_setting_flags,
)
from pixgen.errors import Interrupted, PixgenError
from pixgen.settings import OUTPUT

app = typer.Typer(
    name="pixgen",
    help="Turn a text prompt into an image with VQGAN+CLIP.\n\n"
    "Examples:\n\n"
    '  pixgen "a watercolor portrait of a teacher"\n\n'
    '  pixgen generate "a red house | a lake:0.5" -s 256x256 -i 300 --seed 7 -o outputs/\n\n'
    '  pixgen "a red circle on a blue background" --preset shapes   (offline demo models)',
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
COMPLETION_OPTIONS = ("--install-completion", "--show-completion")
COMMANDS = {
    "generate",
    "presets",
    "models",
    "batch",
    "score",
    "classify",
    "search",
    "reproduce",
    "resume",
    "restyle",
    "serve",
    "sample",
    "grid",
    "vary",
}


def _version(value: bool):
    if value:
        typer.echo(f"pixgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    """Turn a text prompt into an image with VQGAN+CLIP."""


@app.command(
    cls=PanelCommand,
    epilog='Prompt syntax: "text:weight:stop | other text". A negative weight pushes away; '
    'stop ends a prompt\'s pull once its distance falls below it. Colons inside text ("4:3", '
    "URLs) stay text.\n\nLayering: defaults, then --preset, then --config, then flags, then --set.",
)
@with_setting_flags()
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help='What to draw, e.g. "a red house | a lake:0.5".')],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    force: ForceOpt = False,
    candidates: CandidatesOpt = 1,
    seeds: SeedsOpt = None,
    json_out: GenerateJsonOpt = False,
    quiet: QuietOpt = False,
    *,
    flags: dict,
):
    """Generate an image from a prompt (the default command)."""
    from pixgen.needs import check_run
    from pixgen.settings import load_settings

    settings = load_settings(preset, config, dict(flags, prompt=prompt), set_ or [])
    check_run(settings)
    if seeds or candidates != 1:
        _generate_candidates(settings, candidates, seeds, json_out or quiet, offline, json_out)
        return
    result = _run_with_progress(settings, quiet=json_out or quiet, force=force, offline=offline)
    console.report(result, json_out)


def _generate_candidates(settings, candidates: int, seeds: str | None, quiet: bool, offline: bool, json_out: bool):
    from pixgen.apps.batch import generate_candidates, parse_seeds

    with console.running(quiet, offline) as hooks:
        seed_list = parse_seeds(seeds) if seeds else None
        job_dir, info = generate_candidates(settings, candidates, seed_list, hooks)
    console.report_candidates(job_dir, info, json_out)


def _run_with_progress(settings, quiet: bool, resume_dir: Path | None = None, force: bool = False, offline=False):
    """Run generate() (or resume()) with a progress bar, a status line and graceful Ctrl-C."""
    from pixgen import api

    with console.running(quiet, offline) as hooks:
        if resume_dir is not None:
            return api.resume(resume_dir, hooks=hooks)
        return api.generate(settings, force=force, hooks=hooks)


@app.command(
    cls=PanelCommand,
    epilog="Each sample-N.png carries the settings that make it again: pixgen reproduce sample-2.png. "
    "To polish the best sample with CLIP steps instead, run pixgen PROMPT --init prior.",
)
@with_setting_flags()
def sample(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.")],
    keep: Annotated[
        int, typer.Option("--keep", help="Samples kept, the best by CLIP first.", rich_help_panel=OUTPUT)
    ] = 4,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    json_out: GenerateJsonOpt = False,
    quiet: QuietOpt = False,
    *,
    flags: dict,
):
    """Draw --prior-samples images from the learned prior (DALL-E style), rerank them by CLIP and
    keep the best --keep; no gradient steps."""
    from pixgen.apps.sample import sample_images
    from pixgen.needs import check_run
    from pixgen.settings import load_settings

    settings = load_settings(preset, config, dict(flags, prompt=prompt), set_ or [])
    check_run(settings)
    with console.running(json_out or quiet, offline) as hooks:
        result = sample_images(settings, keep, hooks=hooks)
    console.report_samples(result, json_out)


@app.command()
def presets(json_out: JsonOpt = False):
    """List the presets, with a one-line description each."""
    from pixgen.settings import list_presets

    found = list_presets()
    if json_out:
        console.echo_json([{"name": name, "description": desc} for name, desc in found.items()])
    else:
        console.table(["preset", "description"], [list(item) for item in found.items()])


app.add_typer(models_commands.app, name="models")
for command in (clip_commands.score, clip_commands.classify, clip_commands.search):
    app.command()(command)
app.command()(serve_commands.serve)


@app.command()
def reproduce(
    image: Annotated[Path, typer.Argument(help="A final.png written by pixgen.")],
    output_dir: Annotated[str | None, typer.Option("-o", "--output-dir", help="Where the new run goes.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Override the recorded device.")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Override the recorded CPU thread count.", min=1)
    ] = None,
    json_out: RunJsonOpt = False,
):
    """Run again with the settings stored in a pixgen PNG: the same device, thread count, torch
    version and CPU give the same pixels (a one-line warning says when they cannot match)."""
    from pixgen.api import settings_from_png

    settings = settings_from_png(image, output_dir=output_dir, device=device, threads=threads)
    result = _run_with_progress(settings, quiet=json_out)
    console.report(result, json_out)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder left by an interrupted run.")],
    json_out: RunJsonOpt = False,
):
    """Continue an interrupted run to its planned number of steps, in its own folder."""
    result = _run_with_progress(None, quiet=json_out, resume_dir=run_dir)
    console.report(result, json_out)


app.command(cls=PanelCommand, epilog=runs.BATCH_EPILOG)(runs.batch)
app.command(cls=PanelCommand, epilog=runs.RESTYLE_EPILOG)(runs.restyle)
app.command(cls=PanelCommand, epilog=sweeps.GRID_EPILOG)(sweeps.grid)
app.command(cls=PanelCommand, epilog=sweeps.VARY_EPILOG)(sweeps.vary)


def _route(argv: list[str]) -> list[str]:
    """`pixgen PROMPT ...` is `pixgen generate PROMPT ...`."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("--help", "-h", "--version", *COMPLETION_OPTIONS):
        return argv
    return ["generate", *argv]


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 some batch jobs failed, 2 bad input, 130 interrupted)."""
    argv = _route(list(sys.argv[1:] if argv is None else argv))
    if argv and argv[0] in ("batch", "grid"):
        from pixgen.cli.scale import optional_address

        argv = optional_address(argv)
    console.show_warnings()
    try:
        # standalone mode: usage errors print their usage and exit 2, typer.Exit gives its code
        app(args=argv, prog_name="pixgen", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except PixgenError as e:
        print(f"pixgen: error: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        return console.interrupted(e)
    except KeyboardInterrupt as e:  # a second Ctrl-C (Aborted), or one before the handler was installed
        return console.interrupted(e)
    if code == 130:  # a second Ctrl-C: typer turned KeyboardInterrupt into exit code 130
        return console.interrupted(None)
    return code
