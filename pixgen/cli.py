"""The command line: parses arguments, builds Settings, calls the library. No torch at import."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixgen._version import __version__
from pixgen.errors import Interrupted, PixgenError
from pixgen.settings import DEFAULT_CLIP

app = typer.Typer(
    name="pixgen",
    help="Turn a text prompt into an image with VQGAN+CLIP.\n\n"
    "Examples:\n\n"
    '  pixgen "a watercolor portrait of a teacher"\n\n'
    '  pixgen generate "a red house | a lake:0.5" -s 256x256 -i 300 --seed 7 -o outputs/\n\n'
    '  pixgen "a red circle on a blue background" --preset shapes   (offline demo models)',
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="A preset from configs/presets (see `pixgen presets`).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A YAML file of settings.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="key=value for any setting; repeatable.")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never touch the network; fail at once if a model is missing.")
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar or status line.")]
COMPLETION_OPTIONS = ("--install-completion", "--show-completion")
COMMANDS = {"generate", "presets", "models", "batch", "score", "classify", "search", "reproduce", "resume", "restyle"}


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


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _flag_param(key: str, f) -> inspect.Parameter:
    """The Typer option of one setting, from its declaration in Settings."""
    from pixgen.settings import flag_of

    meta, flag = f.metadata, flag_of(key)
    text = meta["text"]
    kind = list[str] if text == "one" else str if text else _TYPES[str(f.type).removesuffix(" | None")]
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [d for d in (meta["short"], flag) if d]
    option = typer.Option(None, *decls, help=meta["help"], metavar=meta["metavar"], show_default=False)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)


def with_setting_flags(*exclude: str):
    """Give a command one option per setting (all but `exclude`); the command receives the ones
    given as `flags`, a dict of setting overrides."""

    def wrap(fn):
        from pixgen.settings import FIELDS

        params = inspect.signature(fn, eval_str=True).parameters.values()
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p.name != "flags"]
        keys = [k for k, f in FIELDS.items() if f.metadata["cli"] and k not in exclude]

        @functools.wraps(fn)
        def command(**kwargs):
            given = {k: kwargs.pop(k) for k in keys}
            return fn(**kwargs, flags={k: v for k, v in given.items() if v not in (None, [])})

        flags = [_flag_param(k, FIELDS[k]) for k in keys]  # after the command's argument
        command.__signature__ = inspect.Signature(own[:1] + flags + own[1:])
        return command

    return wrap


@app.command(
    epilog='Prompt syntax: "text:weight:stop | other text". A negative weight pushes away; '
    'stop ends a prompt\'s pull once its distance falls below it. Colons inside text ("4:3", '
    "URLs) stay text.\n\nLayering: defaults, then --preset, then --config, then flags, then --set.",
)
@with_setting_flags()
def generate(
    prompt: Annotated[str, typer.Argument(help='What to draw, e.g. "a red house | a lake:0.5".')],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Run even if the memory estimate says it won't fit.")] = False,
    candidates: Annotated[
        int, typer.Option("--candidates", help="Generate N images (seeds seed..seed+N-1), rank them by CLIP score.")
    ] = 1,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Candidate seeds, e.g. 1,2,3 (implies --candidates).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (run_dir, image, seed, seconds) to stdout.")
    ] = False,
    quiet: QuietOpt = False,
    *,
    flags: dict,
):
    """Generate an image from a prompt (the default command)."""
    from pixgen.settings import load_settings

    settings = load_settings(preset, config, dict(flags, prompt=prompt), set_ or [])
    if seeds or candidates != 1:
        _generate_candidates(settings, candidates, seeds, json_out or quiet, offline, json_out)
        return
    result = _run_with_progress(settings, quiet=json_out or quiet, force=force, offline=offline)
    _report(result, json_out)


def _report(result, json_out: bool) -> None:
    """One JSON object on stdout for scripts, or one line on stderr for people."""
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


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PixgenError(f"--seeds expects integers separated by commas, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise PixgenError(f"--seeds expects distinct non-negative integers, got {text!r}")
    return seeds


def _generate_candidates(settings, candidates: int, seeds: str | None, quiet: bool, offline: bool, json_out: bool):
    from pixgen.batch import generate_candidates

    with _progress(quiet=quiet) as on_step, _StopOnSignal() as stop:
        seed_list = _parse_seeds(seeds) if seeds else None
        job_dir, info = generate_candidates(settings, candidates, seed_list, on_step, stop, offline)
    if json_out:
        best = {"run_dir": str(job_dir), "image": str(info["image"]), "seed": info["seed"]}
        best.update(seconds=round(info["seconds"], 3), ranking=info["candidates"])
        typer.echo(json.dumps(best, default=str))
        return
    for c in info["candidates"]:
        typer.echo(f"{c['rank']}. seed {c['seed']}  CLIP {c['clip_score']:.4f}  {c['image']}", err=True)
    typer.echo(f"best: {info['image']} (seed {info['seed']})", err=True)


class _progress:
    """A context giving an on_step callback that drives a rich bar, started at the first step."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [
            TextColumn("[bold]pixgen"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} it/s"),
            TimeRemainingColumn(),
        ]
        self.progress = Progress(*columns, console=Console(stderr=True), disable=quiet)
        self.task = None
        self.quiet = quiet
        self.spinner = None  # the status line shown before the first step, on a terminal only

    def status(self, text: str) -> None:
        """Say what the run is doing before its first step (loading models, encoding prompts)."""
        console = self.progress.console
        if self.quiet or self.task is not None or not console.is_terminal:
            return
        if self.spinner is None:
            self.spinner = console.status(f"pixgen: {text}")
            self.spinner.start()
        else:
            self.spinner.update(f"pixgen: {text}")

    def _stop_status(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def __call__(self, step, total):
        self._stop_status()
        if self.task is None or step.i == 1:
            if self.task is None:
                self.progress.start()
            else:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("generate", total=total, loss=step.loss, rate=0.0)
        self.progress.update(
            self.task, completed=step.i, loss=step.loss, rate=1.0 / step.seconds if step.seconds > 0 else 0.0
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_status()
        if self.task is not None:  # never started (an error before the first step): print nothing
            self.progress.stop()


class _StopOnSignal:
    """SIGINT/SIGTERM ask the run to stop after the current step; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\npixgen: stopping after this step (again to abort)...", file=sys.stderr)

    def __enter__(self):
        import signal

        self.saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        import signal

        for s, h in self.saved.items():
            signal.signal(s, h)


def _run_with_progress(settings, quiet: bool, resume_dir: Path | None = None, force: bool = False, offline=False):
    """Run generate() (or resume()) with a rich progress bar and graceful Ctrl-C."""
    from pixgen import api

    with _progress(quiet) as on_step, _StopOnSignal() as stop:
        if resume_dir is not None:
            return api.resume(resume_dir, on_step=on_step, should_stop=stop, on_status=on_step.status)
        return api.generate(
            settings, on_step=on_step, should_stop=stop, force=force, offline=offline, on_status=on_step.status
        )


@app.command()
def presets():
    """List the presets, with a one-line description each."""
    from pixgen.settings import list_presets

    for name, desc in list_presets().items():
        typer.echo(f"{name:12s} {desc}")


models_app = typer.Typer(help="List, download, inspect and import models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    clip: Annotated[
        bool, typer.Option("--clip", help="List open_clip's pretrained CLIP models instead, and which are cached.")
    ] = False,
):
    """Every registered VQGAN (with its other names): kind, size, whether cached, licence."""
    from rich.console import Console
    from rich.table import Table

    from pixgen.weights import clip_catalogue, registry, vqgan_dir

    reg = registry()
    if clip:
        table = Table("CLIP (use as NAME:TAG)", "cached")
        for arch, tag, cached in clip_catalogue():
            table.add_row(f"{arch}:{tag}", "yes" if cached else "no")
        table.add_row("shapes", "ships")
        table.add_row("shapes-b", "ships")
        table.add_row("tiny", "built in (random)")
        Console().print(table)
        return
    aliases: dict[str, list[str]] = {}
    for alias, target in (reg.get("aliases") or {}).items():
        aliases.setdefault(target, []).append(alias)
    table = Table()
    for header in ("name", "also", "kind", "size", "cached", "licence"):
        table.add_column(header, overflow="fold")
    for name, e in reg["vqgan"].items():
        cached = (vqgan_dir(name) / "decoder.safetensors").is_file()
        table.add_row(
            name,
            ", ".join(aliases.get(name, [])),
            e["target"],
            f"~{e['approx_size_mb']} MB",
            "yes" if cached else "no",
            e["license"].split(" (")[0],
        )
    table.add_row("shapes", "", "VQModel", "~3 MB", "ships", "MIT")
    table.add_row("tiny", "", "VQModel", "random", "built in", "MIT")
    Console().print(table)
    typer.echo(
        f"CLIP: open_clip NAME:TAG, e.g. {reg['default_clip']} or ViT-B-16:laion2b_s34b_b88k; "
        "`pixgen models list --clip` lists them all."
    )


@models_app.command("download")
def models_download(
    names: Annotated[list[str] | None, typer.Argument(help="VQGAN names, or CLIP NAME:TAG.")] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Also fetch the default VQGAN and CLIP (what a plain run needs).")
    ] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Only check the cache.")] = False,
):
    """Download models into the cache (VQGANs are converted to decoder-only safetensors)."""
    from pixgen.weights import clip_weights_file, ensure_vqgan, registry

    names = list(names or [])
    if defaults:
        reg = registry()
        names += [n for n in (reg["default_vqgan"], reg["default_clip"]) if n not in names]
    if not names:
        raise PixgenError("name the models to download, or give --defaults")
    failed = []
    for name in names:
        try:
            if ":" in name:
                model, tag = name.split(":", 1)
                path = clip_weights_file(model, tag, offline)
            else:
                path = ensure_vqgan(name, offline)
        except PixgenError as e:
            failed.append(str(e))
            continue
        typer.echo(f"{name}: {path}")
    if failed:
        raise PixgenError(f"{len(failed)} of {len(names)} model(s) could not be fetched: " + " | ".join(failed))


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


ClipOpt = Annotated[str, typer.Option("--clip", help="CLIP as NAME:TAG, NAME:PATH, or shapes (offline).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _scorer(clip: str, device: str):
    from pixgen.device import resolve_device
    from pixgen.models import load_scorer

    return load_scorer(clip).to(resolve_device(device)).eval().requires_grad_(False)


def _table(headers: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for header in headers:
        table.add_column(header, overflow="fold")  # wrap long paths in narrow terminals, never cut them
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[
        list[str], typer.Option("--prompt", "-p", metavar="TEXT", help="Text to compare with; repeatable.")
    ],
    clip: ClipOpt = DEFAULT_CLIP,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
):
    """CLIP similarity of each image to each prompt."""
    from pixgen.clip_tools import score as run

    sims = run(_scorer(clip, device), images, prompt)
    if json_out:
        typer.echo(
            json.dumps(
                [
                    {"image": str(im), "scores": dict(zip(prompt, row.tolist(), strict=True))}
                    for im, row in zip(images, sims, strict=True)
                ]
            )
        )
    else:
        _table(["image", *prompt], [[str(im), *row.tolist()] for im, row in zip(images, sims, strict=True)])


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    labels: Annotated[str | None, typer.Option("--labels", help='Comma-separated labels, e.g. "cat,dog".')] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="One label per line.")] = None,
    template: Annotated[str, typer.Option("--template", help="Prompt template; {} is the label.")] = "a photo of a {}",
    clip: ClipOpt = DEFAULT_CLIP,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
):
    """Zero-shot classification: the probability of each label for each image."""
    from pixgen.clip_tools import classify as run

    if labels_file is not None:
        try:
            names = [x.strip() for x in labels_file.read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise PixgenError(f"cannot read labels file {labels_file}: {e}") from None
    elif labels:
        names = [x.strip() for x in labels.split(",") if x.strip()]
    else:
        raise PixgenError('give --labels "a,b,c" or --labels-file FILE')
    probs = run(_scorer(clip, device), images, names, template)
    if json_out:
        typer.echo(
            json.dumps(
                [
                    {
                        "image": str(im),
                        "label": names[int(row.argmax())],
                        "probabilities": dict(zip(names, row.tolist(), strict=True)),
                    }
                    for im, row in zip(images, probs, strict=True)
                ]
            )
        )
    else:
        _table(
            ["image", "best", *names],
            [[str(im), names[int(row.argmax())], *row.tolist()] for im, row in zip(images, probs, strict=True)],
        )


@app.command()
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
    from rich.console import Console
    from rich.progress import Progress

    from pixgen.clip_tools import search as run

    if top < 1:
        raise PixgenError("--top must be at least 1")
    scorer = _scorer(clip, device)
    with Progress(console=Console(stderr=True), transient=True, disable=json_out) as bar:
        task = bar.add_task("indexing", total=None)
        hits = run(
            scorer, folder, text, top, progress=lambda i, n: bar.update(task, completed=i, total=n), index_path=index
        )
    if json_out:
        typer.echo(json.dumps([{"image": str(h.path), "score": h.score} for h in hits]))
    else:
        _table(["rank", "score", "image"], [[i + 1, h.score, str(h.path)] for i, h in enumerate(hits)])


@app.command()
def reproduce(
    image: Annotated[Path, typer.Argument(help="A final.png written by pixgen.")],
    output_dir: Annotated[str | None, typer.Option("-o", "--output-dir", help="Where the new run goes.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Override the device.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Run again with the settings stored in a pixgen PNG (same device and precision: same pixels)."""
    from pixgen.api import settings_from_png

    settings = settings_from_png(image, output_dir=output_dir, device=device)
    result = _run_with_progress(settings, quiet=json_out)
    _report(result, json_out)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run folder left by an interrupted run.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Continue an interrupted run to its planned number of steps, in its own folder."""
    result = _run_with_progress(None, quiet=json_out, resume_dir=run_dir)
    _report(result, json_out)


@app.command(
    epilog="Scale out: run one shard per machine/GPU, e.g. a Slurm array with "
    "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT and a shared --output-dir."
)
@with_setting_flags("output_dir")
def batch(
    file: Annotated[Path, typer.Argument(help="Prompts: .txt (one per line, # comments), .yaml list or .jsonl.")],
    output_dir: Annotated[
        str, typer.Option("-o", "--output-dir", help="Folder for the job folders.")
    ] = "outputs/batch",
    resume: Annotated[bool, typer.Option("--resume", help="Skip finished jobs; redo unfinished ones.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="K/N: run jobs K, K+N, K+2N... (0-based).")] = None,
    candidates: Annotated[int, typer.Option("--candidates", help="Images per prompt, ranked by CLIP.")] = 1,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    *,
    flags: dict,
):
    """Run a prompt file: one folder per job, resumable, shardable, with index.html at the end."""
    from pixgen.batch import run_batch
    from pixgen.settings import load_settings

    def make_settings(job: dict):  # the batch's flags are the defaults of each job
        job = dict(job)
        return load_settings(job.pop("preset", preset), config, dict(flags, **job), set_ or [])

    def on_job(r, total):
        where = f" -> {r.image}" if r.image else ""
        msg = f"[{r.job.index + 1}] {r.status}: {r.job.prompt[:60]!r}{where}"
        typer.echo(msg + (f" ({r.error})" if r.error else ""), err=True)

    with _progress(quiet=False) as on_step, _StopOnSignal() as stop:
        results = run_batch(file, output_dir, make_settings, resume, shard, candidates, on_job, on_step, stop, offline)
    failed = [r for r in results if r.status == "failed"]
    typer.echo(
        f"{len(results) - len(failed)} of {len(results)} jobs finished; gallery: {Path(output_dir) / 'index.html'}",
        err=True,
    )
    if failed:
        raise typer.Exit(1)


@app.command(
    epilog='Example: pixgen restyle clip.mp4 "an oil painting" -i 20 --blend 0.5 --preset shapes. '
    "Re-run with --resume to go on after an interruption: frames already done are skipped."
)
def restyle(
    input_: Annotated[Path, typer.Argument(metavar="INPUT", help="A video file or a folder of image frames.")],
    prompt: Annotated[str, typer.Argument(help="The style to steer every frame toward.")],
    output_dir: Annotated[
        Path | None, typer.Option("-o", "--output-dir", help="Output folder (default outputs/restyle-INPUT-PROMPT).")
    ] = None,
    iterations: Annotated[int | None, typer.Option("-i", "--iterations", help="Steps per frame.")] = None,
    size: Annotated[str | None, typer.Option("-s", "--size", help="WIDTHxHEIGHT of the output frames.")] = None,
    blend: Annotated[
        float, typer.Option("--blend", help="Share of the previous result in each frame's start (0: none; <1).")
    ] = 0.5,
    fps: Annotated[
        float | None, typer.Option("--fps", help="Frame rate of the MP4 for a folder input (a video keeps its own).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (the same for every frame).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an earlier restyle in the same folder.")] = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
):
    """Restyle a video or a folder of frames toward a prompt, frame by frame, without flicker."""
    from pixgen.restyle import default_output_dir
    from pixgen.restyle import restyle as run
    from pixgen.settings import load_settings, parse_size

    overrides = dict(
        prompt=prompt, iterations=iterations, size=parse_size(size) if size is not None else None, seed=seed
    )
    settings = load_settings(preset, config, overrides, set_ or [])
    out = output_dir or default_output_dir(input_, prompt, settings.output_dir)

    def on_frame(i, name, skipped):
        if not quiet:
            typer.echo(f"[{i + 1}] {name}" + (" (done before)" if skipped else ""), err=True)

    with _progress(quiet) as on_step, _StopOnSignal() as stop:
        result = run(input_, settings, out, blend, fps, resume, None, on_frame, on_step, stop, offline, on_step.status)
    where = f"; video: {result.video}" if result.video else ""
    typer.echo(f"restyled {result.rendered} of {len(result.frames)} frames into {result.out_dir}{where}", err=True)


def _route(argv: list[str]) -> list[str]:
    """`pixgen PROMPT ...` is `pixgen generate PROMPT ...`."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("--help", "-h", "--version", *COMPLETION_OPTIONS):
        return argv
    return ["generate", *argv]


class _OneLine(logging.Handler):
    def emit(self, record):
        print(f"pixgen: warning: {record.getMessage()}", file=sys.stderr)


def _interrupted(exc: BaseException | None) -> int:
    result = exc.args[0] if exc is not None and exc.args else None
    where = ""
    if getattr(result, "run_dir", None):
        where = f"; saved {result.image}; continue with: pixgen resume {result.run_dir}"
    print(f"pixgen: interrupted{where}", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 some batch jobs failed, 2 bad input, 130 interrupted)."""
    argv = _route(list(sys.argv[1:] if argv is None else argv))
    logger = logging.getLogger("pixgen")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine())
        logger.propagate = False
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
        return _interrupted(e)
    except KeyboardInterrupt:
        return _interrupted(None)
    if code == 130:  # a second Ctrl-C: typer turned KeyboardInterrupt into exit code 130
        return _interrupted(None)
    return code
