"""Batch runs: a prompt file in, one deterministic folder per job out, resumable and shardable,
with best-of-N candidates ranked by CLIP and an offline HTML gallery at the end."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixgen.errors import Interrupted, PixgenError
from pixgen.files import atomic_write
from pixgen.outputs.writer import read_run_record, run_finished, slugify, write_json
from pixgen.phases import Hooks

log = logging.getLogger("pixgen")
MAX_CANDIDATES = 100  # images per prompt (--candidates, --seeds)
STOPPED_BETWEEN_JOBS = "between jobs; the finished jobs are kept (go on with --resume)"


@dataclass
class Job:
    index: int  # 0-based position among the file's jobs
    line: int  # 1-based line in the file, for messages
    overrides: dict

    @property
    def prompt(self) -> str:
        return str(self.overrides.get("prompt", ""))

    @property
    def name(self) -> str:
        return f"{self.index + 1:04d}-{slugify(self.prompt, 40)}"


@dataclass
class JobResult:
    job: Job
    status: str  # done, skipped (already finished), failed
    image: Path | None = None
    seed: int | None = None
    score: float | None = None
    seconds: float = 0.0
    error: str = ""
    candidates: list = field(default_factory=list)
    worker: str = ""  # the Ray worker that ran it (batch --ray)
    resumed_from: int | None = None  # the step a retried job went on from (batch --ray)


def read_jobs(path: str | Path) -> list[Job]:
    """Parse a prompt file: plain text (a prompt per line), YAML (a list) or JSONL."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PixgenError(f"batch file not found: {path}") from None
    except OSError as e:
        raise PixgenError(f"cannot read batch file {path}: {e.strerror or e}") from None
    if b"\x00" in raw:
        raise PixgenError(f"batch file {path} is binary, not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PixgenError(f"batch file {path} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        jobs = _yaml_jobs(text, path)
    elif suffix == ".jsonl":
        jobs = _jsonl_jobs(text, path)
    else:
        jobs = [
            Job(0, n, {"prompt": line.strip()})
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not jobs:
        raise PixgenError(f"batch file {path} holds no jobs")
    for i, job in enumerate(jobs):
        job.index = i
    return jobs


def _job_from(data, line: int, path: Path) -> Job:
    if isinstance(data, str):
        data = {"prompt": data}
    if not isinstance(data, dict):
        return Job(0, line, {"__error__": f"expected a prompt or a mapping of settings, got {type(data).__name__}"})
    return Job(0, line, {str(k).replace("-", "_"): v for k, v in data.items()})


def _yaml_jobs(text: str, path: Path) -> list[Job]:
    import yaml

    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return []
            if not isinstance(node, yaml.SequenceNode):
                raise PixgenError(f"batch file {path}: expected a YAML list of jobs")
            return [
                _job_from(loader.construct_object(item, deep=True), item.start_mark.line + 1, path)
                for item in node.value
            ]
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise PixgenError(f"batch file {path} is not valid YAML: {str(e).splitlines()[0]}") from None


def _jsonl_jobs(text: str, path: Path) -> list[Job]:
    jobs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            jobs.append(_job_from(json.loads(line), n, path))
        except json.JSONDecodeError as e:
            jobs.append(Job(0, n, {"__error__": f"not valid JSON ({e.msg})"}))
    return jobs


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N): run the jobs whose 0-based index is K modulo N."""
    if not text:
        return 0, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PixgenError(f"--shard expects K/N such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise PixgenError(f"--shard {text}: K must be in 0..N-1 and N at least 1")
    return k, n


def job_seed(settings_seed: int | None, job: Job) -> int:
    """The job's seed, or one derived from its prompt and position (stable across resumes)."""
    if settings_seed is not None:
        return settings_seed
    digest = hashlib.sha256(f"{job.index}:{job.prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_candidates(
    settings,
    models,
    job_dir: Path,
    seeds: list[int],
    hooks: Hooks | None = None,
) -> dict:
    """Generate one image per seed into job_dir, rank them by CLIP score, link the best.

    With one seed the job folder is the run folder itself.
    """
    from dataclasses import replace

    from pixgen.apps.clip_tools import ensemble_score

    t0 = time.perf_counter()
    if len(seeds) == 1:
        r = run_or_resume(replace(settings, seed=seeds[0]), models, job_dir, hooks)
        t1 = time.perf_counter()
        score = ensemble_score(models, r.image, settings.prompt)
        record = json.loads((job_dir / "run.json").read_text())
        write_json(job_dir / "run.json", dict(record, clip_score=score))
        seconds = r.seconds + time.perf_counter() - t1  # the run's own time (all its parts, when resumed)
        return {"image": r.image, "seed": r.seed, "score": score, "seconds": seconds, "candidates": []}
    job_dir.mkdir(parents=True, exist_ok=True)
    ranked, runs_wall, runs_seconds = [], 0.0, 0.0
    for seed in seeds:
        t1 = time.perf_counter()
        r = run_or_resume(replace(settings, seed=seed), models, job_dir / "candidates" / f"seed-{seed}", hooks)
        runs_wall, runs_seconds = runs_wall + time.perf_counter() - t1, runs_seconds + r.seconds
        ranked.append({"seed": seed, "image": r.image, "score": ensemble_score(models, r.image, settings.prompt)})
    ranked.sort(key=lambda c: -c["score"])
    best = job_dir / "best.png"
    atomic_write(best, Path(ranked[0]["image"]).read_bytes())
    seconds = time.perf_counter() - t0 - runs_wall + runs_seconds  # each candidate's own time, earlier parts too
    record = {
        "prompt": settings.prompt,
        "seconds": seconds,
        "best": str(best),
        "ranking": [
            {"rank": i + 1, "seed": c["seed"], "clip_score": c["score"], "image": str(c["image"])}
            for i, c in enumerate(ranked)
        ],
    }
    write_json(job_dir / "run.json", record)
    return {
        "image": best,
        "seed": ranked[0]["seed"],
        "score": ranked[0]["score"],
        "seconds": seconds,
        "candidates": record["ranking"],
    }


def check_candidates(count: int) -> None:
    if not 1 <= count <= MAX_CANDIDATES:
        raise PixgenError(f"--candidates must be between 1 and {MAX_CANDIDATES}, got {count}")


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3]: distinct non-negative integers, or a PixgenError."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PixgenError(f"--seeds expects integers separated by commas, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise PixgenError(f"--seeds expects distinct non-negative integers, got {text!r}")
    if len(seeds) > MAX_CANDIDATES:
        raise PixgenError(f"--seeds: at most {MAX_CANDIDATES} seeds, got {len(seeds)}")
    return seeds


def generate_candidates(
    settings,
    count: int = 1,
    seeds: list[int] | None = None,
    hooks: Hooks | None = None,
) -> tuple[Path, dict]:
    """Best of N: `count` images (seeds seed..seed+count-1, or `seeds`) in a new job folder,
    ranked by CLIP score; returns the folder and what `run_candidates` reports."""
    from pixgen.api import prepare
    from pixgen.outputs.writer import make_run_dir

    check_candidates(count)
    run = prepare(settings, hooks=hooks)
    seeds = seeds or [run.settings.seed + i for i in range(count)]
    job_dir = make_run_dir(settings.output_dir, settings.prompt)
    job_dir.rmdir()  # run_candidates creates it, with candidates/ inside
    return job_dir, run_candidates(settings, run.models, job_dir, seeds, hooks)


def job_record(job_dir: Path) -> dict | None:
    """A job's (or run's) run.json, checked against its schema (pixgen.outputs.writer.check_run_record);
    None when there is none. A damaged or foreign one is one PixgenError line naming it."""
    if not (Path(job_dir) / "run.json").exists():
        return None
    return read_run_record(Path(job_dir) / "run.json")


def job_finished(job_dir: Path) -> bool:
    """A job (or run) is finished when its run.json exists, is well formed and says neither that
    it is under way (the manifest a run writes at its start) nor that it was interrupted."""
    try:
        record = job_record(job_dir)
    except PixgenError:
        return False
    return record is not None and run_finished(record)


def run_or_resume(settings, models, run_dir: Path, hooks: Hooks | None = None):
    """One run of a batch job into `run_dir` (an api.Result): the finished run found there; or
    the interrupted one continued from its saved state (after Ctrl-C, SIGTERM or kill -9:
    bit-identical to an uninterrupted run, as `pixgen resume`); or, failing those, a new run."""
    from pixgen.api import Result, generate, resume

    record = job_record(run_dir)  # a damaged one fails the job and keeps the folder
    if record is not None and "settings" not in record:
        raise PixgenError(f"{run_dir / 'run.json'} is a job of candidates, not one run; move the folder away")
    if record is not None and run_finished(record):
        return Result(run_dir, run_dir / "final.png", record["settings"]["seed"], record.get("seconds") or 0.0)
    if record is not None and _resumable(record, run_dir, settings):
        log.info("resuming %s from its saved state", run_dir)
        return resume(run_dir, models=models, hooks=hooks)
    if run_dir.exists():  # an attempt that saved no state (or of other settings): start it again
        shutil.rmtree(run_dir)
    return generate(settings, models=models, run_dir=run_dir, hooks=hooks)


def _resumable(record: dict, run_dir: Path, settings) -> bool:
    """An earlier attempt at these very settings (its checked run.json: `record`) left a state to
    go on from."""
    from pixgen.drawers import drawer_class

    recorded = record["settings"]
    resolved = ("size", "threads")  # filled in when the run was prepared (fitted size, thread count used)
    mine = {k: v for k, v in settings.to_dict().items() if k not in resolved}
    mine["lr"] = (
        mine["lr"] if mine["lr"] is not None else drawer_class(settings.drawer).lr
    )  # so was the learning rate, when it was left to the drawer
    return (run_dir / "state.safetensors").is_file() and all(recorded.get(k) == v for k, v in mine.items())


def run_batch(
    path: str | Path,
    output_dir: str | Path,
    make_settings: Callable[[dict], object],
    resume: bool = False,
    shard: str | None = None,
    candidates: int = 1,
    on_job: Callable | None = None,
    hooks: Hooks | None = None,
) -> list[JobResult]:
    """Run every job of a prompt file (this shard's share), loading each model pair once.

    `make_settings(job_overrides)` layers a job's own settings over the batch's. A bad job is
    reported with its line and skipped; Ctrl-C stops after writing what is finished: a stop asked
    for is honoured before each job, whatever became of the last one (done, skipped or failed),
    with Interrupted(STOPPED_BETWEEN_JOBS).
    """
    jobs = read_jobs(path)
    k, n = parse_shard(shard)
    if k >= len(jobs):
        raise PixgenError(f"--shard {k}/{n}: the file has only {len(jobs)} job(s), none for shard {k}")
    check_candidates(candidates)
    out = Path(output_dir)
    mine = [j for j in jobs if j.index % n == k]
    check_fresh(out, mine, resume)
    loaded: dict[tuple, object] = {}
    results: list[JobResult] = []
    try:
        for job in mine:
            if hooks is not None and hooks.stop_requested():
                raise Interrupted(STOPPED_BETWEEN_JOBS)
            known = triage(job, out / job.name, resume)
            results.append(known or run_job(job, out / job.name, make_settings, loaded, candidates, hooks or Hooks()))
            if on_job:
                on_job(results[-1], len(mine))
    finally:
        if results:
            update_gallery(out, {j.name for j in jobs})
    return results


def update_gallery(out: Path, names: set[str] | None = None) -> None:
    """index.html and contact_sheet.png of every finished job in the folder (of the job folders
    `names`, the batch file's, when given), whichever shard ran it, built from what is on disk
    under a file lock: shards finishing at once never lose a job."""
    from filelock import FileLock

    from pixgen.outputs.writer import write_gallery

    with FileLock(str(Path(out) / ".gallery.lock")):
        write_gallery(Path(out), finished_jobs(Path(out), names))


def finished_jobs(out: Path, names: set[str] | None = None) -> list[JobResult]:
    """The finished jobs of a batch folder, in job order (numerically), from their run.json
    files; with `names`, only those job folders (a line edited since: its old folder is left
    out). A damaged run.json is left out with a warning, never fatal."""
    found = []
    for job_dir in Path(out).iterdir():
        number = re.match(r"(\d{4,})-", job_dir.name)
        if not number or not job_dir.is_dir() or (names is not None and job_dir.name not in names):
            continue
        try:
            record = job_record(job_dir)
        except PixgenError as e:
            log.warning("%s; left out of the gallery", e)
            continue
        if record is not None and run_finished(record):
            found.append(
                (int(number[1]), job_dir.name, _finished_result(Job(int(number[1]) - 1, 0, {}), job_dir, record))
            )
    return [result for _, _, result in sorted(found, key=lambda t: t[:2])]


def check_fresh(out: Path, jobs: list[Job], resume: bool) -> None:
    """Without --resume, a job folder already there is an error (nothing written is ever redone
    unasked)."""
    if not resume:
        existing = [j.name for j in jobs if (out / j.name).exists()]
        if existing:
            raise PixgenError(
                f"{out / existing[0]} already exists; pass --resume to skip finished jobs "
                "and redo unfinished ones, or choose another --output-dir"
            )


def triage(job: Job, job_dir: Path, resume: bool) -> JobResult | None:
    """What a job's line and folder settle before it runs: failed (a bad line, or with --resume
    a damaged run.json, whose folder stays), skipped (finished before, with --resume); or None,
    to run (or go on with) it."""
    if "__error__" in job.overrides:
        return JobResult(job, "failed", error=f"line {job.line}: {job.overrides['__error__']}")
    try:
        record = job_record(job_dir) if resume else None
    except PixgenError as e:  # a damaged or foreign run.json: this job fails, its folder stays
        return JobResult(job, "failed", error=f"line {job.line}: {e}; move the folder away")
    if record is not None and run_finished(record):
        return _finished_result(job, job_dir, record)
    return None


def models_key(settings) -> tuple:
    """The settings that decide which models a job loads: jobs with the same key share them."""
    from pixgen.settings import loads_vqgan

    return (
        loads_vqgan(settings),  # the other drawers load no VQGAN, unless for the prior start
        settings.vqgan,
        tuple(settings.clip),
        settings.vqgan_config,
        settings.vqgan_ckpt,
        settings.device,
        settings.precision,
    )


def load_job_models(settings, loaded: dict, hooks: Hooks):
    """The models of a job with these settings: from `loaded` (by `models_key`), else loaded and
    kept there."""
    from pixgen.api import prepare

    key = models_key(settings)
    loading = Hooks(should_stop=hooks.should_stop, offline=hooks.offline)  # no status line while loading
    loaded[key] = prepare(settings, loaded.get(key), loading).models
    return loaded[key]


def run_job(job, job_dir, make_settings, loaded, candidates: int, hooks: Hooks) -> JobResult:
    """One job: its settings, its models (loaded once per distinct set in `loaded`), its candidates."""
    try:
        settings = make_settings(job.overrides)
    except PixgenError as e:
        return JobResult(job, "failed", error=f"line {job.line}: {e}")
    try:
        models = load_job_models(settings, loaded, hooks)
        seed = job_seed(settings.seed, job)
        seeds = [seed + i for i in range(candidates)]
        info = run_candidates(settings, models, job_dir, seeds, hooks)
    except PixgenError as e:
        return JobResult(job, "failed", error=f"line {job.line}: {e}")
    return JobResult(
        job, "done", info["image"], info["seed"], info["score"], info["seconds"], candidates=info["candidates"]
    )


def _finished_result(job: Job, job_dir: Path, record: dict) -> JobResult:
    """A finished job's result from its checked run.json `record` (its prompt too, when `job`
    lacks it)."""
    job.overrides.setdefault("prompt", record.get("prompt") or record.get("settings", {}).get("prompt", ""))
    seconds = record.get("seconds") or 0.0
    if "ranking" in record:
        best = record["ranking"][0]
        return JobResult(job, "skipped", job_dir / "best.png", best["seed"], best["clip_score"], seconds)
    return JobResult(
        job, "skipped", job_dir / "final.png", record["settings"]["seed"], record.get("clip_score"), seconds
    )
