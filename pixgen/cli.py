"""The command line: parses arguments, builds Settings, calls the library. No torch at import."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixgen._version import __version__
from pixgen.errors import PixgenError

app = typer.Typer(
    name="pixgen",
    help="Turn a text prompt into an image with VQGAN+CLIP.\n\n"
    "Examples:\n\n"
    '  pixgen "a watercolor portrait of a teacher"\n\n'
    '  pixgen generate "a red house | a lake:0.5" -s 256x256 -i 300 --seed 7 -o outputs/\n\n'
    '  pixgen "a red circle on a blue background" --preset shapes   (offline demo models)',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
COMMANDS = {"generate", "presets", "models"}


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
    epilog='Prompt syntax: "text:weight:stop | other text". A negative weight pushes away; '
    'stop ends a prompt\'s pull once its distance falls below it. Colons inside text ("4:3", '
    "URLs) stay text.\n\nLayering: defaults, then --preset, then --config, then flags, then --set.",
)
def generate(
    prompt: Annotated[str, typer.Argument(help='What to draw, e.g. "a red house | a lake:0.5".')],
    size: Annotated[str | None, typer.Option("-s", "--size", help="WIDTHxHEIGHT in pixels, e.g. 256x256.")] = None,
    iterations: Annotated[int | None, typer.Option("-i", "--iterations", help="Optimisation steps.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate on the latent.")] = None,
    cutn: Annotated[int | None, typer.Option("--cutn", help="Cutouts scored by CLIP per step.")] = None,
    cut_pow: Annotated[
        float | None, typer.Option("--cut-pow", help="Cutout size exponent; >1 favours small cutouts.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (random when not given; recorded).")] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", help="Save a progress frame every N steps (0: never).")
    ] = None,
    gif: Annotated[bool | None, typer.Option("--gif/--no-gif", help="Write progress.gif from the frames.")] = None,
    output_dir: Annotated[
        str | None, typer.Option("-o", "--output-dir", help="Folder that receives the run folder.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    vqgan_config: Annotated[str | None, typer.Option("--vqgan-config", help="Local taming model YAML.")] = None,
    vqgan_ckpt: Annotated[str | None, typer.Option("--vqgan-ckpt", help="Local taming .ckpt checkpoint.")] = None,
    clip: Annotated[str | None, typer.Option("--clip", help="CLIP as NAME:TAG (ViT-B-32:openai) or NAME:PATH.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="A preset from configs/presets (see `pixgen presets`).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A YAML file of settings.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value for any setting; repeatable.")] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never touch the network; fail at once if a model is missing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (run_dir, image, seed, seconds) to stdout.")
    ] = False,
):
    """Generate an image from a prompt (the default command)."""
    from pixgen.settings import load_settings, parse_size

    _set_offline(offline)
    overrides = dict(
        prompt=prompt,
        size=parse_size(size) if size is not None else None,
        iterations=iterations,
        lr=lr,
        cutn=cutn,
        cut_pow=cut_pow,
        seed=seed,
        save_every=save_every,
        gif=gif,
        output_dir=output_dir,
        device=device,
        vqgan_config=vqgan_config,
        vqgan_ckpt=vqgan_ckpt,
        clip=clip,
    )
    settings = load_settings(preset, config, overrides, set_ or [])
    result = _run_with_progress(settings, quiet=json_out)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "run_dir": str(result.run_dir),
                    "image": str(result.image),
                    "seed": result.seed,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
    else:
        typer.echo(f"saved {result.image} (seed {result.seed}, {result.seconds:.1f} s)", err=True)


def _run_with_progress(settings, quiet: bool):
    """Run generate() with a rich progress bar on stderr, shown from the first step on."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from pixgen.api import generate as run

    columns = [
        TextColumn("[bold]pixgen"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} it/s"),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=Console(stderr=True), disable=quiet)
    task = None

    def on_step(step, total):
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("generate", total=total, loss=step.loss, rate=0.0)
        progress.update(task, completed=step.i, loss=step.loss, rate=1.0 / step.seconds if step.seconds > 0 else 0.0)

    try:
        return run(settings, on_step=on_step)
    finally:
        progress.stop()


@app.command()
def presets():
    """List the presets, with a one-line description each."""
    from pixgen.settings import list_presets

    for name, desc in list_presets().items():
        typer.echo(f"{name:12s} {desc}")


def _set_offline(offline: bool) -> None:
    if offline:
        os.environ["PIXGEN_OFFLINE"] = "1"  # read by pixgen.weights; the process edge decides


models_app = typer.Typer(help="List, download, inspect and import models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list():
    """Every registered VQGAN: kind, size, whether cached, licence."""
    from rich.console import Console
    from rich.table import Table

    from pixgen.weights import registry, vqgan_dir

    reg = registry()
    table = Table("name", "kind", "size", "cached", "licence")
    for name, e in reg["vqgan"].items():
        cached = (vqgan_dir(name) / "decoder.safetensors").is_file()
        table.add_row(
            name,
            e["target"],
            f"~{e['approx_size_mb']} MB",
            "yes" if cached else "no",
            e["license"].split(" (")[0],
        )
    table.add_row("shapes", "VQModel", "~3 MB", "ships", "MIT")
    Console().print(table)
    typer.echo(
        f"CLIP: open_clip NAME:TAG, e.g. {reg['default_clip']} or ViT-B-16:laion2b_s34b_b88k; "
        "`python -c 'import open_clip; print(open_clip.list_pretrained())'` lists all."
    )


@models_app.command("download")
def models_download(
    names: Annotated[list[str], typer.Argument(help="VQGAN names, or CLIP NAME:TAG.")],
    offline: Annotated[bool, typer.Option("--offline", help="Only check the cache.")] = False,
):
    """Download models into the cache (VQGANs are converted to decoder-only safetensors)."""
    from pixgen.weights import clip_weights_file, ensure_vqgan

    _set_offline(offline)
    for name in names:
        if ":" in name:
            model, tag = name.split(":", 1)
            path = clip_weights_file(model, tag)
        else:
            path = ensure_vqgan(name)
        typer.echo(f"{name}: {path}")


@models_app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="A VQGAN name.")]):
    """Architecture, scale factor, codebook size and cache paths of a VQGAN."""
    from pixgen.vqgan import VQGANArch
    from pixgen.weights import registry, vqgan_dir

    folder = vqgan_dir(name)
    entry = registry()["vqgan"].get(name, {})
    if not entry and not folder.is_dir():
        raise PixgenError(f"unknown VQGAN {name!r}; see `pixgen models list`")
    typer.echo(f"name: {name}")
    for key in ("description", "target", "license", "source"):
        if key in entry:
            typer.echo(f"{key}: {entry[key]}")
    arch_file = folder / "arch.json"
    if arch_file.is_file():
        arch = VQGANArch.from_json(arch_file.read_text())
        dd = arch.ddconfig
        typer.echo(f"quantiser: {arch.kind}  codebook: {arch.n_embed} x {arch.embed_dim}  factor: {arch.factor}")
        typer.echo(
            f"decoder: ch {dd['ch']}, ch_mult {dd['ch_mult']}, res blocks {dd['num_res_blocks']}, "
            f"attention at {dd['attn_resolutions']}, z_channels {dd['z_channels']}"
        )
    else:
        typer.echo("architecture: unknown until downloaded or imported")
    for f in ("decoder.safetensors", "encoder.safetensors", "model.yaml", "last.ckpt"):
        path = folder / f
        state = f"{path.stat().st_size / 2**20:.1f} MB" if path.is_file() else "absent"
        typer.echo(f"{f}: {path} ({state})")


@models_app.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="The name to register it under.")],
    config: Annotated[Path, typer.Option("--config", help="The taming model YAML.")],
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The taming .ckpt checkpoint.")],
):
    """Register VQGAN files you already have: converted into the cache, no download."""
    from pixgen.weights import import_vqgan

    typer.echo(f"{name}: {import_vqgan(name, config, ckpt)}")


def _route(argv: list[str]) -> list[str]:
    """`pixgen PROMPT ...` is `pixgen generate PROMPT ...`."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("--help", "-h", "--version"):
        return argv
    return ["generate", *argv]


class _OneLine(logging.Handler):
    def emit(self, record):
        print(f"pixgen: warning: {record.getMessage()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    import click

    argv = _route(list(sys.argv[1:] if argv is None else argv))
    logger = logging.getLogger("pixgen")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine())
        logger.propagate = False
    try:
        app(args=argv, prog_name="pixgen", standalone_mode=False)
    except PixgenError as e:
        print(f"pixgen: error: {e}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show(file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort) as e:
        result = e.args[0] if e.args else None
        where = f"; partial result in {result.run_dir}" if getattr(result, "run_dir", None) else ""
        print(f"pixgen: interrupted{where}", file=sys.stderr)
        return 130
    return 0
