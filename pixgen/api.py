"""The library API: ``generate(settings) -> Result``, the one orchestrator of a run.

A run is resolved once into a `Run` (device, seed, fitted size, parsed prompts, loaded models)
and everything below reads it: `generate`, `resume`, the candidates and the batch jobs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pixgen import allocator
from pixgen._version import __version__
from pixgen.drawers import declared_settings, drawer_class
from pixgen.errors import Aborted, Interrupted, NumericalFailure, PixgenError
from pixgen.files import atomic_write
from pixgen.loop.course import Course
from pixgen.loop.cutouts import Cutouts
from pixgen.loop.losses import regulariser
from pixgen.loop.optimise import ClipTerm, Loop, Objective, lr_schedule
from pixgen.loop.prompts import PromptPlan
from pixgen.loop.story import Story, phase_spans
from pixgen.loop.targets import build_schedule
from pixgen.models.loading import load_models
from pixgen.needs import check_run
from pixgen.outputs.state import check_state, load_state, save_state
from pixgen.outputs.writer import (
    RunWriter,
    check_png_settings,
    make_run_dir,
    read_png_metadata,
    read_run_record,
    run_finished,
)
from pixgen.phases import Hooks, Phase
from pixgen.runtime import memory
from pixgen.runtime.device import resolve_device, resolve_seed, seed_everything
from pixgen.runtime.environment import environment, warn_if_not_reproducible
from pixgen.runtime.memory import Levers, available_bytes, check_memory, estimate_bytes, peak_memory_mb
from pixgen.runtime.precision import resolve_precision
from pixgen.settings import (
    FIELDS,
    Settings,
    load_settings,
    loads_vqgan,
    parse_bytes,
    prior_start_on,
    zoom_on,
)
from pixgen.starts.candidates import picture_weights
from pixgen.starts.make import make_start, ready_to_fit

log = logging.getLogger("pixgen")

__all__ = [
    "Result",
    "Run",
    "Hooks",
    "Phase",
    "generate",
    "resume",
    "prepare",
    "Interrupted",
    "estimate_bytes",
    "check_fits",
]


@dataclass
class Result:
    run_dir: Path
    image: Path
    seed: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False
    skipped: list[str] = field(default_factory=list)  # outputs a stop left unwritten (the GIF, the MP4)


@dataclass
class Run:
    """A run resolved once: `settings` with the seed drawn and the size fitted to the VQGAN,
    the parsed prompts, the device and the loaded models."""

    settings: Settings
    plan: PromptPlan
    device: torch.device
    models: object  # pixgen.models.loading.Models
    precision: object = None  # pixgen.runtime.precision.Precision, applied to the models
    start: dict = field(default_factory=dict)  # how a drawn start was chosen (--init prior), for run.json
    levers: Levers | None = None  # the memory levers make_loop chose (pixgen.runtime.memory)
    memory_checked: bool = False  # the estimate was checked before the models loaded (prepare)

    def record(self) -> dict:
        """The resolved settings as written beside every output (run.json, PNG metadata), with
        the environment the pixels depend on (device, threads, torch, CPU capability)."""

        record = dict(self.settings.to_dict(), prompts=self.plan.record(), pixgen_version=__version__)
        env = environment(self.device)
        if self.precision is not None:  # what `auto` became here: reproduce runs it again, whatever it says then
            env["precision"] = self.precision.name
        return dict(record, environment=env)


def fit_size(settings: Settings, factor: int | tuple[int, int], warn: bool = True) -> tuple[int, int]:
    """Round the size down to a multiple of the drawer's factor (the VQGAN's), warning when it
    changes (unless not `warn`)."""
    w, h = settings.size
    fx, fy = factor if isinstance(factor, tuple) else (factor, factor)
    fw, fh = w - w % fx, h - h % fy
    vqgan = drawer_class(settings.drawer).needs_vqgan
    what = f"this VQGAN's factor {fx}" if vqgan else f"the {settings.drawer} drawer's {fx}x{fy}"
    if fw == 0 or fh == 0:
        raise PixgenError(f"setting 'size': {w}x{h} is smaller than {what}")
    if (fw, fh) != (w, h) and warn:
        log.warning("size %dx%d is not a multiple of %s; using %dx%d", w, h, what, fw, fh)
    return fw, fh


def max_threads() -> int:
    """At most 8 threads per core: beyond that, oversubscribed, every step would crawl."""
    import os

    return 8 * (os.cpu_count() or 1)


def check_threads(threads: int) -> None:
    """Refuse more threads than `max_threads`."""
    if threads > max_threads():
        raise PixgenError(f"setting 'threads': {threads} threads is too many here (at most {max_threads()})")


def memory_need(settings: Settings, models, device: torch.device, libraries: bool = True):
    """need(levers) -> the run's estimated peak in bytes (pixgen.runtime.memory.estimate_bytes):
    the models, the VQGAN's activations, CLIP's cutouts, the drawer's own work (the lines
    drawer's strokes), the prior start's prior and cache, the video encoder. `libraries`: count
    the libraries a CPU process holds (what a budget covers; free memory is counted without them)."""
    parts, here = _memory_parts(settings, models, device), _levers_here(settings, models, device)
    return lambda levers: estimate_bytes(parts(here(levers)), libraries)


def _levers_here(s: Settings, models, device: torch.device):
    """levers -> what a run on `device` does with them: on a CPU, CLIP scores its cutouts in
    chunks where all at once would keep too much (memory.cpu_chunk: float32 ViT-B/32 at 32)."""
    if device.type != "cpu":
        return lambda levers: levers
    per_cutout = models.dtype.itemsize * sum(scorer.activation_floats() for scorer in models.scorers)
    return lambda levers: memory.cpu_chunk(levers, s.cutn, per_cutout)


def _memory_parts(s: Settings, models, device: torch.device):
    """parts(levers) -> the run's estimate part by part (pixgen.runtime.memory.estimate_parts)."""
    cls = drawer_class(s.drawer)
    extra = {"video": memory.VIDEO_BYTES} if s.video else {}
    if prior_start_on(s):
        extra["prior"] = _prior_need(s, models, device)
    work = lambda w, h: cls.work_floats(s, w, h)  # noqa: E731
    cpu = device.type == "cpu"
    return lambda levers: memory.estimate_parts(models, s.width, s.height, s.cutn, levers, work, extra, cpu)


def _prior_need(s: Settings, models, device: torch.device) -> int:
    """The prior start's prior (weights and one batch's key/value cache), by its architecture."""
    from pixgen.prior.registry import prior_arch
    from pixgen.prior.start import prior_name

    arch = prior_arch(prior_name(s), models.priors)
    if arch is None:
        return 0
    budget = parse_bytes(s.memory_budget) if s.memory_budget else None
    batch = memory.prior_batch(arch, models.dtype.itemsize, budget, s.prior_guidance != 1)
    return memory.prior_bytes(arch, min(batch, s.prior_samples), models.dtype.itemsize, s.prior_guidance != 1)


def run_levers(settings: Settings, models, device: torch.device) -> tuple[Levers, float]:
    """The memory levers of a run and their step time against none: the fastest that fit
    --memory-budget (or, on CUDA, the device's free memory), --low-memory's, else none. When no
    combination fits, the lightest (check_fits refuses such a run unless forced). On a CPU, CLIP
    scores its cutouts in chunks where all at once would keep too much (_levers_here)."""
    s, here = settings, _levers_here(settings, models, device)
    budget = parse_bytes(s.memory_budget) if s.memory_budget else None
    if budget is None and s.low_memory:
        return memory.LOW_MEMORY, dict(memory.LEVER_CHOICES)[memory.LOW_MEMORY]
    if budget is None and device.type == "cuda":
        budget = available_bytes(device)
    if budget is None:
        return here(Levers()), 1.0
    levers, cost = memory.choose_levers(memory_need(s, models, device), budget) or memory.LEVER_CHOICES[-1]
    return here(levers), cost


def memory_status(settings: Settings, models, device: torch.device) -> str:
    """The status line of a run's memory: its estimate, part by part, and the levers chosen."""
    s = settings
    levers, cost = run_levers(s, models, device)
    parts = _memory_parts(s, models, device)(levers)
    if "runtime" in parts:  # the process's own share (libraries, runtime), shown as one
        parts["process"] = parts.pop("libraries") + parts.pop("runtime")
    shown = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in parts.items() if v >= 2**20 * 10)
    slower = f", about {cost:.2f}x the step time" if cost > 1 else ""
    return f"memory: about {sum(parts.values()) / 2**30:.1f} GiB at the peak ({shown} GiB); {levers.words()}{slower}…"


def check_fits(settings: Settings, models, device: torch.device | None = None, hooks: Hooks | None = None) -> None:
    """Refuse, in one line naming what would fit, settings whose run is estimated not to fit in
    --memory-budget or in the free memory of `device` (by default the models'). generate() asks
    it before its first step and `pixgen serve` before it queues a job; `hooks` hear the estimate."""
    from pixgen.settings import flag_of

    s, cls = settings, drawer_class(settings.drawer)
    if device is None:
        device = next((p.device for m in models.modules for p in m.parameters()), torch.device("cpu"))
    if hooks:
        hooks.report(Phase.MEMORY, memory_status(s, models, device))
    levers, _ = run_levers(s, models, device)
    if s.memory_budget:
        need = memory_need(s, models, device)
        if memory.choose_levers(need, parse_bytes(s.memory_budget)) is None:
            least = memory.smallest_need(need) / 2**30
            raise PixgenError(
                f"setting 'memory_budget': {s.width}x{s.height} with cutn {s.cutn} needs at least about "
                f"{least:.1f} GiB with every lever ({memory.LOW_MEMORY.words()}); give --memory-budget "
                f"{least + 0.05:.1f}G or more, a smaller size or fewer cutouts (--force runs it anyway)"
            )
    words = f"setting 'size': {s.width}x{s.height} with cutn {s.cutn}"
    drawer_words = f"{cls.title} ({', '.join(flag_of(key) for key in declared_settings(cls))})"
    need = memory_need(s, models, device, libraries=False)
    check_memory(
        need, levers, available_bytes(device), words, lambda have: _fits_hint(s, models, device, have, drawer_words)
    )


def _fits_hint(s: Settings, models, device: torch.device, have: int, drawer_words: str) -> str:
    """What would fit in `have` bytes: a smaller size; first the drawer's settings when its own
    work is most of the estimate."""
    side = max(s.width, s.height)
    factor = models.decoder.factor if models.decoder is not None else 1
    levers, _ = run_levers(s, models, device)

    def need_at(side: int) -> int:
        return memory_need(replace(s, size=[side, side]), models, device, libraries=False)(levers)

    while side > factor and need_at(side) > have:
        side = int(side * 0.8)
    hint = f"about {side}x{side} would fit"
    drawing = 4 * drawer_class(s.drawer).work_floats(s, s.width, s.height)
    if drawing > memory_need(s, models, device, libraries=False)(levers) / 2:
        hint = f"{drawer_words} needs about {drawing / 2**30:.1f} GiB of it; " + hint
    return hint


def prepare(settings: Settings, models=None, hooks: Hooks | None = None, check: bool = False) -> Run:
    """Resolve a run once: prompts, device, threads, seed, precision, models (loaded unless given)
    and size. With `hooks.offline` a model that is not cached is an error at once, and every
    missing model is named in one error before anything loads; loading each model is a phase of
    `hooks` (a safe point). With `check`, a run that loads its models has its memory estimated
    and checked before they load (`check_fits` on their shapes: the first status line), when
    their architectures are known by then (Run.memory_checked)."""

    hooks = hooks or Hooks()
    plan = check_run(settings)
    device = resolve_device(settings.device)
    if settings.threads:
        check_threads(settings.threads)
        torch.set_num_threads(settings.threads)
    settings = replace(settings, threads=torch.get_num_threads())  # the count used, recorded for reproduce
    seed = resolve_seed(settings.seed)
    precision = resolve_precision(settings.precision, device)
    checked = check and models is None and _check_before_loading(settings, device, precision, hooks)
    models = _models(settings, models, device, hooks)
    width, height = fit_size(settings, drawer_class(settings.drawer).size_factor(models.decoder))
    models.set_precision(precision)
    lr = settings.lr if settings.lr is not None else drawer_class(settings.drawer).lr
    run = Run(replace(settings, size=[width, height], seed=seed, lr=lr), plan, device, models, precision)
    run.memory_checked = checked
    return run


def _check_before_loading(settings: Settings, device: torch.device, precision, hooks: Hooks) -> bool:
    """check_fits on the shapes of the models the run will load (pixgen.models.loading.model_shapes),
    before any loads; False when their architectures are not known yet (a VQGAN not downloaded:
    the check then follows the loading)."""
    from pixgen.models.loading import model_shapes

    s = settings
    try:
        shapes = model_shapes(s.vqgan if loads_vqgan(s) else None, s.clip, s.vqgan_config, s.vqgan_ckpt)
    except PixgenError:  # the loading names what is wrong with the models, in its own words
        return False
    if shapes is None:
        return False
    shapes.set_precision(precision)
    size = fit_size(s, drawer_class(s.drawer).size_factor(shapes.decoder), warn=False)
    check_fits(replace(s, size=list(size)), shapes, device, hooks)
    return True


def _models(settings: Settings, models, device, hooks: Hooks):
    """The run's models: `models` when given, else loaded (the VQGAN only for the vqgan drawer, or
    for the prior start, whose codes it decodes before the best is fitted into the run's drawer)."""

    s, vqgan = settings, loads_vqgan(settings)
    if not vqgan:
        hooks.enter(Phase.NO_VQGAN, f"drawer {s.drawer}: no VQGAN needed…")
    if models is None:
        from pixgen.needs import check_models
        from pixgen.prior.start import prior_name

        prior = prior_name(s) if prior_start_on(s) else None
        vqgan_name = s.vqgan if vqgan else None
        check_models(vqgan_name, s.clip, s.vqgan_config, s.vqgan_ckpt, hooks.offline, prior)
        return load_models(vqgan_name, s.clip, device, s.vqgan_config, s.vqgan_ckpt, hooks.offline, hooks)
    if vqgan and models.decoder is None:
        drawn = drawer_class(s.drawer).needs_vqgan
        why = "'drawer': vqgan needs a VQGAN" if drawn else "'init': the prior start draws VQGAN codes"
        raise PixgenError(f"setting {why}, and these models were loaded without one")
    return models


def generate(
    settings: Settings, models=None, run_dir: Path | None = None, force: bool = False, hooks: Hooks | None = None
) -> Result:
    """Run one generation and save its outputs; returns where they are.

    `models` (pixgen.models.loading.Models) can be passed to reuse loaded models across runs.
    `run_dir` names the run folder (it must not exist yet); by default a new dated folder.
    `force` skips the memory check that refuses runs estimated not to fit.
    `hooks` (pixgen.phases.Hooks) hear the phases and the steps and may stop the run: asked after
    every step, a stop saves what the run has (final.png marked interrupted, the GIF so far,
    state.safetensors) and raises Interrupted; asked at a phase before the first step, the run
    stops there, writes nothing and raises Interrupted(None); while writing the outputs it writes
    final.png, state and run.json and skips the GIF and MP4 it has not begun (Result.skipped).
    """

    t_start = time.perf_counter()
    hooks = hooks or Hooks()
    run = prepare(settings, models, hooks, check=not force)
    run.models.owned = models is None  # this run's alone: it frees the text towers once they served
    s = run.settings
    if not force and not run.memory_checked:
        check_fits(s, run.models, run.device, hooks)
    if run_dir is None:
        run_dir = make_run_dir(s.output_dir, s.prompt)
    else:
        try:
            Path(run_dir).mkdir(parents=True)
        except OSError as e:
            raise PixgenError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    try:
        loop = make_loop(run, hooks=hooks)
    except Interrupted:
        _remove_if_empty(Path(run_dir))
        raise
    _release_text(run)
    writer = RunWriter(run_dir, run.record())
    writer.start()  # run.json from the start: the folder is resumable once a state is saved
    return _drive(run, loop, writer, hooks, t_start, {})


def _release_text(run: Run) -> None:
    """A run that loaded its own models frees CLIP's text towers once its loop is built (its
    prompts encoded, its start drawn): 0.1-0.2 GB less at the peak for ViT-B/32 in bf16 (issue 32).
    Models given by the caller (batch, serve, candidates) keep theirs for the next run."""
    if run.models.owned:
        run.models.release_text()


def _remove_if_empty(folder: Path) -> None:
    """A run folder a stop left before anything was written in it goes."""
    try:
        folder.rmdir()
    except OSError:
        pass


def resume(run_dir: str | Path, models=None, hooks: Hooks | None = None) -> Result:
    """Continue an interrupted run in its own folder to its planned number of steps, from the
    state it saved last: at Ctrl-C or SIGTERM, or every `save_every` steps (so after a kill -9).
    `hooks` as for `generate`.

    On the same device, precision and thread count the result is bit-identical to an
    uninterrupted run.
    """

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    record = read_run_record(run_dir / "run.json")
    if "settings" not in record:
        raise PixgenError(f"{run_dir} holds a job of candidates, not one run: resume its candidates/seed-N folders")
    resolved = record["settings"]
    settings = settings_from_record(resolved)
    if run_finished(record):
        raise PixgenError(f"{run_dir} is already complete ({settings.iterations} steps)")
    state = load_state(run_dir / "state.safetensors")  # at the planned step (killed before the end): just finish
    hooks = hooks or Hooks()
    run = prepare(settings, models, hooks)
    run.models.owned = models is None
    loop = make_loop(run, hooks=hooks)
    _release_text(run)
    shapes = {tuple(loop.full_shape), tuple(loop.z.shape)}  # the progressive schedule's two sizes
    check_state(state, shapes, settings.iterations, run_dir / "state.safetensors")
    loop.load_state_dict(state)
    writer = RunWriter(run_dir, resolved)
    writer.frames = sorted(
        p for p in (run_dir / "frames").glob("*.png") if p.stem.isdigit() and int(p.stem) <= loop.step
    )
    previous = {k: record.get(k, [])[: loop.step] for k in ("losses", "seconds_per_step")}
    # the time the earlier part took: its total when it stopped in an orderly way, else its kept steps'
    earlier = record.get("seconds")
    previous["earlier_seconds"] = earlier if earlier is not None else sum(previous["seconds_per_step"])
    return _drive(run, loop, writer, hooks, t_start, previous)


def make_loop(run: Run, start=None, hooks: Hooks | None = None, drawer=None):
    """Build the run's course (pixgen.loop.course.Course): the Loop on its Objective (one CLIP term per
    ensemble member, the regularisers) and learning-rate schedule, and the restart events of the
    progressive schedule and the zoom video mode. `start`, a (tensor, image in [0, 1]) pair,
    replaces the start and the init image (pixgen.apps.restyle, which passes its `drawer` too). The
    phases (encoding prompts, loading the encoder, composing or drawing the start) are safe points
    of `hooks`."""

    s, models, hooks = run.settings, run.models, hooks or Hooks()
    run.levers, _ = run_levers(s, models, run.device)
    models.set_levers(run.levers)
    if s.compile:
        models.compile()
    generator = seed_everything(s.seed)
    drawer = drawer or make_run_drawer(run)
    hooks.enter(Phase.PROMPTS, "encoding prompts…")
    terms = clip_terms(run)
    begin = make_start(run, drawer, terms, generator, hooks, start)
    z, run.start = begin.z, begin.record
    if zoom_active(s):
        ready_to_fit(drawer, hooks)  # the zoom re-encodes through the drawer's fit
    objective = Objective(
        terms, generator, _regulariser(s, z.detach().clone(), begin.image), run.precision.autocast, tuple(z.shape)
    )
    coarse_until = s.iterations // 2 if s.schedule == "progressive" else 0
    first = drawer.halve(z) if coarse_until > 0 else z
    loop = Loop(
        drawer,
        objective,
        first,
        generator,
        s.lr,
        lr_schedule(s.lr_schedule, s.iterations),
        s.optimizer,
        save_best=s.save_best,
        ema=s.ema,
        speck_guard=s.speck_guard,
    )
    zoom = None
    if zoom_active(s):
        from pixgen.loop.specks import speck_count

        # under the guard, the re-encodings are tried for one without a speck (a drawer written
        # before the counter existed is called as it was)
        guard = {"specks": speck_count} if s.speck_guard else {}
        zoom = lambda z: drawer.zoom(z, s.zoom_scale, s.zoom_shift, s.zoom_rotate, **guard)  # noqa: E731
    story = None
    if begin.keyframes:  # story mode on the prior start: each phrase has its picture
        story = Story(begin.keyframes, phase_spans(len(run.plan.phases), s.change_prompt_every, s.iterations))
    return Course(loop, s.iterations, tuple(z.shape), coarse_until, zoom, s.zoom_every, story)


def make_run_drawer(run: Run):
    """The run's drawer on its models (the VQGAN's loads its encoder when a fit first needs it)."""
    return drawer_class(run.settings.drawer).from_settings(run.settings, run.models.decoder, run.device)


def _regulariser(s: Settings, z0: torch.Tensor, image: torch.Tensor | None):
    """The regularisers the settings turn on, as one function of (image, z), or None."""

    return regulariser(
        z0, image, **picture_weights(s), init_weight=s.init_weight, init_pixel_weight=s.init_pixel_weight
    )


def clip_terms(run: Run) -> list:
    """One ClipTerm per CLIP model of the ensemble: its cutouts, its targets, its weight."""

    s = run.settings
    chunk = (run.levers or run_levers(s, run.models, run.device)[0]).clip_chunk
    return [
        ClipTerm(
            scorer,
            Cutouts(scorer.input_size, s.cutn, s.cut_pow, s.cut_min, s.augment, s.noise, wrap=s.tile),
            build_schedule(scorer, run.plan, s.seed, s.change_prompt_every, s.iterations),
            weight,
            chunk=chunk,
            distance=s.clip_loss,
        )  # fmt: skip
        for scorer, weight in zip(run.models.scorers, run.models.clip_weights, strict=True)
    ]


def zoom_active(settings: Settings) -> bool:
    """The zoom/pan video mode is on when any of its movements is."""

    return zoom_on(settings)


def _drive(run: Run, loop, writer, hooks: Hooks, t_start: float, previous: dict) -> Result:
    """Run the loop to the planned step count, saving frames and state; finish the outputs.
    A stop (`hooks.should_stop`) is asked after every step and before each output is begun."""

    s = run.settings
    losses = list(previous.get("losses", []))
    step_seconds = list(previous.get("seconds_per_step", []))
    interrupted, failure = False, None
    t_loop = time.perf_counter()
    try:
        for step in loop.run(s.iterations):
            losses.append(step.loss)
            step_seconds.append(step.seconds)
            writer.video_step(step.i, step.image)
            if s.save_every and step.i % s.save_every == 0:
                writer.frame(step.i, step.image)
                writer.progress(step.i, losses, step_seconds)  # run.json first: it never runs ahead
                save_state(writer.run_dir / "state.safetensors", loop.state_dict(), s.iterations)
            if hooks.on_step:
                hooks.on_step(step, s.iterations)
            if hooks.stop_requested() and step.i < s.iterations:
                interrupted = True
                break
    except Aborted:  # a second Ctrl-C: out at once
        raise
    except KeyboardInterrupt:  # no signal handler installed (library use): keep what we have
        interrupted = True
    except NumericalFailure as e:
        failure = e
    with torch.no_grad():
        kept = loop.good if failure else loop.result()
        final = loop.drawer.render(kept)
        for name, data in loop.drawer.extras(kept).items():  # cells.png, final.svg
            atomic_write(writer.run_dir / name, data)
    if interrupted:
        save_state(writer.run_dir / "state.safetensors", loop.state_dict(), s.iterations)
    seconds = previous.get("earlier_seconds", 0.0) + time.perf_counter() - t_start  # a resumed run: both parts
    record = _record(run, loop, losses, step_seconds, t_loop - t_start, seconds)
    if failure:
        record["error"] = str(failure)
    # a stop during the steps keeps every output, as promised; one that comes later skips the renders
    stop = None if interrupted else hooks.stopping
    image = writer.finish(final, record, s.gif, interrupted, s.video, s.fps, stop=stop)
    result = Result(writer.run_dir, image, s.seed, record["seconds"], losses, interrupted, writer.skipped)
    if failure:
        raise failure
    if interrupted or writer.skipped:
        raise Interrupted(result)
    return result


def _record(run: Run, loop, losses: list, step_seconds: list, startup: float, seconds: float) -> dict:
    """What run.json records of a run beside its settings: steps, losses, times, memory (and the C
    allocator), precision and the environment the pixels depend on."""

    return {
        "steps_done": loop.step,
        "losses": losses,
        "seconds_per_step": step_seconds,
        "startup_seconds": startup,
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb(run.device),
        "allocator": allocator.in_use(),  # the `pixgen` command preloads tcmalloc where installed
        "device": str(run.device),
        "clip_dtype": str(loop.clip_dtype or run.precision.weights).removeprefix("torch."),
        **run.precision.record(),
        **({"start": run.start} if run.start else {}),
        "threads": torch.get_num_threads(),
        **environment(run.device),  # device and threads again, torch, cpu_capability
    }


def settings_from_record(data: dict) -> Settings:
    """Settings from a saved dict (run.json, PNG metadata), ignoring the extra recorded keys."""

    overrides = {k: v for k, v in data.items() if k in FIELDS}
    if isinstance(overrides.get("threads"), int) and overrides["threads"] > max_threads():
        overrides["threads"] = max_threads()  # recorded on a bigger machine: as many as this one allows
    return load_settings(overrides=overrides)


def settings_from_png(path: Path, **overrides) -> Settings:
    """The settings a pixgen PNG was made with, ready to run again (its recorded thread count
    included). Warns in one line when this machine cannot match the recorded environment."""

    meta = check_png_settings(read_png_metadata(path), path)
    # the new run goes where the user says (-o) or to the default folder, never where the file says
    meta.pop("output_dir", None)
    recorded = meta.get("environment", {})
    given = {k: v for k, v in overrides.items() if v is not None}
    if "device" not in given and recorded.get("device"):
        try:  # the recorded device, where this machine has it
            given["device"] = str(resolve_device(recorded["device"]))
        except PixgenError:
            pass
    if meta.get("precision") == "auto" and "precision" in recorded and "precision" not in given:
        given["precision"] = recorded["precision"]  # what auto chose then (checked as the setting is)
    settings = settings_from_record(dict(meta, **given))
    warn_if_not_reproducible(recorded, resolve_device(settings.device), settings.threads)
    return settings
