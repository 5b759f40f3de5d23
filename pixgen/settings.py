"""One typed settings object, layered: defaults, then a preset YAML, then a config YAML,
then CLI flags and ``--set key=value``. Unknown keys and bad values raise PixgenError naming
the key. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixgen.errors import PixgenError

PACKAGE_DIR = Path(__file__).resolve().parent
PRESETS_DIR = PACKAGE_DIR / "configs" / "presets"

AUGMENTS = ("flip", "affine", "perspective", "jitter", "noise", "erasing", "sharpness")
INITS = ("tokens", "flat", "mean")
INIT_FITS = ("cover", "contain", "stretch")
INIT_NOISES = ("pixels", "gradient", "perlin")
OPTIMIZERS = ("adam", "adamw", "adagrad", "rmsprop", "radam")
LR_SCHEDULES = ("constant", "step", "cosine", "plateau")
SYMMETRIES = ("none", "horizontal", "vertical", "both")
SCHEDULES = ("plain", "progressive")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLIP_LOSSES = ("spherical", "cosine")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_SIDE = 8192
LIST_KEYS = ("clip",)  # list settings that also accept one string


@dataclass
class Settings:
    """Everything a run needs. Saved, resolved, beside every output."""

    prompt: str = ""
    size: list[int] = field(default_factory=lambda: [256, 256])  # width, height in pixels
    iterations: int = 300
    lr: float = 0.1
    cutn: int = 32
    cut_pow: float = 1.0
    cut_min: float = 0.0  # smallest cutout side as a fraction of the shorter image side
    augment: list[str] = field(default_factory=lambda: ["flip", "affine", "perspective", "jitter", "noise"])
    noise: float = 0.1  # the largest std of the per-cutout gaussian noise (augment "noise")
    negative: list[str] = field(default_factory=list)  # texts to push away from (weight -1 each)
    image_prompts: list[str] = field(default_factory=list)  # PATH[:weight]
    noise_prompts: list[str] = field(default_factory=list)  # SEED[:weight]
    change_prompt_every: int = 0  # story mode "a ^ b": steps per phrase; 0 spreads them evenly
    init: str = "tokens"  # tokens: random codebook entries; flat: one random entry everywhere; mean
    init_image: str | None = None
    init_fit: str = "cover"  # how the init image fits the size: cover, contain, stretch
    init_noise: str | None = None  # pixels, gradient or perlin noise, encoded as the init
    init_weight: float = 0.0  # pull the latent toward its initial value
    init_pixel_weight: float = 0.0  # L1 between the image and the init image
    init_draws: int = 1  # draw this many starting latents, start from the one CLIP scores best
    save_best: bool = False  # keep the latent of the lowest-loss step rather than the last
    ema: float = 0.0  # keep a moving average of the latent with this decay (0: off)
    clip_loss: str = "spherical"  # spherical (great-circle) or cosine distance to the targets
    optimizer: str = "adam"
    lr_schedule: str = "constant"  # constant, step (x0.1 at 75%), cosine, plateau
    schedule: str = "plain"  # progressive: the first half of the steps at half size, half the cutouts
    tv_weight: float = 0.0  # total-variation smoothness on the image
    saturation_weight: float = 0.0  # >0 desaturates, <0 saturates
    symmetry: str = "none"  # none, horizontal, vertical, both
    symmetry_weight: float = 0.0
    palette: list[str] = field(default_factory=list)  # "#rrggbb" colours to pull pixels toward
    palette_weight: float = 0.0
    video: bool = False  # also write progress.mp4 (needs imageio-ffmpeg), streamed step by step
    video_every: int = 1  # a video frame every N steps (the first is the starting image)
    video_fps: float | None = None  # the MP4's frame rate; None: the same as fps
    video_interpolate: float = 0.0  # >0: also write progress-smooth.mp4 at this rate (ffmpeg minterpolate)
    # The zoom/pan video mode, on when any movement is set: every zoom_every steps the image is
    # zoomed by zoom_scale, rotated by zoom_rotate degrees and moved by zoom_shift (x, y) pixels
    # about its centre, then re-encoded by the VQGAN encoder as the new latent.
    zoom_every: int = 10
    zoom_scale: float = 1.0
    zoom_shift: list[float] = field(default_factory=lambda: [0.0, 0.0])
    zoom_rotate: float = 0.0
    fps: float = 10.0
    seed: int | None = None  # None: a random seed, recorded in the outputs
    save_every: int = 50  # 0: no progress frames
    gif: bool = True
    output_dir: str = "outputs"
    device: str = "auto"
    precision: str = "auto"  # auto, fp32, bf16 or fp16: autocast dtype for CLIP (see BENCHMARKS.md)
    compile: bool = False  # torch.compile the decoder and CLIP's image tower (pays off on long runs)
    low_memory: bool = False  # decoder checkpointing + CLIP on 8 cutouts at a time: ~1.2 GB less, ~1.2x the time
    threads: int = 0  # CPU threads; 0 leaves torch's default (all cores, or OMP_NUM_THREADS)
    vqgan: str = "vqgan_imagenet_f16_16384"  # a registry name, "tiny" or "shapes"
    vqgan_config: str | None = None
    vqgan_ckpt: str | None = None
    # CLIP models scoring the image, each NAME:TAG, NAME:PATH, "tiny" or "shapes", with an
    # optional ":weight". Several make an ensemble: each scores its own cutouts at its own input
    # size, and their losses are averaged by weight.
    clip: list[str] = field(default_factory=lambda: ["ViT-B-32:openai"])
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]


def parse_palette(colours: list[str]) -> list[tuple[float, float, float]]:
    """``["#ff0000", "00f"]`` -> RGB triples in [0, 1]; a bad colour is a PixgenError."""
    out = []
    for c in colours:
        h = str(c).strip().lstrip("#")
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        if not re.fullmatch(r"[0-9a-fA-F]{6}", h):
            raise PixgenError(f"setting 'palette': bad colour {c!r} (use #rrggbb or #rgb)")
        out.append(tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)))
    return out


def split_weight(item: str, key: str) -> tuple[str, float]:
    """``"path/to.png:0.5"`` -> ("path/to.png", 0.5); no numeric suffix means weight 1."""
    head, sep, tail = str(item).rpartition(":")
    if sep and re.fullmatch(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*", tail):
        if not head.strip():
            raise PixgenError(f"setting {key!r}: {item!r} has a weight but nothing to weigh")
        weight = float(tail)
        if weight == 0:
            raise PixgenError(f"setting {key!r}: weight 0 in {item!r} has no effect")
        return head, weight
    if not str(item).strip():
        raise PixgenError(f"setting {key!r}: empty entry")
    return str(item), 1.0


def parse_size(text: str) -> list[int]:
    """``"256x192"`` -> [256, 192]; ``"256"`` -> [256, 256]."""
    m = re.fullmatch(r"\s*(-?\d+)\s*(?:[xX,]\s*(-?\d+))?\s*", str(text))
    if not m:
        raise PixgenError(f"size: expected WIDTHxHEIGHT such as 256x256, got {text!r}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) is not None else w
    return [w, h]


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description (the YAML's first comment line)."""
    out = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        out[path.stem] = desc
    return out


def _read_yaml(path: Path, what: str) -> dict:
    from omegaconf import OmegaConf

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PixgenError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PixgenError(f"cannot read {what} {path}: {e}") from None
    try:
        data = OmegaConf.to_container(OmegaConf.create(text or "{}"))
    except Exception as e:  # yaml errors come in several types
        msg = str(e).splitlines()[0]
        raise PixgenError(f"{what} {path} is not valid YAML: {msg}") from None
    if not isinstance(data, dict):
        raise PixgenError(f"{what} {path} must be a mapping of setting: value")
    return data


def _merge(base, layer: dict, source: str):
    """Merge one layer into the config, key by key, so that any error names its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    layer = {k: [v] if k in LIST_KEYS and isinstance(v, str) else v for k, v in layer.items()}
    try:  # one merge when the layer is valid; key by key only to name the key that is not
        return OmegaConf.merge(base, layer)
    except (OmegaConfBaseException, TypeError, ValueError):
        pass
    for key, value in layer.items():
        try:
            base = OmegaConf.merge(base, {key: value})
        except ConfigKeyError:
            known = ", ".join(f.name for f in dataclasses.fields(Settings))
            raise PixgenError(f"unknown setting {str(key)!r} in {source} (known: {known})") from None
        except (OmegaConfBaseException, TypeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PixgenError(f"bad value for setting {str(key)!r} in {source}: {msg}") from None
    return base


def parse_set(items: list[str]) -> dict:
    """``["lr=0.05", "size=[64,64]"]`` -> {"lr": 0.05, "size": [64, 64]} (values read as YAML)."""
    import yaml

    out: dict = {}
    for item in items:
        if "=" not in item:
            raise PixgenError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        if key == "size" and isinstance(parsed, str | int):
            parsed = parse_size(str(parsed))
        out[key] = parsed
    return out


def load_settings(
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict | None = None,
    sets: list[str] | None = None,
) -> Settings:
    """Resolve settings: defaults, then `preset`, then `config`, then `overrides`, then `sets`."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(Settings)
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            names = ", ".join(list_presets()) or "none"
            raise PixgenError(f"unknown preset {preset!r} (available: {names})")
        cfg = _merge(cfg, _read_yaml(path, "preset"), f"preset {preset!r}")
        cfg = _merge(cfg, {"preset": preset}, "preset")
    if config:
        data = _read_yaml(Path(config), "config file")
        if isinstance(data.get("size"), str | int):
            data["size"] = parse_size(data["size"])
        cfg = _merge(cfg, data, f"config {config}")
    if overrides:
        cfg = _merge(cfg, {k: v for k, v in overrides.items() if v is not None}, "options")
    if sets:
        cfg = _merge(cfg, parse_set(sets), "--set")
    settings = OmegaConf.to_object(cfg)
    validate(settings)
    return settings


def settings_from_dict(data: dict) -> Settings:
    """Rebuild Settings from a saved dict (run.json or PNG metadata), with the same checks."""
    return load_settings(overrides={k: v for k, v in data.items()})


def validate(s: Settings) -> None:
    """Range checks that types alone cannot express. Raises PixgenError naming the key."""
    from pixgen.prompts import parse_prompts

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise PixgenError(f"setting {key!r}: {msg}")

    parse_prompts(s.prompt)
    need(
        len(s.size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in s.size),
        "size",
        f"expected [width, height] in pixels, got {s.size}",
    )
    need(all(isinstance(a, str) for a in s.augment), "augment", f"expected a list of names, got {s.augment}")
    need(all(v > 0 for v in s.size), "size", f"width and height must be positive, got {s.size}")
    need(max(s.size) <= MAX_SIDE, "size", f"{s.size[0]}x{s.size[1]} is too large (max side {MAX_SIDE})")
    need(s.iterations >= 1, "iterations", f"must be at least 1, got {s.iterations}")
    need(s.lr > 0, "lr", f"must be positive, got {s.lr}")
    need(1 <= s.cutn <= 1024, "cutn", f"must be between 1 and 1024, got {s.cutn}")
    need(s.cut_pow > 0, "cut_pow", f"must be positive, got {s.cut_pow}")
    need(0 <= s.cut_min <= 1, "cut_min", f"must be between 0 and 1, got {s.cut_min}")
    need(s.noise >= 0, "noise", f"must be non-negative, got {s.noise}")
    need(s.tv_weight >= 0, "tv_weight", f"must be non-negative, got {s.tv_weight}")
    need(s.save_every >= 0, "save_every", f"must be 0 (off) or more, got {s.save_every}")
    need(s.seed is None or 0 <= s.seed < 2**63, "seed", f"must be between 0 and 2**63-1, got {s.seed}")
    need(
        bool(DEVICE_RE.match(s.device)),
        "device",
        f"unknown device {s.device!r} (auto, cpu, cuda, cuda:N, mps)",
    )
    need(s.init in INITS, "init", f"unknown init {s.init!r} (choose from {', '.join(INITS)})")
    bad = [a for a in s.augment if a not in AUGMENTS]
    need(
        not bad,
        "augment",
        f"unknown augmentation {bad[0]!r} (choose from {', '.join(AUGMENTS)})" if bad else "",
    )
    need(
        bool(s.clip) and all(isinstance(c, str) and c.strip() for c in s.clip),
        "clip",
        "must name at least one CLIP model, e.g. ViT-B-32:openai",
    )
    for item in s.clip:
        need(split_weight(item, "clip")[1] > 0, "clip", f"an ensemble weight must be positive, got {item!r}")
    choices = (
        ("init_fit", INIT_FITS),
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("symmetry", SYMMETRIES),
        ("schedule", SCHEDULES),
        ("clip_loss", CLIP_LOSSES),
    )
    for key, allowed in choices:
        need(getattr(s, key) in allowed, key, f"unknown value {getattr(s, key)!r} (choose from {', '.join(allowed)})")
    need(
        s.init_noise is None or s.init_noise in INIT_NOISES,
        "init_noise",
        f"unknown value {s.init_noise!r} (choose from {', '.join(INIT_NOISES)})",
    )
    need(1 <= s.init_draws <= 256, "init_draws", f"must be between 1 and 256, got {s.init_draws}")
    need(0 <= s.ema < 1, "ema", f"must be at least 0 and below 1, got {s.ema}")
    need(s.change_prompt_every >= 0, "change_prompt_every", f"must be 0 or more, got {s.change_prompt_every}")
    need(0 < s.fps <= 120, "fps", f"must be between 0 and 120, got {s.fps}")
    need(s.video_every >= 1, "video_every", f"must be at least 1, got {s.video_every}")
    need(s.video_fps is None or 0 < s.video_fps <= 240, "video_fps", f"must be between 0 and 240, got {s.video_fps}")
    need(
        s.video_interpolate == 0 or 0 < s.video_interpolate <= 240,
        "video_interpolate",
        f"must be 0 (off) or a frame rate up to 240, got {s.video_interpolate}",
    )
    need(s.zoom_every >= 1, "zoom_every", f"must be at least 1, got {s.zoom_every}")
    need(0.25 <= s.zoom_scale <= 4, "zoom_scale", f"must be between 0.25 and 4, got {s.zoom_scale}")
    need(len(s.zoom_shift) == 2, "zoom_shift", f"expected [x, y] in pixels, got {s.zoom_shift}")
    need(
        all(abs(v) <= max(s.size) for v in s.zoom_shift),
        "zoom_shift",
        f"a shift of {s.zoom_shift} pixels moves the image out of its {s.size[0]}x{s.size[1]} frame",
    )
    need(abs(s.zoom_rotate) <= 180, "zoom_rotate", f"must be between -180 and 180 degrees, got {s.zoom_rotate}")
    for key in ("init_weight", "init_pixel_weight", "symmetry_weight", "palette_weight"):
        need(getattr(s, key) >= 0, key, f"must be non-negative, got {getattr(s, key)}")
    for text in s.negative:
        need(bool(str(text).strip()), "negative", "a negative prompt is empty")
    parse_palette(s.palette)
    for item in s.image_prompts:
        split_weight(item, "image_prompts")
    for item in s.noise_prompts:
        seed, _ = split_weight(item, "noise_prompts")
        need(seed.isdigit(), "noise_prompts", f"expected SEED[:weight] with an integer seed, got {item!r}")
    for phrase in s.prompt.split("^"):
        parse_prompts(phrase)
