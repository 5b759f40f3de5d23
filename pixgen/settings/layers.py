"""The layers of a run's settings: defaults, then a preset YAML, then a config YAML, then flags,
then ``--set key=value``, merged key by key so that any error names its key."""

from __future__ import annotations

from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.paths import PRESETS_DIR
from pixgen.settings.checks import validate
from pixgen.settings.fields import FIELDS, Settings
from pixgen.settings.text import from_text


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
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            names = ", ".join(list_presets()) or "none"
            raise PixgenError(f"unknown preset {preset!r} (available: {names})")
        cfg = _merge(cfg, _read_yaml(path, "preset"), f"preset {preset!r}")
        cfg = _merge(cfg, {"preset": preset}, "preset")
    if config:
        cfg = _merge(cfg, _read_yaml(Path(config), "config file"), f"config {config}")
    if overrides:
        cfg = _merge(cfg, {k: v for k, v in overrides.items() if v is not None}, "options")
    if sets:
        cfg = _merge(cfg, parse_set(sets), "--set")
    settings = OmegaConf.to_object(cfg)
    validate(settings)
    return settings
