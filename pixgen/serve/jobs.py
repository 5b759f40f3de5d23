"""The job queue of `pixgen serve`: one worker thread per device runs the jobs one at a time
through `pixgen.api.generate` on models loaded once, so each job's folder is a CLI run's
(final.png, frames, GIF, run.json). A job lives on in the server when its browser goes away.

Cancel is the CLI's Ctrl-C, honoured in every phase of a job (pixgen.phases): before the first
step the job stops and keeps nothing; during the steps it stops after the current one and keeps
its image (final.png marked interrupted, state.safetensors for `pixgen resume`); while writing it
keeps final.png and run.json and skips the GIF and MP4. A job that fails, whatever it raises,
never stops the worker: the next job runs."""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from pixgen.errors import Interrupted, PixgenError
from pixgen.settings import Settings

log = logging.getLogger("pixgen")

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)


class QueueFull(PixgenError):
    """Too many jobs waiting (HTTP 429)."""


@dataclass(frozen=True)
class Limits:
    """What `pixgen serve` accepts, on top of the settings' own bounds: steps per job
    (--max-steps), the longer side of an image (--max-size) and jobs waiting (--max-queue)."""

    max_steps: int = 2000
    max_size: int = 1024
    max_queue: int = 16

    def check(self, settings: Settings) -> None:
        """A PixgenError naming the setting and the server option when a job is over a limit."""
        if settings.iterations > self.max_steps:
            raise PixgenError(
                f"setting 'iterations': this server runs at most {self.max_steps} steps per job, "
                f"got {settings.iterations} (pixgen serve --max-steps)"
            )
        if max(settings.size) > self.max_size:
            w, h = settings.size
            raise PixgenError(
                f"setting 'size': this server draws at most {self.max_size} pixels a side, "
                f"got {w}x{h} (pixgen serve --max-size)"
            )


@dataclass
class Job:
    settings: Settings
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    submitted: float = field(default_factory=time.perf_counter)
    first_step_seconds: float | None = None  # from submission to the first step
    status: str = "queued"
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta: float | None = None
    seed: int | None = None
    run_dir: Path | None = None
    error: str | None = None
    stop: bool = False
    preview: bytes | None = None  # the latest preview PNG
    preview_step: int = 0
    version: int = 0  # bumped on every change: the SSE stream sends a snapshot when it moves
    step_seconds: list[float] = field(default_factory=list)
    kind: str = "generate"  # generate, sample (pixgen sample), sweep (pixgen grid)
    extra: dict = field(default_factory=dict)  # sample: keep; sweep: grid, make_settings


def png_bytes(image) -> bytes:
    from pixgen.outputs.images import to_pil

    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def preview_every(total: int) -> int:
    """Steps between previews: every step for short runs, at most every 5th."""
    return max(1, min(5, total // 40))


class JobQueue:
    """Jobs in order, run one at a time by a worker thread on `models` (pixgen.models.loading.Models)."""

    def __init__(self, models, root: Path, max_queued: int = Limits.max_queue, keep: int = 200):
        self.models = models
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_queued = max_queued
        self.keep = keep  # finished jobs remembered in memory (the history is on disk)
        self.jobs: dict[str, Job] = {}
        self.pending: deque[Job] = deque()
        self.current: Job | None = None
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._work, name="pixgen-serve-worker", daemon=True)
        self.order = itertools.count()

    def start(self) -> JobQueue:
        self.thread.start()
        return self

    # -- requests (any thread) --

    def submit(self, settings: Settings, kind: str = "generate", extra: dict | None = None) -> Job:
        with self.cond:
            if self.closing:
                raise PixgenError("the server is shutting down")
            if len(self.pending) >= self.max_queued:
                raise QueueFull(f"{len(self.pending)} jobs are waiting already; try again later")
            job = Job(settings, kind=kind, extra=extra or {})
            self.jobs[job.id] = job
            self.pending.append(job)
            self._forget_old()
            self.cond.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished, else 1 for the next to run, 2 after it, ..."""
        with self.cond:
            try:
                return self.pending.index(job) + 1
            except ValueError:
                return 0

    def cancel(self, job: Job) -> None:
        """A queued job leaves the queue; a running one stops at its next safe point (after the
        current step, or between the phases before the first step and after the last), keeping
        what it has."""
        with self.cond:
            if job.state == QUEUED:
                self.pending.remove(job)
                self._finish(job, CANCELLED, "cancelled before it started")
                self._bump_all()
            elif job.state == RUNNING:
                job.stop = True
                job.status = "stopping…"
                self._bump(job)

    def snapshot(self, job: Job) -> dict:
        """The job as the API shows it (JSON-ready)."""
        with self.cond:
            out = {
                "id": job.id,
                "state": job.state,
                "status": job.status,
                "position": self.position(job),
                "prompt": job.settings.prompt,
                "step": job.step,
                "total": job.total or job.settings.iterations,
                "loss": job.loss,
                "eta": job.eta,
                "seed": job.seed,
                "error": job.error,
                "created": job.created,
                "first_step_seconds": job.first_step_seconds,
                "preview_step": job.preview_step,
                "version": job.version,
                "run": job.run_dir.name if job.run_dir else None,
                "kind": job.kind,
                "drawer": job.settings.drawer,
            }
        if job.run_dir is not None and job.state in (DONE, CANCELLED) and job.run_dir.is_dir():
            out.update(kind_files(self.root, job))
        return out

    def active(self) -> list[Job]:
        with self.cond:
            return ([self.current] if self.current else []) + list(self.pending)

    def stop(self) -> None:
        """Stop taking jobs, at once (any thread, a signal handler's too): the queued ones are
        cancelled and the running one is asked to stop at its next safe point."""
        with self.cond:
            self.closing = True
            for job in list(self.pending):
                self._finish(job, CANCELLED, "the server shut down before it started")
            self.pending.clear()
            if self.current is not None:
                self.current.stop = True
                self.current.status = "stopping…"
            self.cond.notify_all()

    def close(self, timeout: float = 60.0) -> None:
        """`stop()`, then wait up to `timeout` seconds for the running job to keep what it has."""
        self.stop()
        if self.thread.is_alive():
            self.thread.join(timeout)

    # -- the worker --

    def _bump(self, job: Job) -> None:
        job.version += 1

    def _bump_all(self) -> None:  # queue positions moved
        for job in self.pending:
            job.version += 1

    def _finish(self, job: Job, state: str, status: str, error: str | None = None) -> None:
        job.state, job.status, job.error = state, status, error
        job.eta = 0.0 if state == DONE else None
        self._bump(job)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in FINISHED]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job.id]

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.cond.wait()
                if self.closing:
                    return
                job = self.current = self.pending.popleft()
                job.state, job.status = RUNNING, "starting…"
                self._bump(job)
                self._bump_all()
            try:
                self._run(job)
            except BaseException as e:  # never lose the worker, whatever a job raises: the queue goes on
                log.exception("job %s failed", job.id)
                with self.cond:
                    self._finish(job, FAILED, "failed", f"{type(e).__name__}: {e}")
            finally:
                with self.cond:
                    self.current = None

    def _run(self, job: Job) -> None:
        from pixgen.api import generate
        from pixgen.apps.sample import sample_images
        from pixgen.outputs.writer import make_run_dir
        from pixgen.phases import Hooks

        s = job.settings
        every = preview_every(s.iterations)

        def on_step(step, total):
            preview = png_bytes(step.image) if step.i % every == 0 or step.i in (1, total) else None
            with self.cond:
                if job.first_step_seconds is None:
                    job.first_step_seconds = time.perf_counter() - job.submitted
                job.step_seconds.append(step.seconds)
                recent = job.step_seconds[-20:]
                job.step, job.total, job.loss = step.i, total, float(step.loss)
                job.eta = (total - step.i) * sum(recent) / len(recent)
                if not job.stop:
                    job.status = "running"
                if preview is not None:
                    job.preview, job.preview_step = preview, step.i
                self._bump(job)

        def on_phase(phase, text):
            with self.cond:
                job.status = text
                self._bump(job)

        run_dir = make_run_dir(s.output_dir, ("grid " if job.kind == "sweep" else "") + s.prompt)
        if job.kind != "sweep":
            run_dir.rmdir()  # generate() creates it: a folder of its own, never reused
        with self.cond:
            job.run_dir = run_dir
        try:
            hooks = Hooks(on_phase=on_phase, on_step=on_step, should_stop=lambda: job.stop)
            if job.kind == "sample":
                result = sample_images(s, job.extra.get("keep", 4), self.models, run_dir, hooks)
            elif job.kind == "sweep":
                result = self._sweep(job, run_dir, hooks)
            else:
                result = generate(s, self.models, run_dir=run_dir, hooks=hooks)
        except Interrupted as e:
            self._cancelled(job, e.args[0] if e.args else None)
            return
        except PixgenError as e:
            with self.cond:
                if not run_dir.exists():
                    job.run_dir = None
                self._finish(job, FAILED, "failed", str(e))
            return
        with self.cond:
            job.seed = result.seed
            self._finish(job, DONE, f"done in {result.seconds:.1f} s")

    def _sweep(self, job: Job, folder: Path, hooks):
        """A sweep's cells (pixgen.apps.grid), one generate run each on the loaded models, into
        `folder`/cells; grid.png and index.html after each cell."""
        from dataclasses import replace

        from pixgen.api import Result, generate
        from pixgen.apps.grid import write_grid

        grid, seconds = replace(job.extra["grid"], out=folder), 0.0
        (folder / "cells").mkdir(parents=True, exist_ok=True)
        try:
            for i, (cell, settings) in enumerate(zip(grid.jobs, job.extra["settings"], strict=True), 1):
                with self.cond:
                    job.status, job.extra["cell"] = f"cell {i} of {len(grid.jobs)}", i
                    self._bump(job)
                result = generate(settings, self.models, run_dir=folder / "cells" / cell.name, hooks=hooks)
                seconds += result.seconds
                write_grid(grid)
        finally:
            write_grid(grid)
        return Result(folder, folder / "grid.png", settings.seed, seconds)

    def _cancelled(self, job: Job, result) -> None:
        """A job that stopped on request: before its first step (nothing kept), during its steps
        (its image kept) or while writing (final.png kept, the renders skipped)."""
        with self.cond:
            if result is None:
                if job.run_dir is not None and not job.run_dir.exists():
                    job.run_dir = None
                self._finish(job, CANCELLED, "cancelled before the first step; nothing kept")
                return
            job.seed = result.seed
            if result.interrupted:
                self._finish(job, CANCELLED, f"cancelled at step {job.step}; image kept")
            else:
                self._finish(
                    job, CANCELLED, f"cancelled while writing; image kept, {', '.join(result.skipped)} skipped"
                )


def kind_files(root: Path, job: Job) -> dict:
    """What a finished job shows: a run's files; a sample's kept images (and their settings'
    files, for polish); a sweep's grid.png, its axes' labels and each cell's image."""
    rel = job.run_dir.resolve().relative_to(Path(root).resolve()).as_posix()
    if job.kind == "sample":
        kept = sorted(job.run_dir.glob("sample-*.png"), key=lambda p: int(p.stem.split("-")[1]))
        return {"samples": [f"{rel}/{p.name}" for p in kept]}
    if job.kind == "sweep":
        from dataclasses import replace

        from pixgen.apps.grid import cell_images

        grid = job.extra["grid"]
        images = cell_images(replace(grid, out=job.run_dir))
        cells = [f"/files/{p.resolve().relative_to(Path(root).resolve()).as_posix()}" if p else None for p in images]
        axes = {a.name: [a.label(i) for i in range(len(a.values))] for a in grid.axes}
        return {"grid": {"png": f"/files/{rel}/grid.png", "axes": axes, "cells": cells}}
    return {"files": run_files(root, job.run_dir)}


def run_files(root: Path, run_dir: Path) -> dict:
    """URLs of a run folder's files (served by /files/)."""
    rel = run_dir.resolve().relative_to(Path(root).resolve()).as_posix()
    out = {"final": f"/files/{rel}/final.png", "run_json": f"/files/{rel}/run.json"}
    if (run_dir / "progress.gif").is_file():
        out["gif"] = f"/files/{rel}/progress.gif"
    frames = sorted((run_dir / "frames").glob("*.png")) if (run_dir / "frames").is_dir() else []
    out["frames"] = [f"/files/{rel}/frames/{p.name}" for p in frames]
    return out


def load_server_models(settings: Settings, offline: bool = False):
    """The models of the server's preset, loaded once on its device."""
    from pixgen.models.loading import load_models
    from pixgen.needs import check_models
    from pixgen.runtime.device import resolve_device

    s = settings
    check_models(s.vqgan, s.clip, s.vqgan_config, s.vqgan_ckpt, offline)
    if s.threads:
        import torch

        torch.set_num_threads(s.threads)
    return load_models(s.vqgan, s.clip, resolve_device(s.device), s.vqgan_config, s.vqgan_ckpt, offline)
