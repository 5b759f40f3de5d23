"""`pixgen models`: list, download, inspect and import models (pixgen.weights does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen import console

app = typer.Typer(help="List, download, inspect and import models.", no_args_is_help=True)


@app.command("list")
def models_list(
    clip: Annotated[
        bool, typer.Option("--clip", help="List open_clip's pretrained CLIP models instead, and which are cached.")
    ] = False,
):
    """Every registered VQGAN (with its other names): kind, size, whether cached, licence."""
    from pixgen.weights import clip_rows, registry, vqgan_rows

    if clip:
        console.table(["CLIP (use as NAME:TAG)", "cached"], clip_rows())
        return
    console.table(["name", "also", "kind", "size", "cached", "licence"], vqgan_rows())
    typer.echo(
        f"CLIP: open_clip NAME:TAG, e.g. {registry()['default_clip']} or ViT-B-16:laion2b_s34b_b88k; "
        "`pixgen models list --clip` lists them all."
    )


@app.command("download")
def models_download(
    names: Annotated[list[str] | None, typer.Argument(help="VQGAN names, or CLIP NAME:TAG.")] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Also fetch the default VQGAN and CLIP (what a plain run needs).")
    ] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Only check the cache.")] = False,
):
    """Download models into the cache (VQGANs are converted to decoder-only safetensors)."""
    from pixgen.weights import fetch_models

    fetch_models(names or [], defaults, offline, on_fetched=lambda name, path: typer.echo(f"{name}: {path}"))


@app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="A VQGAN name.")]):
    """Architecture, scale factor, codebook size and cache paths of a VQGAN."""
    from pixgen.weights import describe_vqgan

    for line in describe_vqgan(name):
        typer.echo(line)


@app.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="The name to register it under.")],
    config: Annotated[Path, typer.Option("--config", help="The taming model YAML.")],
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The taming .ckpt checkpoint.")],
):
    """Register VQGAN files you already have: converted into the cache, no download."""
    from pixgen.weights import import_vqgan

    typer.echo(f"{name}: {import_vqgan(name, config, ckpt)}")
