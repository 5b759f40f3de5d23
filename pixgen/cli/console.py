"""What the command line shows on the terminal: the progress bar and the status line before it,
Ctrl-C handling, tables, one-line results and warnings. No torch, and rich only when used."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager

import typer

from pixgen.cli.signals import ABORT_GRACE_SECONDS, StopOnSignal, signal_at_phase  # noqa: F401


class Progress:
    """An on_step(step, total) callback driving a rich bar, started at the first step; before
    it, `status(text)` shows what the run is doing (on a terminal, unless quiet)."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        columns = [
            TextColumn("[bold]pixgen"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} it/s"),
            TimeRemainingColumn(),
        ]
        self.progress = Bar(*columns, console=Console(stderr=True), disable=quiet)
        self.task = None
        self.quiet = quiet
        self.spinner = None  # the status line shown before the first step, on a terminal only

    def status(self, phase, text: str) -> None:
        """Say what the run is doing before its first step (loading models, encoding prompts):
        `phase` (a pixgen.phases.Phase), in words `text`."""
        signal_at_phase(phase)
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
        rate = 1.0 / step.seconds if step.seconds > 0 else 0.0
        self.progress.update(self.task, completed=step.i, loss=step.loss, rate=rate)

    def close(self) -> None:
        self._stop_status()
        if self.task is not None:  # never started (an error before the first step): print nothing
            self.progress.stop()


@contextmanager
def running(quiet: bool, offline: bool = False):
    """The Hooks of a run on the terminal (pixgen.phases): a status line and a progress bar, and
    graceful Ctrl-C, all undone after."""
    from pixgen.phases import Hooks

    bar = Progress(quiet)
    try:
        with StopOnSignal() as stop:
            yield Hooks(on_phase=bar.status, on_step=bar, should_stop=stop, offline=offline)
    finally:
        bar.close()


@contextmanager
def indexing(quiet: bool):
    """A transient bar for `search`'s indexing: yields progress(i, n)."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    with Bar(console=Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task("indexing", total=None)
        yield lambda i, n: bar.update(task, completed=i, total=n)


def table(headers: list[str], rows: list[list], optional: tuple[int, ...] = ()) -> None:
    """A table on stdout, floats with 4 decimals. Piped (stdout not a terminal): plain lines of
    tab-separated cells, a header first, never wrapped, for grep, cut and awk. On a terminal: a
    rich table that breaks a cell only between words, dropping the `optional` columns (indices,
    the first one first) while the terminal is too narrow for whole words."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    if not sys.stdout.isatty():
        for line in [headers, *cells]:
            typer.echo("\t".join(c.replace("\t", " ").replace("\n", " ") for c in line))
        return
    from rich.console import Console

    console = Console()
    console.print(rich_table(headers, cells, optional, console.width))


def rich_table(headers: list[str], cells: list[list[str]], optional: tuple[int, ...] = (), width: int = 80):
    """The rich Table of `table`, fitted to `width` columns: wrapped only at spaces (so names,
    paths and numbers stay whole) once the remaining columns' longest words fit, else folded."""
    from rich.cells import cell_len
    from rich.table import Table

    def longest(i: int, words: bool = True) -> int:
        return max(cell_len(w) for row in [headers, *cells] for w in (row[i].split() if words else [row[i]]) or [""])

    keep = list(range(len(headers)))
    drop = [i for i in optional if i in keep]

    def spare() -> int:  # the room left when every kept column is as wide as its longest word
        return width - sum(longest(i) + 3 for i in keep) - 1  # 2 of padding and 1 of rule a column

    while drop and spare() < 0:
        keep.remove(drop.pop(0))
    widths = {i: None for i in keep}  # rich's own widths (folding a word wider than the terminal)
    if spare() >= 0:  # whole words fit: each column its longest word, then the room left in order
        extra = spare()
        for i in keep:
            widths[i] = longest(i) + min(extra, longest(i, words=False) - longest(i))
            extra -= widths[i] - longest(i)
    out = Table()
    for i in keep:
        out.add_column(headers[i], overflow="fold", width=widths[i])
    for row in cells:
        out.add_row(*[row[i] for i in keep])
    return out


def echo_json(data) -> None:
    typer.echo(json.dumps(data, default=str))


def note(text: str) -> None:
    """A line for people, on stderr."""
    typer.echo(text, err=True)


def report(result, json_out: bool) -> None:
    """One JSON object on stdout for scripts, or one line on stderr for people."""
    if json_out:
        run = {"run_dir": str(result.run_dir), "image": str(result.image), "seed": result.seed}
        echo_json(dict(run, seconds=round(result.seconds, 3)))
    else:
        note(f"saved {result.image} (seed {result.seed}, {result.seconds:.1f} s)")


def report_samples(result, json_out: bool) -> None:
    """The kept samples of `pixgen sample`: JSON, or one line each and where the gallery is."""
    if json_out:
        head = {"run_dir": str(result.run_dir), "seed": result.seed, "seconds": round(result.seconds, 3)}
        echo_json(dict(head, kept=[dict(k, image=str(result.run_dir / k["image"])) for k in result.scores]))
        return
    for k in result.scores:
        note(f"#{k['rank']} {result.run_dir / k['image']} (CLIP {k['clip']:.3f}, sample {k['sample']})")
    gallery = result.run_dir / "index.html"
    note(f"kept {len(result.scores)} (seed {result.seed}, {result.seconds:.1f} s); gallery: {gallery}")


def report_candidates(job_dir, info: dict, json_out: bool) -> None:
    """The ranking of `generate --candidates`: JSON with the best first, or one line each."""
    if json_out:
        best = {"run_dir": str(job_dir), "image": str(info["image"]), "seed": info["seed"]}
        echo_json(dict(best, seconds=round(info["seconds"], 3), ranking=info["candidates"]))
        return
    for c in info["candidates"]:
        note(f"{c['rank']}. seed {c['seed']}  CLIP {c['clip_score']:.4f}  {c['image']}")
    note(f"best: {info['image']} (seed {info['seed']})")


class OneLine(logging.Handler):
    """pixgen's warnings as one line each on stderr."""

    def emit(self, record):
        print(f"pixgen: warning: {record.getMessage()}", file=sys.stderr)


def show_warnings() -> None:
    """Route the "pixgen" logger's warnings to stderr as one line each (once per process)."""
    logger = logging.getLogger("pixgen")
    if not any(isinstance(h, OneLine) for h in logger.handlers):
        logger.addHandler(OneLine())
        logger.propagate = False


def interrupted(exc: BaseException | None) -> int:
    """Say where an interrupted run's work is and how to go on; the exit code, 130."""
    from pixgen.errors import Interrupted, StoppedEarly

    result = exc.args[0] if exc is not None and exc.args else None
    where = ""
    if isinstance(exc, StoppedEarly):
        where = f" {StoppedEarly.where}"
    elif isinstance(result, str):  # where it stopped, in words (a batch between its jobs)
        where = f" {result}"
    elif isinstance(exc, Interrupted) and result is None:
        where = " before the first step; nothing new was written"
    elif getattr(result, "run_dir", None) and getattr(result, "interrupted", True):
        where = f"; saved {result.image}; continue with: pixgen resume {result.run_dir}"
    elif getattr(result, "run_dir", None):
        where = f" while writing; saved {result.image}; skipped {', '.join(result.skipped)}"
    elif exc is not None:
        where = "; aborted"
    print(f"pixgen: interrupted{where}", file=sys.stderr)
    return 130
