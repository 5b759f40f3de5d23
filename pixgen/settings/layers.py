"""The layers of a run's settings: defaults, then a preset YAML, then a config YAML, then flags,
then ``--set key=value``, merged key by key so that any error names its key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixgen.drawers import drawer_classes
from pixgen.errors import PixgenError
from pixgen.paths import PRESETS_DIR
from pixgen.regions import has_regions
from pixgen.settings.checks import validate
from pixgen.settings.fields import FIELDS, Settings
from pixgen.settings.text import flag_of, from_text


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

    layer = {k: from_text(k, v) for k, v in layer.items()}
    try:  # one merge when the layer is valid; key by key only to name the key that is not
        return OmegaConf.merge(base, layer)
    except (OmegaConfBaseException, TypeError, ValueError):
        pass
    for key, value in layer.items():
        try:
            base = OmegaConf.merge(base, {key: value})
        except ConfigKeyError:
            known = ", ".join(FIELDS)
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
        out[key] = from_text(key, parsed)
    return out


DRAWERS = "drawers"  # a preset's or config file's settings for one drawer: {drawer name: {key: value}}
REGIONS = "regions"  # a preset's or config file's settings for a prompt with regions: {key: value}


@dataclass
class Layer:
    """One layer of settings: its values, its name in errors (`source`), in a refusal's note when
    the user did not give it (`where`: None for flags and --set), and its settings for each drawer
    (`drawers`, applied just above it when the run's drawer is that one)."""

    values: dict
    source: str
    where: str | None = None
    drawers: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)  # applied just above it when the prompt has regions


def _file_layer(path: Path, what: str, source: str, where: str) -> Layer:
    """A preset or config file: its settings, its `drawers:` entries and its `regions:` entry
    (checked key by key)."""
    data = _read_yaml(path, what)
    regions = data.pop(REGIONS, None) or {}
    if not isinstance(regions, dict):
        raise PixgenError(f"{REGIONS!r} in {source} must be a mapping of setting: value")
    for key in regions:
        if key not in FIELDS or key in ("prompt", "preset"):
            raise PixgenError(f"unknown setting {str(key)!r} in {REGIONS} of {source}")
    drawers = data.pop(DRAWERS, None) or {}
    if not isinstance(drawers, dict):
        raise PixgenError(f"{DRAWERS!r} in {source} must be a mapping of drawer: {{setting: value}}")
    known = drawer_classes()
    for name, entry in drawers.items():
        if name not in known:
            raise PixgenError(f"unknown drawer {str(name)!r} in {DRAWERS} of {source} (known: {', '.join(known)})")
        if not isinstance(entry, dict):
            raise PixgenError(f"{DRAWERS}.{name} in {source} must be a mapping of setting: value")
        for key in entry:
            if key not in FIELDS or key in ("drawer", "preset"):
                fields = ", ".join(k for k in FIELDS if k not in ("drawer", "preset"))
                raise PixgenError(f"unknown setting {str(key)!r} in {DRAWERS}.{name} of {source} (known: {fields})")
    return Layer(data, source, where, drawers, regions)


def _chosen_drawer(layers: list[Layer]) -> object:
    """The run's drawer: the last layer's that names one, else the default."""
    given = [layer.values["drawer"] for layer in layers if layer.values.get("drawer") is not None]
    return given[-1] if given else FIELDS["drawer"].default


def _asks_for_regions(layers: list[Layer]) -> bool:
    """Whether the run's prompt (the last layer's that gives one) puts a part in a region."""
    given = [layer.values["prompt"] for layer in layers if isinstance(layer.values.get("prompt"), str)]
    return bool(given) and has_regions(given[-1])


def _in_order(layers: list[Layer]) -> list[Layer]:
    """The layers as merged, each followed by its settings for a prompt with regions (when the
    run's prompt has them) and for the run's drawer."""
    name, out = _chosen_drawer(layers), []
    regions = any(layer.regions for layer in layers) and _asks_for_regions(layers)
    for layer in layers:
        out.append(layer)
        if regions and layer.regions:
            where = layer.where and f"{layer.where} ({REGIONS})"
            out.append(Layer(layer.regions, f"{layer.source} ({REGIONS})", where))
        entry = layer.drawers.get(name) if isinstance(name, str) else None
        if entry is not None:
            where = layer.where and f"{layer.where} ({DRAWERS}.{name})"
            out.append(Layer(entry, f"{layer.source} ({DRAWERS}.{name})", where))
    return out


def load_settings(
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict | None = None,
    sets: list[str] | None = None,
) -> Settings:
    """Resolve settings: defaults, then `preset`, then `config`, then `overrides`, then `sets`.
    A preset's or config file's `drawers:` entries apply just above it when the run's drawer (as
    the layers resolve it) is theirs, and its `regions:` entry when the run's prompt puts a part in
    a region: below a config file's own settings (for a preset's), flags and --set."""
    from omegaconf import OmegaConf

    layers = []
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            names = ", ".join(list_presets()) or "none"
            raise PixgenError(f"unknown preset {preset!r} (available: {names})")
        layers.append(_file_layer(path, "preset", f"preset {preset!r}", f"the preset {preset!r}"))
        layers[-1].values["preset"] = preset  # recorded: which preset the run began from
    if config:
        layers.append(_file_layer(Path(config), "config file", f"config {config}", f"the config file {config}"))
    if overrides:
        layers.append(Layer({k: v for k, v in overrides.items() if v is not None}, "options"))
    if sets:
        layers.append(Layer(parse_set(sets), "--set"))
    cfg = OmegaConf.structured(Settings)
    came_from: dict[str, str] = {}  # a key -> the layer that set it, when the user did not
    for layer in _in_order(layers):
        cfg = _merge(cfg, layer.values, layer.source)
        if layer.where:
            came_from.update(dict.fromkeys(layer.values, layer.where))
        else:
            came_from = {k: v for k, v in came_from.items() if k not in layer.values}
    settings = OmegaConf.to_object(cfg)
    try:
        validate(settings)
    except PixgenError as e:
        key = getattr(e, "key", None)
        if key not in came_from:
            raise
        raise PixgenError(f"{e}; {_where_from(key, getattr(settings, key), came_from[key])}") from None
    return settings


def _where_from(key: str, value: Any, source: str) -> str:
    """Where a refused value came from, when the user did not give it (a preset, a config file),
    and how to choose another."""
    choices = FIELDS[key].metadata["choices"] if key in FIELDS else None
    others = [c for c in choices or () if c != value]
    how = f"e.g. {' or '.join(f'{flag_of(key)} {c}' for c in others[:2])}" if others else f"with {flag_of(key)}"
    shown = value if isinstance(value, str) else repr(value)
    return f"{key} {shown} was set by {source}: choose another value, {how}"
