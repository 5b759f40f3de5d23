"""`pixgen batch --ray`: a prompt file's jobs on a pool of Ray actors (pixgen.scale.worker), one
per GPU or per --ray-cpus cores, each with its models loaded once. The driver writes every job
folder itself from the files its worker sends back (no shared filesystem needed), so the folders,
skip-finished, --resume, index.html and the contact sheet are a local batch's (pixgen.apps.batch).

Faults are Ray's to retry: a worker killed mid-job restarts (max_restarts) and Ray runs its job
again (max_task_retries), which goes on from the job's last --save-every checkpoint, sent to the
driver's Ledger actor as it was saved. Ray is imported only here and only when asked for."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pixgen.apps.batch import JobResult, check_candidates, check_fresh, read_jobs, triage, update_gallery
from pixgen.errors import Interrupted, PixgenError
from pixgen.phases import Hooks
from pixgen.scale.ledger import Ledger
from pixgen.scale.tree import read_tree, write_tree
from pixgen.scale.worker import JobWorker

INSTALL = "pip install 'pixgen[ray]'"
TASK_RETRIES = 3  # runs of a job after its worker died (Ray's max_task_retries)
DEFAULT_CPUS = 4  # cores per worker on nodes without GPUs, unless --ray-cpus says (at most a node's)
POLL_SECONDS = 0.2  # how often the driver takes the checkpoints and steps the workers reported
STOP_WAIT_SECONDS = 120.0  # after Ctrl-C, how long the jobs under way get to keep what they have
# a local Ray runs its workers at the driver's priority, as a local batch runs (Ray's default lowers it by 15)
_LOCAL_CONFIG = {"worker_niceness": 0}
STOPPED = "on Ray; the finished jobs are kept, with the last checkpoints of the unfinished ones (go on with --resume)"


@dataclass
class RayOptions:
    """Where and on what the jobs run: `address` of a Ray cluster (None: RAY_ADDRESS, else a new
    local Ray), `cpus` per worker on CPU nodes, at most `workers` workers, and `init`: more
    ray.init keywords for a local start (object_store_memory, include_dashboard...)."""

    address: str | None = None
    cpus: int | None = None
    workers: int | None = None
    init: dict = field(default_factory=dict)


@dataclass
class Watch:
    """What the driver tells its caller: `on_pool(labels, jobs)` once the workers are asked for;
    `on_step(worker, job name, step, total)` as they go; `on_job(result, jobs)` as each job ends
    (the failed and skipped ones first); `on_workers(handles)`, the actors themselves;
    `on_timing(...)`, what each job cost on the driver and inside its worker (benchmarks)."""

    on_pool: Callable | None = None
    on_step: Callable | None = None
    on_job: Callable | None = None
    on_workers: Callable | None = None
    on_timing: Callable | None = None  # (job name, seconds from submission to written, seconds in run_job)

    def tell(self, name: str, *args) -> None:
        callback = getattr(self, name)
        if callback is not None:
            callback(*args)


def import_ray():
    """The ray module, or one PixgenError line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PixgenError(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def run_ray_batch(
    path: str | Path,
    output_dir: str | Path,
    make_settings: Callable[[dict], object],
    resume: bool = False,
    candidates: int = 1,
    options: RayOptions | None = None,
    watch: Watch | None = None,
    hooks: Hooks | None = None,
) -> list[JobResult]:
    """Run every job of a prompt file on Ray, as pixgen.apps.batch.run_batch runs them here.

    A bad line (or bad settings) fails alone, at once; a job that fails on its worker fails alone;
    Ctrl-C (`hooks.should_stop`) asks the jobs under way to stop at their next safe point, keeps
    what they have and raises Interrupted."""
    ray = import_ray()
    jobs = read_jobs(path)
    check_candidates(candidates)
    out = Path(output_dir)
    check_fresh(out, jobs, resume)
    options, watch, hooks = options or RayOptions(), watch or Watch(), hooks or Hooks()
    results: dict[int, JobResult] = {}
    todo = []
    for job in jobs:
        known = triage(job, out / job.name, resume)
        if known is None:
            try:
                todo.append((job, make_settings(job.overrides)))
                continue
            except PixgenError as e:
                known = JobResult(job, "failed", error=f"line {job.line}: {e}")
        results[job.index] = known
        watch.tell("on_job", known, len(jobs))
    try:
        if todo:
            with connected(ray, options):
                RayBatch(ray, out, todo, candidates, options, watch, hooks, len(jobs)).run(results)
    finally:
        if results:
            update_gallery(out, {j.name for j in jobs})
    return [results[j.index] for j in jobs if j.index in results]


@contextmanager
def connected(ray, options: RayOptions):
    """Ray for the batch: the caller's connection when there is one (kept after), else one to
    `options.address` (or RAY_ADDRESS), else a new local Ray; closed after."""
    if ray.is_initialized():
        yield
        return
    import signal
    import threading

    address = options.address or os.environ.get("RAY_ADDRESS") or None
    main = threading.current_thread() is threading.main_thread()
    term = signal.getsignal(signal.SIGTERM) if main else None
    local = {} if address else dict(options.init, _system_config=_LOCAL_CONFIG | options.init.get("_system_config", {}))
    try:
        ray.init(address=address, logging_level=logging.WARNING, **local)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as e:
        where = f" at {address}" if address else ""
        raise PixgenError(f"cannot connect to Ray{where}: {str(e).strip().splitlines()[0]}") from None
    finally:
        if main and term is not None:  # ray.init's SIGTERM handler exits at once; a batch stops gracefully
            signal.signal(signal.SIGTERM, term)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class Plan:
    """The worker pool: how many, the Ray resources of each, and a CPU worker's torch threads."""

    count: int
    resources: dict
    threads: int | None


def plan_pool(nodes: list[dict], device: str, cpus: int | None, workers: int | None, jobs: int) -> Plan:
    """One worker per GPU of the live `nodes` (ray.nodes()), unless the jobs run on the CPU or
    there is none: then one per `cpus` cores of each node (DEFAULT_CPUS, at most the biggest
    node's); at most `workers` and at most one per job."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpus = sum(int(r.get("GPU", 0)) for r in alive)
    if gpus and not str(device).startswith("cpu"):
        plan = Plan(gpus, {"num_gpus": 1, "num_cpus": cpus or 1}, None)
    else:
        biggest = max((int(r.get("CPU", 0)) for r in alive), default=0)
        each = cpus or max(1, min(DEFAULT_CPUS, biggest))
        if each > biggest:
            raise PixgenError(f"--ray-cpus {each}: no node of this Ray cluster has {each} CPUs (at most {biggest})")
        plan = Plan(sum(int(r.get("CPU", 0)) // each for r in alive), {"num_cpus": each}, each)
    plan.count = min(plan.count, workers or plan.count, jobs)
    return plan


class RayBatch:
    """The jobs still to run (`todo`: (Job, Settings) pairs) on a pool of workers: one job per
    idle worker at a time, the workers' checkpoints written into the job folders as they come,
    each finished job's folder written from what its worker sends back."""

    def __init__(self, ray, out: Path, todo: list, candidates: int, options, watch: Watch, hooks: Hooks, total: int):
        self.ray, self.out, self.todo, self.candidates = ray, out, todo, candidates
        self.options, self.watch, self.hooks, self.total = options, watch, hooks, total
        self.finished: set[str] = set()  # jobs whose last files are written: later checkpoints are stale
        self.steps: dict[str, tuple] = {}
        self.submitted: dict[str, float] = {}
        self.ledger, self.workers = None, []

    def run(self, results: dict) -> None:
        ray = self.ray
        try:
            self.ledger = self._ledger()
            self.workers = self._pool()
            queue, running, idle = deque(self.todo), {}, list(range(len(self.workers)))
            while queue or running:
                if self.hooks.stop_requested():
                    self._stop(running, results)
                    raise Interrupted(STOPPED)
                while idle and queue:
                    job, settings = queue.popleft()
                    worker = idle.pop(0)
                    dest = str(self.out / job.name)
                    ref = self.workers[worker].run.remote(job, settings, self.candidates, dest)
                    running[ref] = (worker, job)
                    self.submitted[job.name] = time.perf_counter()
                if not queue:  # no job left for the idle: their GPUs or cores go to a worker Ray restarts
                    for worker in idle:
                        ray.kill(self.workers[worker])
                    idle = []
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                self._take_reports()
                for ref in ready:
                    worker, job = running.pop(ref)
                    results[job.index] = self._collect(ref, job)
                    idle.append(worker)
                    self.watch.tell("on_job", results[job.index], self.total)
        finally:
            for actor in [*self.workers, *([self.ledger] if self.ledger is not None else [])]:
                ray.kill(actor)

    def _ledger(self):
        """The Ledger actor, on the driver's node (a lost worker node never takes it along),
        holding the folders that unfinished jobs left (with --resume) to go on from."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(self.ray.get_runtime_context().get_node_id(), soft=False)
        self.ledger_name = f"pixgen-ledger-{uuid.uuid4().hex[:12]}"
        ledger = self.ray.remote(Ledger).options(name=self.ledger_name, num_cpus=0, scheduling_strategy=here).remote()
        for job, _ in self.todo:
            files = read_tree(self.out / job.name)
            if files:
                ledger.seed.remote(job.name, files)
        return ledger

    def _pool(self) -> list:
        """The workers, each loading the first job's models as it starts."""
        first = self.todo[0][1]
        o = self.options
        plan = plan_pool(self.ray.nodes(), first.device, o.cpus, o.workers, len(self.todo))
        if plan.count < 1:
            raise PixgenError("this Ray cluster has no room for a worker (no GPU, and no node with enough CPUs)")
        actor = self.ray.remote(JobWorker).options(
            max_restarts=-1, max_task_retries=TASK_RETRIES, max_concurrency=2, **plan.resources
        )
        labels = [f"worker {i + 1}" for i in range(plan.count)]
        workers = [actor.remote(label, self.ledger_name, first, plan.threads, self.hooks.offline) for label in labels]
        self.watch.tell("on_pool", labels, len(self.todo))
        self.watch.tell("on_workers", workers)
        return workers

    def _take_reports(self) -> None:
        """Write the checkpoints the workers sent (but none of a job already written for good)
        and pass on their steps."""
        unwritten, steps = self.ray.get(self.ledger.drain.remote())
        for name, (files, exact) in unwritten.items():
            if name not in self.finished:
                write_tree(self.out / name, files, exact)
        for worker, step in sorted(steps.items()):
            if self.steps.get(worker) != step:
                self.steps[worker] = step
                self.watch.tell("on_step", worker, *step)

    def _collect(self, ref, job) -> JobResult:
        """A job's end: its folder written from its worker's files, its result."""
        ray = self.ray
        try:
            data = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # an error no batch job expects: this job fails alone
            cause = e.cause if getattr(e, "cause", None) is not None else e
            return self._ended(job, JobResult(job, "failed", error=f"line {job.line}: {_first_line(cause)}"))
        except ray.exceptions.RayActorError as e:
            why = f"its worker died {TASK_RETRIES + 1} times ({_first_line(e)})"
            return self._ended(job, JobResult(job, "failed", error=f"line {job.line}: {why}"))
        job_dir = self.out / job.name
        if data["files"] or data["made"]:
            job_dir.mkdir(parents=True, exist_ok=True)
            write_tree(job_dir, data["files"], exact=data["status"] != "failed")
        wall = time.perf_counter() - self.submitted[job.name]
        self.watch.tell("on_timing", job.name, wall, data["inside_seconds"])
        image = job_dir / data["image"] if data["image"] else None
        keep = ("seed", "score", "seconds", "error", "candidates", "worker", "resumed_from")
        return self._ended(job, JobResult(job, data["status"], image, **{k: data[k] for k in keep}))

    def _ended(self, job, result: JobResult) -> JobResult:
        self.finished.add(job.name)
        self.ledger.forget.remote(job.name)
        return result

    def _stop(self, running: dict, results: dict) -> None:
        """Ctrl-C: every job under way stops at its next safe point and its folder keeps what it
        has; after STOP_WAIT_SECONDS (or a second Ctrl-C) the workers are killed, their jobs
        keeping their last checkpoint."""
        for worker, _ in running.values():
            self.workers[worker].stop.remote()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while running and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            self._take_reports()
            for ref in ready:
                _, job = running.pop(ref)
                results[job.index] = self._collect(ref, job)
                self.watch.tell("on_job", results[job.index], self.total)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
