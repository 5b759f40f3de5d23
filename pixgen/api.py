"""The library API: ``generate(settings) -> Result``, the one orchestrator of a run."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pixgen._version import __version__
from pixgen.errors import PixgenError
from pixgen.settings import Settings

log = logging.getLogger("pixgen")

LOW_MEMORY_CHUNK = 8  # cutouts per CLIP forward and backward with --low-memory


@dataclass
class Result:
    run_dir: Path
    image: Path
    seed: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False


def fit_size(settings: Settings, factor: int) -> tuple[int, int]:
    """Round the size down to a multiple of the VQGAN factor, warning when it changes."""
    w, h = settings.size
    fw, fh = w - w % factor, h - h % factor
    if fw == 0 or fh == 0:
        raise PixgenError(f"setting 'size': {w}x{h} is smaller than this VQGAN's factor {factor}")
    if (fw, fh) != (w, h):
        log.warning("size %dx%d is not a multiple of %d; using %dx%d", w, h, factor, fw, fh)
    return fw, fh


def estimate_bytes(models, width: int, height: int, cutn: int, low_memory: bool = False) -> int:
    """A rough peak-memory estimate for one step: decoder activations plus CLIP's per cutout.
    `low_memory` keeps about a quarter of the decoder's (checkpointing) and CLIP's for one batch
    of `LOW_MEMORY_CHUNK` cutouts (measured at 256x256, cutn 32: BENCHMARKS.md)."""
    arch = models.decoder.arch
    dd = arch.ddconfig
    levels = len(dd["ch_mult"])
    latent_px = (width // arch.factor) * (height // arch.factor)
    floats = 0
    for i, mult in enumerate(dd["ch_mult"]):
        px = latent_px * 4 ** (levels - 1 - i)
        floats += (dd["num_res_blocks"] + 1) * 8 * dd["ch"] * mult * px  # tensors kept for backward
    if low_memory:
        floats //= 4
    clip_floats = 0
    for scorer in models.scorers:
        visual = scorer.model.visual
        width_v = getattr(visual, "width", None) or 768
        layers = len(getattr(getattr(visual, "transformer", None), "resblocks", [])) or 12
        patch = getattr(visual, "patch_size", (32, 32))
        patch = patch[0] if isinstance(patch, tuple | list) else patch
        tokens = (scorer.input_size // patch) ** 2 + 1
        clip_floats += cutn * tokens * width_v * layers * 24
    floats += clip_floats * min(cutn, LOW_MEMORY_CHUNK) // cutn if low_memory else clip_floats
    params = sum(p.numel() for m in [models.decoder, *models.scorers] for p in m.parameters())
    return 4 * (floats + params)


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(models, width: int, height: int, cutn: int, device: torch.device, low_memory: bool = False) -> None:
    """Refuse, naming what would fit, a run estimated not to fit in free memory."""
    need, have = estimate_bytes(models, width, height, cutn, low_memory), available_bytes(device)
    if have is None or need <= have:
        return
    side = max(width, height)
    while side > models.decoder.factor and estimate_bytes(models, side, side, cutn, low_memory) > have:
        side = int(side * 0.8)
    hint = f"about {side}x{side} would fit"
    if not low_memory and estimate_bytes(models, width, height, cutn, True) <= have:
        hint = "--low-memory would fit it (slower), or " + hint
    raise PixgenError(
        f"setting 'size': {width}x{height} with cutn {cutn} needs about {need / 2**30:.1f} GiB but "
        f"only {have / 2**30:.1f} GiB is free; {hint} (--force runs it anyway)"
    )


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(
    settings: Settings,
    models=None,
    on_step: Callable | None = None,
    run_dir: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    force: bool = False,
    on_status: Callable[[str], None] | None = None,
) -> Result:
    """Run one generation and save its outputs; returns where they are.

    `models` (pixgen.models.Models) can be passed to reuse loaded models across runs.
    `on_step(step, total)` is called after every step, for progress display.
    `run_dir` names the run folder (it must not exist yet); by default a new dated folder.
    `should_stop()` is asked after every step; when it says yes the run saves what it has
    (final.png marked interrupted, the GIF so far, state.safetensors) and raises Interrupted.
    `force` skips the memory check that refuses runs estimated not to fit.
    `on_status(text)` hears what the run is doing before its first step (loading, encoding).
    """
    from pixgen.device import resolve_device, resolve_seed
    from pixgen.models import load_models
    from pixgen.outputs import RunWriter, make_run_dir
    from pixgen.prompts import parse_prompts

    t_start = time.perf_counter()
    prompts = parse_prompts(settings.prompt)
    device = resolve_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed = resolve_seed(settings.seed)
    if models is None:
        from pixgen.weights import check_models

        check_models(settings.vqgan, settings.clip, settings.vqgan_config, settings.vqgan_ckpt)
        models = load_models(
            settings.vqgan, settings.clip, device, settings.vqgan_config, settings.vqgan_ckpt, on_status
        )
    width, height = fit_size(settings, models.decoder.factor)
    if not force:
        check_memory(models, width, height, settings.cutn, device, settings.low_memory)
    resolved = dict(
        settings.to_dict(),
        size=[width, height],
        seed=seed,
        prompts=[p.to_dict() for p in prompts],
        pixgen_version=__version__,
    )
    if run_dir is None:
        run_dir = make_run_dir(settings.output_dir, settings.prompt)
    else:
        try:
            Path(run_dir).mkdir(parents=True)
        except OSError as e:
            raise PixgenError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    if on_status:
        on_status("encoding prompts…")
    loop = _make_loop(settings_from_record(resolved), models)
    return _drive(
        loop,
        RunWriter(run_dir, resolved),
        settings_from_record(resolved),
        models,
        device,
        on_step,
        should_stop,
        t_start,
        {},
    )


def resume(
    run_dir: str | Path,
    models=None,
    on_step: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Result:
    """Continue an interrupted run in its own folder to its planned number of steps.

    On the same device and precision the result is bit-identical to an uninterrupted run.
    """
    import json

    from pixgen.device import resolve_device
    from pixgen.models import load_models
    from pixgen.outputs import RunWriter
    from pixgen.state import load_state

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "run.json").read_text())
        resolved = record["settings"]
    except FileNotFoundError:
        raise PixgenError(f"{run_dir} is not a pixgen run folder (no run.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PixgenError(f"{run_dir / 'run.json'} is unreadable: {e}") from None
    state = load_state(run_dir / "state.safetensors")
    settings = settings_from_record(resolved)
    if int(state["step"]) >= settings.iterations:
        raise PixgenError(f"{run_dir} is already complete ({settings.iterations} steps)")
    device = resolve_device(settings.device)
    if models is None:
        models = load_models(
            settings.vqgan, settings.clip, device, settings.vqgan_config, settings.vqgan_ckpt, on_status
        )
    if on_status:
        on_status("encoding prompts…")
    loop = _make_loop(settings, models)
    loop.load_state_dict(state)
    writer = RunWriter(run_dir, resolved)
    writer.frames = sorted(p for p in (run_dir / "frames").glob("*.png") if int(p.stem) <= loop.step)
    done = loop.step
    previous = {k: record.get(k, [])[:done] for k in ("losses", "seconds_per_step")}
    return _drive(loop, writer, settings, models, device, on_step, should_stop, t_start, previous)


def _make_loop(settings: Settings, models, start=None):
    """Build the run's Loop: initial latent, one CLIP term per ensemble member (its targets and
    cutouts), regularisers, and the zoom/pan step when the zoom video mode is on. `start`, a
    (latent, image in [0, 1]) pair, replaces the initial latent and init image (pixgen.restyle)."""
    from pixgen.cutouts import Cutouts
    from pixgen.device import resolve_precision, seed_everything
    from pixgen.init import encode, initial_image, load_encoder_for
    from pixgen.optimise import ClipTerm, Loop, init_latent, pick_start
    from pixgen.targets import build_schedule

    width, height = settings.size
    set_low_memory(models, settings.low_memory)
    if settings.compile:
        compile_models(models)
    generator = seed_everything(settings.seed)
    z = init_latent(models.decoder, width, height, generator, settings.init)
    init_image = initial_image(settings, width, height, generator)
    device = models.decoder.codebook.device
    zooming = zoom_active(settings)
    encoder = load_encoder_for(settings).to(device) if init_image is not None or zooming else None
    if init_image is not None:
        init_image = init_image.to(device)
        z = encode(encoder, init_image)[..., : z.shape[-2], : z.shape[-1]].contiguous()
    if start is not None:
        z, init_image = start[0][..., : z.shape[-2], : z.shape[-1]].contiguous(), start[1].to(device)
    terms = [
        ClipTerm(
            scorer,
            Cutouts(
                scorer.input_size, settings.cutn, settings.cut_pow, settings.cut_min, settings.augment, settings.noise
            ),
            build_schedule(settings, scorer),
            weight,
            chunk=LOW_MEMORY_CHUNK if settings.low_memory else 0,
            distance=settings.clip_loss,
        )
        for scorer, weight in zip(models.scorers, models.clip_weights, strict=True)
    ]
    if init_image is None and settings.init_draws > 1:
        starts = [z] + [
            init_latent(models.decoder, width, height, generator, settings.init) for _ in range(settings.init_draws - 1)
        ]
        z = pick_start(models.decoder, terms, starts, generator)
    zoom = None
    if zooming:
        from pixgen.zoom import Zoom

        zoom = Zoom(models.decoder, encoder, settings.zoom_scale, settings.zoom_shift, settings.zoom_rotate)
    return Loop(
        models.decoder,
        terms,
        z,
        generator,
        settings.lr,
        regulariser(settings, z.detach().clone(), init_image),
        settings.optimizer,
        settings.lr_schedule,
        settings.iterations,
        clip_dtype=resolve_precision(settings.precision, device),
        zoom=zoom,
        zoom_every=settings.zoom_every,
        coarse_until=settings.iterations // 2 if settings.schedule == "progressive" else 0,
        save_best=settings.save_best,
        ema=settings.ema,
    )


def set_low_memory(models, on: bool) -> None:
    """Activation checkpointing in the decoder's residual blocks (with `LOW_MEMORY_CHUNK`
    cutouts per CLIP pass, set on the loop's terms): about 1.2 GB less at 256x256, cutn 32,
    for about 1.2x the time per step (BENCHMARKS.md)."""
    models.decoder.checkpoint_levels = len(models.decoder.arch.ddconfig["ch_mult"]) if on else 0


def compile_models(models) -> None:
    """torch.compile the decoder and each CLIP image tower, in place (once). The first step then
    pays the compile time (run.json: seconds_per_step[0]); see BENCHMARKS.md for when it pays off."""
    for module in [models.decoder, *(s.model.visual for s in models.scorers)]:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile()


def zoom_active(settings: Settings) -> bool:
    """The zoom/pan video mode is on when any of its movements is."""
    return settings.zoom_scale != 1 or any(settings.zoom_shift) or settings.zoom_rotate != 0


def regulariser(settings: Settings, z0, init_image):
    """The weighted sum of the enabled regularisers, as one function of (image, z), or None."""
    from pixgen import losses
    from pixgen.ops import resize_like
    from pixgen.settings import parse_palette

    terms = []
    if settings.tv_weight:
        terms.append(lambda image, z: settings.tv_weight * losses.total_variation(image))
    if settings.saturation_weight:
        terms.append(lambda image, z: settings.saturation_weight * losses.saturation(image))
    if settings.symmetry != "none" and settings.symmetry_weight:
        terms.append(lambda image, z: settings.symmetry_weight * losses.symmetry(image, settings.symmetry))
    if settings.palette and settings.palette_weight:
        colours = torch.tensor(parse_palette(settings.palette))
        terms.append(lambda image, z: settings.palette_weight * losses.palette_distance(image, colours))
    # resize_like: in the coarse part of the progressive schedule z and the image are half size
    if settings.init_weight:
        terms.append(lambda image, z: settings.init_weight * losses.latent_anchor(z, resize_like(z0, z)))
    if settings.init_pixel_weight and init_image is not None:
        terms.append(
            lambda image, z: settings.init_pixel_weight * (image - resize_like(init_image, image)).abs().mean()
        )
    if not terms:
        return None
    return lambda image, z: sum(term(image, z) for term in terms)


class Interrupted(Exception):
    """A run stopped on request after saving its work; args[0] is the Result (exit code 130)."""


def _drive(
    loop, writer, settings: Settings, models, device, on_step, should_stop, t_start: float, previous: dict
) -> Result:
    """Run the loop to the planned step count, saving frames and state; finish the outputs."""
    from pixgen.optimise import NumericalFailure, render
    from pixgen.state import save_state

    losses = list(previous.get("losses", []))
    step_seconds = list(previous.get("seconds_per_step", []))
    interrupted, failure = False, None
    t_loop = time.perf_counter()
    try:
        for step in loop.run(settings.iterations):
            losses.append(step.loss)
            step_seconds.append(step.seconds)
            writer.video_step(step.i, step.image)
            if settings.save_every and step.i % settings.save_every == 0:
                writer.frame(step.i, step.image)
                save_state(writer.run_dir / "state.safetensors", loop.state_dict(), settings.iterations)
            if on_step:
                on_step(step, settings.iterations)
            if should_stop and should_stop() and step.i < settings.iterations:
                interrupted = True
                break
    except KeyboardInterrupt:  # no signal handler installed (library use): keep what we have
        interrupted = True
    except NumericalFailure as e:
        failure = e
    with torch.no_grad():
        final = render(models.decoder, loop.good if failure else loop.result())
    if interrupted:
        save_state(writer.run_dir / "state.safetensors", loop.state_dict(), settings.iterations)
    record = {
        "steps_done": loop.step,
        "losses": losses,
        "seconds_per_step": step_seconds,
        "startup_seconds": t_loop - t_start,
        "seconds": time.perf_counter() - t_start,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "clip_dtype": str(loop.clip_dtype or torch.float32).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }
    if failure:
        record["error"] = str(failure)
    image = writer.finish(final, record, settings.gif, interrupted, settings.video, settings.fps)
    result = Result(writer.run_dir, image, settings.seed, record["seconds"], losses, interrupted)
    if failure:
        raise failure
    if interrupted:
        raise Interrupted(result)
    return result


def settings_from_record(data: dict) -> Settings:
    """Settings from a saved dict (run.json, PNG metadata), ignoring the extra recorded keys."""
    import dataclasses

    from pixgen.settings import load_settings

    known = {f.name for f in dataclasses.fields(Settings)}
    return load_settings(overrides={k: v for k, v in data.items() if k in known})


def clip_score(scorer, image_path: Path, prompt: str) -> float:
    """How well an image matches a prompt: the weighted mean CLIP cosine similarity to its parts."""
    from pixgen.clip_tools import embed_images
    from pixgen.images import open_rgb
    from pixgen.prompts import parse_prompts

    prompts = parse_prompts(prompt)
    sims = embed_images(scorer, [open_rgb(image_path)]) @ scorer.encode_text([p.text for p in prompts]).float().cpu().T
    weights = torch.tensor([p.weight for p in prompts])
    return float((sims[0] * weights).sum() / weights.abs().sum())


def ensemble_score(models, image_path: Path, prompt: str) -> float:
    """`clip_score` averaged over the run's CLIP models by their ensemble weights."""
    total = sum(models.clip_weights)
    return sum(
        w / total * clip_score(scorer, image_path, prompt)
        for scorer, w in zip(models.scorers, models.clip_weights, strict=True)
    )


def settings_from_png(path: Path, **overrides) -> Settings:
    """The settings a pixgen PNG was made with, ready to run again."""
    from pixgen.outputs import read_png_metadata

    meta = read_png_metadata(path)
    if "prompt" not in meta:
        raise PixgenError(f"{path}: its pixgen settings lack a prompt")
    return settings_from_record(dict(meta, **{k: v for k, v in overrides.items() if v is not None}))
