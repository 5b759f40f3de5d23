"""A worker of `pixgen batch --ray`: loads the models once, as the studio does, and runs batch jobs
one after another through the local batch's own code (pixgen.apps.batch.run_job), each in a
scratch folder whose files go back to the driver: at each --save-every checkpoint (a job that Ray
retries after its worker died goes on from there) and when the job ends. Plain Python:
pixgen.apps.ray_batch makes it a Ray actor (ray is imported only inside its methods)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from pixgen.apps.batch import JobResult, load_job_models, run_job
from pixgen.errors import Interrupted, PixgenError
from pixgen.outputs.writer import write_json
from pixgen.phases import Hooks
from pixgen.scale.tree import Snapshot, write_tree

SCRATCH = "pixgen-ray-"  # a worker's scratch folder: pixgen-ray-PID-XXXX in the temporary folder
REPORT_EVERY = 0.5  # seconds between a worker's step reports (checkpoints are sent whenever they come)


class JobWorker:
    """`label` names the worker in the progress lines; `ledger`, the name of the driver's Ledger
    actor; `warm`, a job's settings whose models load now (before the first job arrives);
    `threads`, the torch threads of a CPU worker (its share of the node's cores)."""

    def __init__(self, label: str, ledger: str, warm=None, threads: int | None = None, offline: bool = False):
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)
        # by name, not a handle among the arguments: Ray keeps those in its object store, where a
        # restart may not find them
        self.label, self.ledger, self.offline = label, ray.get_actor(ledger), offline
        self.loaded: dict[tuple, object] = {}
        self.stopping = False
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))
        remove_orphans(self.scratch.parent)
        if warm is not None:
            try:
                load_job_models(warm, self.loaded, Hooks(offline=offline))
            except PixgenError:  # the job that needs these models fails with the reason
                pass

    def pid(self) -> int:
        """This worker's process id (what a test kills)."""
        return os.getpid()

    def stop(self) -> None:
        """Stop the job under way at its next safe point, keeping what it has (the driver's Ctrl-C)."""
        self.stopping = True

    def run(self, job, settings, candidates: int, dest: str) -> dict:
        """Run one batch job (a pixgen.apps.batch.Job with its resolved `settings`) from its last
        checkpoint in the ledger, if any; `dest` is the job folder's path on the driver (what
        run.json records for candidates). Returns the job's result and its folder's files."""
        import ray

        job_dir = self.scratch / job.name
        shutil.rmtree(job_dir, ignore_errors=True)
        start = ray.get(self.ledger.latest.remote(job.name))
        if start:
            write_tree(job_dir, start)
        snapshot = Snapshot(job_dir)
        reporter = Reporter(self, job.name, settings.save_every, snapshot)
        self.ledger.report.remote(self.label, job.name, 0, settings.iterations)
        hooks = Hooks(on_step=reporter, should_stop=lambda: self.stopping, offline=self.offline)
        t0 = time.perf_counter()
        try:
            result = run_job(job, job_dir, lambda _: settings, self.loaded, candidates, hooks)
        except Interrupted:
            result = JobResult(job, "interrupted", error="stopped by the driver")
        inside = time.perf_counter() - t0
        try:
            relocate_record(job_dir, dest)
            files = snapshot.changes(everything=True, finished=True)
            made = job_dir.is_dir()
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        return {
            "status": result.status,
            "error": result.error,
            "image": _inside(result.image, job_dir),
            "seed": result.seed,
            "score": result.score,
            "seconds": result.seconds,
            "candidates": [dict(c, image=_moved(c["image"], job_dir, dest)) for c in result.candidates],
            "files": files,
            "made": made,
            "worker": self.label,
            "resumed_from": steps_done(start) if start else None,
            "inside_seconds": inside,  # the job as a local batch runs it: the rest is Ray's overhead
        }


class Reporter:
    """The on_step of a job on a worker: its step to the ledger every REPORT_EVERY seconds, and
    at each --save-every step (just saved: run.json, state, frames) the files changed since the
    last checkpoint (all of them the first time, so the driver's folder becomes this attempt's)."""

    def __init__(self, worker: JobWorker, name: str, save_every: int, snapshot: Snapshot):
        self.worker, self.name, self.save_every, self.snapshot = worker, name, save_every, snapshot
        self.first, self.last = True, 0.0

    def __call__(self, step, total) -> None:
        ledger, now = self.worker.ledger, time.monotonic()
        if self.save_every and step.i % self.save_every == 0:
            files = self.snapshot.changes(everything=self.first)
            ledger.report.remote(self.worker.label, self.name, step.i, total, files, self.first)
            self.first, self.last = False, now
        elif now - self.last >= REPORT_EVERY:
            ledger.report.remote(self.worker.label, self.name, step.i, total)
            self.last = now


def steps_done(files: dict[str, bytes]) -> int:
    """The most steps any run of a checkpoint's folder had done (its run.json files say)."""
    done = 0
    for name, data in files.items():
        if PurePosixPath(name).name == "run.json":
            try:
                done = max(done, int(json.loads(data).get("steps_done", 0)))
            except (ValueError, TypeError, AttributeError):
                continue
    return done


def _inside(path, job_dir: Path) -> str | None:
    """`path` (in the scratch job folder) relative to that folder, as the driver rebuilds it."""
    return None if path is None else Path(path).relative_to(job_dir).as_posix()


def _moved(path, job_dir: Path, dest: str) -> str:
    """A path in the scratch job folder as the same path in the driver's job folder `dest`."""
    rel = _inside(path, job_dir)
    return str(Path(dest) / rel) if rel != "." else dest


def relocate_record(job_dir: Path, dest: str) -> None:
    """A job of candidates records where its images are (run.json's best and ranking): make those
    the driver's paths, as a local batch writes them."""
    path = job_dir / "run.json"
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    if "ranking" not in record:
        return
    record["best"] = _moved(record["best"], job_dir, dest)
    record["ranking"] = [dict(c, image=_moved(c["image"], job_dir, dest)) for c in record["ranking"]]
    write_json(path, record)


def remove_orphans(folder: Path) -> None:
    """The scratch folders of workers that are gone (killed: none of their code ran after)."""
    for path in folder.glob(f"{SCRATCH}*-*"):
        pid = path.name[len(SCRATCH) :].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive, another user's
            continue
