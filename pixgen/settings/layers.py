"""The layers of a run's settings: defaults, then a preset YAML, then a config YAML, then flags,
then ``--set key=value``, merged key by key so that any error names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixgen.errors import PixgenError
from pixgen.paths import PRESETS_DIR
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


def load_settings(
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict | None = None,
    sets: list[str] | None = None,
) -> Settings:
    """Resolve settings: defaults, then `preset`, then `config`, then `overrides`, then `sets`."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(Settings)
    came_from: dict[str, str] = {}  # a key -> the layer that set it, when the user did not
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            names = ", ".join(list_presets()) or "none"
            raise PixgenError(f"unknown preset {preset!r} (available: {names})")
        layer = _read_yaml(path, "preset")
        cfg = _merge(cfg, layer, f"preset {preset!r}")
        cfg = _merge(cfg, {"preset": preset}, "preset")
        came_from.update(dict.fromkeys(layer, f"the preset {preset!r}"))
    if config:
        layer = _read_yaml(Path(config), "config file")
        cfg = _merge(cfg, layer, f"config {config}")
        came_from.update(dict.fromkeys(layer, f"the config file {config}"))
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = _merge(cfg, given, "options")
        came_from = {k: v for k, v in came_from.items() if k not in given}
    if sets:
        given = parse_set(sets)
        cfg = _merge(cfg, given, "--set")
        came_from = {k: v for k, v in came_from.items() if k not in given}
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
