"""Every setting, declared once: its type, default, help text, choices, range, short flag and
help panel (pixgen.declare.setting); the drawers' own settings are gathered in from their files.
No torch."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pixgen.declare import (
    CUTOUTS,
    DRAWER,
    INIT,
    MAX_SIDE,
    MAX_STEPS,
    MODELS,
    OPTIMISER,
    OUTPUT,
    PERFORMANCE,
    PROMPTS,
    REGULARISERS,
    SIZE,
    VIDEO,
    setting,
)
from pixgen.drawers import declared_settings, drawer_classes, on_drawers_changed
from pixgen.errors import PixgenError

DEFAULT_CLIP = "ViT-B-32:openai"
# The choices of each named option. The tables that implement them (cutouts.AUGMENTATIONS,
# optimise.OPTIMIZERS, losses.DISTANCES, ...) import torch; a test checks that they match.
AUGMENTS = ("flip", "affine", "perspective", "jitter", "noise", "erasing", "sharpness")
INITS = ("tokens", "flat", "mean", "composed", "prior")
MAX_PRIOR_SAMPLES = 256  # code grids a learned prior draws for one start (pixgen.prior.start)
MAX_PRIOR_CODES = 1 << 20  # top-k beyond any VQGAN's codebook
MAX_PRIOR_CLASSES = 1000  # ImageNet's classes (pixgen.prior.classes)
INIT_FITS = ("cover", "contain", "stretch")
INIT_NOISES = ("pixels", "gradient", "perlin")
SILHOUETTES = ("disc", "box", "triangle", "diamond", "wide")  # pixgen.starts.composed
OPTIMIZERS = ("adam", "adamw", "adagrad", "rmsprop", "radam")
LR_SCHEDULES = ("constant", "step", "cosine", "plateau")
SYMMETRIES = ("none", "horizontal", "vertical", "both")
SCHEDULES = ("plain", "progressive")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLIP_LOSSES = ("spherical", "cosine")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Upper bounds of the settings that size work or memory (each declared with its setting below):
# a run's work before its first step never grows with them, and a typo cannot ask for years.
# MAX_SIDE and MAX_STEPS are in pixgen.declare, which the drawers declare their settings with too.
MAX_PROMPT_CHARS = 10_000  # the prompt text (pixgen.loop.prompts also bounds its parts and phases)


def _repeatable(help: str, metavar: str, max_items: int, flag: str | None = None) -> Any:
    """A prompt-like list setting whose flag is given once per item, at most `max_items` times."""
    return setting([], help, flag=flag, metavar=metavar, max_items=max_items, text="one", panel=PROMPTS)


class Settings:
    """Everything a run needs. Saved, resolved, beside every output.

    Its fields are those declared here and, after `drawer`, each registered drawer's own
    (pixgen.drawers): the dataclass is built by `_build_settings`, again when a drawer is registered."""

    prompt: str = setting("", 'What to draw, e.g. "a red house | a lake:0.5".', cli=False, panel=PROMPTS)
    size: list[int] = setting(
        [256, 256],
        "Image size in pixels, WIDTHxHEIGHT.",
        short="-s",
        metavar="WxH",
        lo=1,
        hi=MAX_SIDE,
        text="size",
        panel=SIZE,
    )
    iterations: int = setting(
        300, "Optimisation steps (0: none, the start is the image).", short="-i", lo=0, hi=MAX_STEPS, panel=SIZE
    )
    lr: float | None = setting(None, "", panel=OPTIMISER)  # its help: each drawer's default (_lr_setting)
    cutn: int = setting(32, "Cutouts scored by CLIP per step.", lo=1, hi=1024, panel=CUTOUTS)
    cut_pow: float = setting(1.0, "Cutout size exponent; >1 favours small cutouts.", lo=0, open_lo=True, panel=CUTOUTS)
    cut_min: float = setting(
        0.0, "Smallest cutout side, as a fraction of the image's (0-1).", lo=0, hi=1, panel=CUTOUTS
    )
    augment: list[str] = setting(
        ["flip", "affine", "perspective", "jitter", "noise"],
        "Comma list: " + ",".join(AUGMENTS) + ".",
        metavar="A,B,...",
        choices=AUGMENTS,
        max_items=2 * len(AUGMENTS),
        text="csv",
        panel=CUTOUTS,
    )
    noise: float = setting(0.1, 'Largest std of the gaussian noise augmentation ("noise").', lo=0, panel=CUTOUTS)
    negative: list[str] = _repeatable("Text to push away from (weight -1); repeatable.", "TEXT", 64)
    image_prompts: list[str] = _repeatable(
        "PATH[:weight]: steer toward an image; repeatable.", "PATH[:W]", 16, "--image-prompt"
    )
    noise_prompts: list[str] = _repeatable(
        "SEED[:weight]: a random CLIP direction; repeatable.", "SEED[:W]", 64, "--noise-prompt"
    )
    change_prompt_every: int = setting(
        0, 'Story mode ("a ^ b"): steps per phrase (0: spread evenly).', lo=0, hi=MAX_STEPS, panel=PROMPTS
    )
    init: str = setting(
        "tokens",
        "Start latent without an init image: tokens is random codes; composed is a plain"
        " background and a centred subject whose colours and shape CLIP picks; prior draws code"
        " grids from a learned prior (DALL-E style) and starts from the one CLIP ranks best.",
        choices=INITS,
        panel=INIT,
    )
    init_silhouettes: list[str] = setting(
        list(SILHOUETTES),
        "--init composed: the subject shapes tried (comma list: " + ",".join(SILHOUETTES) + ").",
        metavar="S,S,...",
        choices=SILHOUETTES,
        max_items=2 * len(SILHOUETTES),
        text="csv",
        panel=INIT,
    )
    init_jitter: bool = setting(False, "--init composed: the seed moves and sizes the subject.", panel=INIT)
    prior: str | None = setting(
        None,
        "--init prior: the prior over the VQGAN's codes, a registry name or a .safetensors file"
        " (default: the one trained with the VQGAN).",
        panel=INIT,
    )
    prior_samples: int = setting(
        16, "--init prior: code grids drawn; CLIP ranks them.", lo=1, hi=MAX_PRIOR_SAMPLES, panel=INIT
    )
    prior_rank: int = setting(
        1,
        "--init prior: start from the Nth best sample (pixgen sample records it).",
        lo=1,
        hi=MAX_PRIOR_SAMPLES,
        panel=INIT,
    )
    prior_speck_free: bool = setting(
        False,
        "--init prior: rank the samples whose picture has specks (a few pixels of no blend of its two"
        " main colours: for pictures of flat colours) after the rest; a region's subjects rank by"
        " loss alone.",
        panel=INIT,
    )
    prior_temperature: float = setting(1.0, "--init prior: sampling temperature.", lo=0, open_lo=True, panel=INIT)
    prior_top_k: int = setting(
        0, "--init prior: draw from the K likeliest codes (0: all).", lo=0, hi=MAX_PRIOR_CODES, panel=INIT
    )
    prior_top_p: float = setting(
        1.0,
        "--init prior: draw from the likeliest codes holding this much probability.",
        lo=0,
        hi=1,
        open_lo=True,
        float32=True,  # compared with float32 probabilities: a value that rounds to 0 would keep no code
        panel=INIT,
    )
    prior_guidance: float = setting(
        1.0, "--init prior: classifier-free guidance scale (1: none).", lo=0, hi=100, panel=INIT
    )
    prior_class: str | None = setting(
        None,
        "--init prior, class-conditional priors (ImageNet): the class to draw for every sample"
        " (default: classes CLIP picks for the prompt, --prior-class-top-k).",
        panel=INIT,
    )
    prior_class_top_k: int = setting(
        5,
        "--init prior, class-conditional priors: each sample's class is drawn from the K classes CLIP"
        " likes best for the prompt, in proportion to CLIP's probabilities (1: its top class for all).",
        lo=1,
        hi=MAX_PRIOR_CLASSES,
        panel=INIT,
    )
    init_image: str | None = setting(None, "Start from this image.", panel=INIT)
    init_fit: str = setting("cover", "How the init image fits the size.", choices=INIT_FITS, panel=INIT)
    init_noise: str | None = setting(
        None, "Start from noise, encoded like an init image.", choices=INIT_NOISES, panel=INIT
    )
    init_weight: float = setting(0.0, "Keep the latent near its start.", lo=0, panel=INIT)
    init_pixel_weight: float = setting(
        0.0, "Keep the pixels near the init image or the composed start (L1).", lo=0, panel=INIT
    )
    vary_strength: float = setting(
        0.0,
        "A variation (pixgen vary): the share of the start redrawn from --vary-seed: the prior's codes"
        " from a point of the grid on, or the init image's latent mixed with fresh noise (0: none).",
        lo=0,
        hi=1,
        panel=INIT,
    )
    vary_seed: int = setting(0, "A variation: the seed of what it redraws.", lo=0, hi=2**63 - 1, panel=INIT)
    init_draws: int = setting(
        1,
        "Draw N starting latents (tokens, flat, mean) and start from the one CLIP likes best.",
        lo=1,
        hi=32,
        panel=INIT,
    )
    save_best: bool = setting(False, "Keep the step with the lowest loss, not the last one.", panel=OUTPUT)
    ema: float = setting(
        0.0,
        "Keep a moving average of the latent with this decay (0: off, e.g. 0.9).",
        lo=0,
        hi=1,
        open_hi=True,
        panel=OPTIMISER,
    )
    clip_loss: str = setting(
        "spherical", "CLIP distance: spherical is the great-circle one.", choices=CLIP_LOSSES, panel=OPTIMISER
    )
    optimizer: str = setting("adam", "The optimiser that steps the latent.", choices=OPTIMIZERS, panel=OPTIMISER)
    lr_schedule: str = setting(
        "constant", "Learning-rate schedule: step is x0.1 at 75%.", choices=LR_SCHEDULES, panel=OPTIMISER
    )
    schedule: str = setting(
        "plain",
        "progressive: the first half of the steps at half size (coarse to fine).",
        choices=SCHEDULES,
        panel=SIZE,
    )
    tv_weight: float = setting(0.0, "Smoothness (total variation).", lo=0, panel=REGULARISERS)
    saturation_weight: float = setting(0.0, ">0 desaturates, <0 saturates.", panel=REGULARISERS)
    symmetry: str = setting(
        "none", "Mirror symmetry to pull toward (with --symmetry-weight).", choices=SYMMETRIES, panel=REGULARISERS
    )
    symmetry_weight: float = setting(0.0, "How strongly to pull toward the symmetry.", lo=0, panel=REGULARISERS)
    palette: list[str] = setting(
        [],
        'Colours, "#ff0000,#00ff00", or a named palette (gameboy, pico-8, c64, grayscale-4...): a hard '
        "palette for the pixel and lines drawers, and what --palette-weight pulls toward.",
        metavar="#RGB,...",
        max_items=256,
        text="csv",
        panel=REGULARISERS,
    )
    palette_weight: float = setting(0.0, "How strongly to pull toward the palette.", lo=0, panel=REGULARISERS)
    speck_guard: bool = setting(
        False,
        "Steps may not add specks (a few pixels of no blend of the picture's two main colours: for"
        " pictures of flat colours): the cells under one go back to their last values without it, and the"
        " zoom video mode tries its re-encoding half a pixel away for one without.",
        panel=REGULARISERS,
    )
    drawer: str = setting("vqgan", "", panel=DRAWER)  # its choices: the drawers (_drawer_setting)
    # here, as Settings is built: each drawer's own settings (pixel_size, strokes...: pixgen.drawers)
    tile: bool = setting(
        False, "A seamless texture: the image wraps around its edges, and so do the cutouts.", panel=DRAWER
    )
    video: bool = setting(
        False, "Also write progress.mp4: a frame every step, streamed (needs imageio-ffmpeg).", panel=VIDEO
    )
    video_every: int = setting(
        1,
        "With --video: a frame every N steps (the first is the starting image).",
        lo=1,
        hi=MAX_STEPS,
        panel=VIDEO,
    )
    video_fps: float | None = setting(
        None,
        "With --video: the MP4's frame rate (default: --fps).",
        lo=0,
        hi=240,
        open_lo=True,
        panel=VIDEO,
    )
    video_interpolate: float = setting(
        0.0,
        "With --video: also write progress-smooth.mp4, interpolated to FPS by ffmpeg's minterpolate "
        "(the plain MP4 is kept; 0: off).",
        metavar="FPS",
        lo=0,
        hi=240,
        panel=VIDEO,
    )
    # The zoom/pan video mode, on when any movement is set: every zoom_every steps the image is
    # zoomed by zoom_scale, rotated by zoom_rotate degrees and moved by zoom_shift (x, y) pixels
    # about its centre, then re-encoded by the VQGAN encoder as the new latent.
    zoom_every: int = setting(
        10,
        "Zoom video mode: steps per segment (pair with --save-every and --video).",
        lo=1,
        hi=MAX_STEPS,
        panel=VIDEO,
    )
    zoom_scale: float = setting(
        1.0,
        "Zoom video mode: zoom by this factor after each segment (>1 zooms in).",
        lo=0.25,
        hi=4,
        panel=VIDEO,
    )
    zoom_shift: list[float] = setting(
        [0.0, 0.0],
        "Zoom video mode: move the image X,Y pixels after each segment, e.g. 2,-1.",
        metavar="X,Y",
        text="pair",
        panel=VIDEO,
    )
    zoom_rotate: float = setting(
        0.0, "Zoom video mode: rotate by degrees after each segment.", lo=-180, hi=180, panel=VIDEO
    )
    fps: float = setting(  # a GIF frame lasts at most 655.35 s (hundredths of a second, 16 bits)
        10.0, "Frames per second of the GIF and MP4.", lo=0.01, hi=120, panel=OUTPUT
    )
    seed: int | None = setting(None, "Random seed (random when not given; recorded).", lo=0, hi=2**63 - 1, panel=SIZE)
    save_every: int = setting(50, "Save a progress frame every N steps (0: never).", lo=0, hi=MAX_STEPS, panel=OUTPUT)
    gif: bool = setting(True, "Write progress.gif from the frames.", panel=OUTPUT)
    output_dir: str = setting("outputs", "Folder that receives the run folder.", short="-o", panel=OUTPUT)
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.", panel=PERFORMANCE)
    precision: str = setting(
        "auto",
        "Compute dtype: bf16 casts the models once; fp16 is CLIP autocast on CUDA; auto measures this machine.",
        choices=PRECISIONS,
        panel=PERFORMANCE,
    )
    compile: bool = setting(
        False, "torch.compile the models: slow first step, faster after (long runs).", panel=PERFORMANCE
    )
    low_memory: bool = setting(
        False, "The levers of the smallest memory (decoder checkpointing, CLIP 8 cutouts at a time).", panel=PERFORMANCE
    )
    memory_budget: str | None = setting(
        None,
        "Peak memory to stay under (1.5G, 800M): pixgen picks the fastest levers that fit, or refuses.",
        metavar="SIZE",
        panel=PERFORMANCE,
    )
    threads: int = setting(
        0,
        "CPU threads (0: torch's default, all cores or OMP_NUM_THREADS; at most 8 per core).",
        lo=0,
        hi=4096,
        panel=PERFORMANCE,
    )
    vqgan: str = setting(
        "vqgan_imagenet_f16_16384", "VQGAN: a registry name (`pixgen models list`) or shapes/tiny.", panel=MODELS
    )
    vqgan_config: str | None = setting(None, "Local taming model YAML.", panel=MODELS)
    vqgan_ckpt: str | None = setting(None, "Local taming .ckpt checkpoint.", panel=MODELS)
    clip: list[str] = setting(
        [DEFAULT_CLIP],
        f"CLIP as NAME:TAG ({DEFAULT_CLIP}) or NAME:PATH, with an optional :weight. Repeat it for an "
        "ensemble: each model scores its own cutouts and the losses are averaged by weight.",
        metavar="SPEC",
        max_items=8,
        text="one",
        panel=MODELS,
    )
    preset: str | None = setting(None, "A preset from configs/presets (see `pixgen presets`).", cli=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]


def _lr_setting() -> Any:
    defaults = ", ".join(f"{name} {cls.lr:g}" for name, cls in drawer_classes().items())
    help = f"Learning rate of the --optimizer (default by drawer: {defaults})."
    return setting(None, help, lo=0, open_lo=True, panel=OPTIMISER)


def _drawer_setting() -> Any:
    classes = drawer_classes()
    each = [f"{name} ({cls.summary})" for name, cls in classes.items()]
    which = ", ".join(each[:-1]) + " or " + each[-1] if len(each) > 1 else each[0]
    vqgan = " and ".join(name for name, cls in classes.items() if cls.needs_vqgan)
    help = f"What draws the image: {which}. Only {vqgan} needs a VQGAN."
    return setting("vqgan", help, choices=tuple(classes), panel=DRAWER)


_OWN = {key: (kind, Settings.__dict__[key]) for key, kind in Settings.__annotations__.items()}  # as declared
_MADE = {"lr": _lr_setting, "drawer": _drawer_setting}  # fields declared from the registered drawers
_GENERATED = (
    "__annotations__",
    "__dataclass_fields__",
    "__dataclass_params__",
    "__init__",
    "__repr__",
    "__eq__",
    "__hash__",
)
FIELDS: dict[str, dataclasses.Field] = {}  # name -> field, in order: every setting


def _build_settings() -> None:
    """Make Settings the dataclass of its own fields and the registered drawers' (after `drawer`,
    in the drawers' order), in place: the class stays the one every module imported, and FIELDS
    follows it."""
    kinds, declared = {}, {}
    for key, (kind, decl) in _OWN.items():
        kinds[key], declared[key] = kind, _MADE[key]() if key in _MADE else decl
        if key != "drawer":
            continue
        for cls in drawer_classes().values():
            for name, (kind, decl) in declared_settings(cls).items():
                if name in _OWN or name in kinds:
                    raise PixgenError(f"drawer {cls.name!r}: setting {name!r} is declared already")
                kinds[name], declared[name] = kind, decl
    made = dataclasses.dataclass(type("Settings", (), {"__module__": __name__, "__annotations__": kinds, **declared}))
    for attr in _GENERATED + ("__match_args__",):
        setattr(Settings, attr, made.__dict__[attr])
    for key in set(FIELDS) | set(kinds):  # the class attributes a dataclass keeps: plain defaults
        if key in made.__dict__:
            setattr(Settings, key, made.__dict__[key])
        elif key in Settings.__dict__:
            delattr(Settings, key)
    FIELDS.clear()
    FIELDS.update({f.name: f for f in dataclasses.fields(Settings)})


_build_settings()
on_drawers_changed(_build_settings)
