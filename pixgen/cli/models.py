"""`pixgen models`: list, download, inspect and import models (pixgen.models.cache does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console
from pixgen.cli.options import JsonOpt

app = typer.Typer(help="List, download, inspect and import models.", no_args_is_help=True)


VQGAN_COLUMNS = ["name", "also", "kind", "size", "cached", "licence"]
NARROW_DROPS = (5, 3, 2, 4, 1)  # the columns a narrow terminal loses first: licence, size, kind...


@app.command("list")
def models_list(
    clip: Annotated[
        bool, typer.Option("--clip", help="List open_clip's pretrained CLIP models instead, and which are cached.")
    ] = False,
    json_out: JsonOpt = False,
):
    """Every registered VQGAN (with its other names) and prior: kind, size, whether cached, licence."""
    from pixgen.models.cache import clip_rows, registry, vqgan_rows
    from pixgen.prior.registry import prior_rows

    if clip:
        rows = clip_rows()
        if json_out:
            console.echo_json([{"name": name, "cached": cached} for name, cached in rows])
        else:
            console.table(["CLIP (use as NAME:TAG)", "cached"], rows, optional=(1,))
        return
    rows = vqgan_rows() + prior_rows()
    if json_out:
        records = [dict(zip(VQGAN_COLUMNS, row, strict=True)) for row in rows]
        console.echo_json([dict(r, also=[a for a in r["also"].split(", ") if a]) for r in records])
        return
    console.table(VQGAN_COLUMNS, rows, optional=NARROW_DROPS)
    console.note(
        f"CLIP: open_clip NAME:TAG, e.g. {registry()['default_clip']} or ViT-B-16:laion2b_s34b_b88k; "
        "`pixgen models list --clip` lists them all."
    )


@app.command("download")
def models_download(
    names: Annotated[list[str] | None, typer.Argument(help="VQGAN or prior names, or CLIP NAME:TAG.")] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Also fetch the default VQGAN and CLIP (what a plain run needs).")
    ] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Only check the cache.")] = False,
):
    """Download models into the cache (VQGANs are converted to decoder-only safetensors, priors to
    transformer-only fp16 safetensors)."""
    from pixgen.needs import fetch_models

    fetch_models(names or [], defaults, offline, on_fetched=lambda name, path: typer.echo(f"{name}: {path}"))


@app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="A VQGAN or prior name.")]):
    """Architecture, scale factor, codebook size and cache paths of a VQGAN (or a prior)."""
    from pixgen.models.cache import describe_vqgan
    from pixgen.prior.registry import describe_prior, prior_entries

    for line in describe_prior(name) if name in prior_entries() else describe_vqgan(name):
        typer.echo(line)


@app.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="The name to register it under.")],
    config: Annotated[Path, typer.Option("--config", help="The taming model YAML.")],
    ckpt: Annotated[Path, typer.Option("--ckpt", help="The taming .ckpt checkpoint.")],
):
    """Register VQGAN files you already have: converted into the cache, no download."""
    from pixgen.models.cache import import_vqgan

    typer.echo(f"{name}: {import_vqgan(name, config, ckpt)}")
