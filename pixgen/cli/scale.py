"""`pixgen batch --ray` on the terminal: its options, one bar for the batch (jobs done of all, ETA)
with a line per worker (its job and step), a line per finished job, and the summary table at the
end. The work is pixgen.apps.ray_batch's. No torch, no ray at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console

RAY = "Ray"  # the help panel
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Run the jobs on Ray: the cluster at ADDRESS (HOST:PORT, ray://..., auto), else RAY_ADDRESS's, "
        "else a new local one (one worker per GPU).",
        rich_help_panel=RAY,
    ),
]
RayCpusOpt = Annotated[
    int | None,
    typer.Option("--ray-cpus", min=1, help="On nodes without GPUs: one worker per N cores.", rich_help_panel=RAY),
]
RayWorkersOpt = Annotated[
    int | None, typer.Option("--ray-workers", min=1, help="At most K workers.", rich_help_panel=RAY)
]


def optional_address(argv: list[str]) -> list[str]:
    """`--ray` may come without its ADDRESS (click options take a value or none, never either):
    a bare `--ray`, one not followed by something that looks like a Ray address (HOST:PORT,
    ray://..., auto, local), becomes `--ray=` (RAY_ADDRESS's cluster, else a new local one)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray":
            following = out[i + 1] if i + 1 < len(out) else ""
            if not (":" in following or following in ("auto", "local")) or following.startswith("-"):
                out[i] = "--ray="
    return out


class RayProgress:
    """The Watch of a Ray batch on the terminal (stderr; nothing while `quiet`)."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=Console(stderr=True), disable=quiet)
        self.quiet, self.batch, self.lines = quiet, None, {}

    def watch(self):
        from pixgen.apps.ray_batch import Watch

        return Watch(on_pool=self.pool, on_step=self.step, on_job=self.job)

    def pool(self, labels: list[str], jobs: int) -> None:
        self.bar.start()
        self.batch = self.bar.add_task("pixgen batch", total=jobs)
        for label in labels:
            self.lines[label] = self.bar.add_task(f"  {label}: loading models", total=None)

    def step(self, worker: str, name: str, step: int, total: int) -> None:
        if worker in self.lines:
            self.bar.update(self.lines[worker], description=f"  {worker}: {name}", completed=step, total=total)

    def job(self, r, total: int) -> None:
        if self.batch is not None:
            self.bar.advance(self.batch)
        where = f" -> {r.image}" if r.image else ""
        on = f" on {r.worker}" if r.worker else ""
        line = f"[{r.job.index + 1}] {r.status}{on}: {r.job.prompt[:60]!r}{where}"
        line += f" ({r.error})" if r.error else ""
        if self.batch is not None and not self.quiet:
            self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            console.note(line)

    def close(self) -> None:
        self.bar.stop()


def summary(results: list) -> None:
    """The table of the batch's jobs, on stdout (tab-separated when piped)."""
    rows = []
    for r in results:
        note = r.error or (f"resumed from step {r.resumed_from}" if r.resumed_from else "")
        score = "" if r.score is None else r.score
        seconds = round(r.seconds, 1) if r.status == "done" else ""
        rows.append([r.job.name, r.status, "" if r.seed is None else r.seed, score, seconds, r.worker, note])
    console.table(["job", "status", "seed", "clip", "seconds", "worker", "note"], rows, optional=(5, 3, 2))


def check_ray_options(ray: str | None, shard: str | None, cpus: int | None, workers: int | None) -> None:
    """--ray goes without --shard (Ray shares the jobs out itself); --ray-cpus and --ray-workers
    go with --ray. Else one PixgenError line (exit 2)."""
    from pixgen.errors import PixgenError

    if ray is not None and shard:
        raise PixgenError("--ray and --shard cannot be used together: Ray shares the jobs out itself")
    if ray is None and (cpus or workers):
        raise PixgenError(f"{'--ray-cpus' if cpus else '--ray-workers'} needs --ray")


def run_on_ray(file: Path, output_dir: str, make_settings, resume: bool, candidates: int, ray: tuple, offline: bool):
    """The batch on Ray (`ray`: the --ray address, --ray-cpus and --ray-workers), its progress on
    the terminal, the summary; exit 1 when a job failed."""
    from pixgen.apps.ray_batch import RayOptions, run_ray_batch

    address, cpus, workers = ray
    options = RayOptions(address=address or None, cpus=cpus, workers=workers)

    progress = RayProgress()
    try:
        with console.running(True, offline) as hooks:
            watch = progress.watch()
            results = run_ray_batch(file, output_dir, make_settings, resume, candidates, options, watch, hooks)
    finally:
        progress.close()
    summary(results)
    failed = [r for r in results if r.status == "failed"]
    console.note(
        f"{len(results) - len(failed)} of {len(results)} jobs finished; gallery: {Path(output_dir) / 'index.html'}"
    )
    if failed:
        raise typer.Exit(1)
