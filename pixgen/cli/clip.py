"""`pixgen score`, `classify` and `search`: CLIP as a tool (pixgen.apps.clip_tools does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console
from pixgen.cli.options import ClipOpt, DeviceOpt, JsonOpt
from pixgen.errors import PixgenError
from pixgen.settings import DEFAULT_CLIP

ImagesArg = Annotated[list[Path], typer.Argument(help="Image files.")]


def score(
    images: ImagesArg,
    prompt: Annotated[
        list[str], typer.Option("--prompt", "-p", metavar="TEXT", help="Text to compare with; repeatable.")
    ],
    clip: ClipOpt = DEFAULT_CLIP,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
):
    """CLIP similarity of each image to each prompt."""
    from pixgen.apps.clip_tools import load_scorer_on
    from pixgen.apps.clip_tools import score as run

    rows = run(load_scorer_on(clip, device), images, prompt).tolist()
    if json_out:
        console.echo_json(
            [
                {"image": str(im), "scores": dict(zip(prompt, row, strict=True))}
                for im, row in zip(images, rows, strict=True)
            ]
        )
    else:
        console.table(["image", *prompt], [[str(im), *row] for im, row in zip(images, rows, strict=True)])


def classify(
    images: ImagesArg,
    labels: Annotated[str | None, typer.Option("--labels", help='Comma-separated labels, e.g. "cat,dog".')] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="One label per line.")] = None,
    template: Annotated[str, typer.Option("--template", help="Prompt template; {} is the label.")] = "a photo of a {}",
    clip: ClipOpt = DEFAULT_CLIP,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
):
    """Zero-shot classification: the probability of each label for each image."""
    from pixgen.apps.clip_tools import classify as run
    from pixgen.apps.clip_tools import load_scorer_on, read_labels

    names = read_labels(labels, labels_file)
    rows = run(load_scorer_on(clip, device), images, names, template).tolist()
    best = [names[row.index(max(row))] for row in rows]
    if json_out:
        console.echo_json(
            [
                {"image": str(im), "label": label, "probabilities": dict(zip(names, row, strict=True))}
                for im, label, row in zip(images, best, rows, strict=True)
            ]
        )
    else:
        console.table(
            ["image", "best", *names],
            [[str(im), b, *row] for im, b, row in zip(images, best, rows, strict=True)],
            optional=tuple(range(len(names) + 1, 1, -1)),  # a narrow terminal keeps the image and its label
        )


def search(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    text: Annotated[str, typer.Argument(help="What to look for.")],
    top: Annotated[int, typer.Option("--top", help="How many results.")] = 10,
    clip: ClipOpt = DEFAULT_CLIP,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Keep the embeddings index in this file (default: inside the folder)."),
    ] = None,
):
    """Rank a folder's images by similarity to text (embeddings cached in the folder, or --index)."""
    from pixgen.apps.clip_tools import load_scorer_on
    from pixgen.apps.clip_tools import search as run

    if top < 1:
        raise PixgenError("--top must be at least 1")
    scorer = load_scorer_on(clip, device)
    with console.indexing(quiet=json_out) as progress:
        hits = run(scorer, folder, text, top, progress=progress, index_path=index)
    if json_out:
        console.echo_json([{"image": str(h.path), "score": h.score} for h in hits])
    else:
        console.table(["rank", "score", "image"], [[i + 1, h.score, str(h.path)] for i, h in enumerate(hits)])
