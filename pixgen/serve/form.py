"""The web form and the job requests, both from the Settings declarations (pixgen.settings).

The form lists every setting a web job may set, with its help, choices and range: the common ones
first, the rest under "advanced". The server's own settings (models, device, output folder) are
fixed at start-up and refused in requests. File settings (init_image, image_prompts) name files
inside the output folder (an upload, or a past run's image) and pass the CLI's image checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixgen.errors import PixgenError
from pixgen.needs import check_run
from pixgen.settings import FIELDS, Settings, load_settings

# Fixed by `pixgen serve` for every job: the loaded models, their device, where runs go.
SERVER_KEYS = (
    "output_dir",
    "device",
    "threads",
    "vqgan",
    "vqgan_config",
    "vqgan_ckpt",
    "clip",
    "preset",
    "compile",
    "precision",
    "prior",  # a model file, like the VQGAN: the server's, not a request's
)
COMMON = ("prompt", "size", "iterations", "seed", "negative", "drawer", "init_image")
PATH_KEYS = ("init_image", "image_prompts")


def server_settings(preset: str | None, output_dir: str | None = None) -> Settings:
    """The server's base settings (its preset's, a prompt left empty): its models, device, defaults."""
    import dataclasses

    overrides = {"prompt": "(none yet)", "output_dir": output_dir}
    settings = load_settings(preset, overrides=overrides)
    check_run(settings)
    return dataclasses.replace(settings, prompt="")


def _kind(f) -> str:
    text = f.metadata["text"]
    if text:
        return text  # size, csv, pair, one
    return str(f.type).removesuffix(" | None")  # int, float, bool, str


def form_schema(defaults: Settings, root: Path) -> list[dict]:
    """One entry per web setting: name, kind, default (the server preset's, in form text), help,
    choices, range, optional, and group (common or advanced)."""
    out = []
    for key, f in FIELDS.items():
        if key in SERVER_KEYS:
            continue
        meta = f.metadata
        out.append(
            {
                "name": key,
                "kind": _kind(f),
                "default": to_form(key, getattr(defaults, key), root),
                "help": meta["help"],
                "choices": list(meta["choices"]) if meta["choices"] else None,
                "lo": meta["lo"],
                "hi": meta["hi"],
                "optional": "None" in str(f.type),
                "group": "common" if key in COMMON else "advanced",
                "applies": applies_when(key),
            }
        )
    out.sort(key=lambda e: (e["group"] != "common", COMMON.index(e["name"]) if e["name"] in COMMON else 0))
    return out


COMPOSED_ONLY = ("init_silhouettes", "init_jitter")


def applies_when(key: str) -> dict:
    """When a setting has an effect, for the form to show it only then: {"drawer": name} for a
    drawer's own settings, {"init": "prior"|"composed"} for those of one start; {} always."""
    from pixgen.drawers import declared_settings, drawer_classes

    for name, cls in drawer_classes().items():
        if key in declared_settings(cls):
            return {"drawer": name}
    if key.startswith("prior_"):
        return {"init": "prior"}
    if key in COMPOSED_ONLY:
        return {"init": "composed"}
    return {}


def drawer_defaults(preset: str | None, root: Path) -> dict:
    """Per drawer, the form values its choice brings under the server's preset (a preset's
    `drawers:` entries: steps, learning rate, its own settings), for every setting that some
    drawer changes: the form puts them in when the drawer is picked."""
    from pixgen.drawers import drawer_classes

    base, chosen = server_settings(preset, str(root)), {}
    for name in drawer_classes():
        try:
            chosen[name] = load_settings(preset, overrides={"prompt": "x", "drawer": name, "output_dir": str(root)})
        except PixgenError:  # a drawer this preset cannot take: the form's check will say why
            continue
    skip = (*SERVER_KEYS, "prompt", "drawer")
    keys = {k for s in chosen.values() for k in FIELDS if k not in skip and getattr(s, k) != getattr(base, k)}
    return {name: {k: to_form(k, getattr(s, k), root) for k in sorted(keys)} for name, s in chosen.items()}


def _relative(path: str, root: Path) -> str | None:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return None


def to_form(key: str, value: Any, root: Path) -> Any:
    """A setting's value as the form shows it: size "64x64", csv "a,b", pair "2,-1", one a line each;
    file paths relative to the output folder (files outside it are dropped)."""
    if key == "init_image" and value:
        return _relative(value, root) or ""
    if key == "image_prompts":
        from pixgen.loop.prompts import split_weight

        kept = []
        for item in value or []:
            path, weight = split_weight(item, key)
            rel = _relative(path, root)
            if rel:
                kept.append(rel if weight == 1 else f"{rel}:{weight:g}")
        value = kept
    kind = _kind(FIELDS[key]) if key in FIELDS else None
    if value is None:
        return None
    if kind == "size":
        return f"{value[0]}x{value[1]}"
    if kind in ("csv", "pair"):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if kind == "one":
        return "\n".join(str(v) for v in value)
    return value


def resolve_file(text: str, root: Path, key: str) -> str:
    """A file named relative to the output folder -> its absolute path, after the CLI's image
    checks (size caps, decompression bombs). Anything outside the folder is refused."""
    from pixgen.outputs.images import open_rgb

    base = root.resolve()
    try:
        path = (base / str(text).strip()).resolve()
    except (OSError, ValueError):
        path = None
    if path is None or not path.is_relative_to(base) or not path.is_file():
        raise PixgenError(f"setting {key!r}: {text!r} is not a file in the output folder (upload it first)")
    open_rgb(path)
    return str(path)


def settings_from_request(data: Any, preset: str | None, root: Path) -> Settings:
    """The Settings of a web job: the server's preset, then the request's values (in form text or
    JSON), validated like the CLI's; a PixgenError names the key."""
    from pixgen.loop.prompts import split_weight

    if not isinstance(data, dict):
        raise PixgenError("a job is a JSON object of setting: value, with at least a prompt")
    fixed = [k for k in data if k in SERVER_KEYS]
    if fixed:
        raise PixgenError(f"setting {fixed[0]!r} is fixed by the server (pixgen serve's options)")
    values = {}
    for key, value in data.items():
        if value is None or value == "":
            continue
        kind = _kind(FIELDS[key]) if key in FIELDS else None
        if kind == "one" and isinstance(value, str):
            value = [line.strip() for line in value.splitlines() if line.strip()]
        if key == "init_image":
            value = resolve_file(value, root, key)
        elif key == "image_prompts":
            items = value if isinstance(value, list) else [value]
            value = []
            for item in items:
                path, weight = split_weight(item, key)
                value.append(f"{resolve_file(path, root, key)}:{weight:g}")
        values[key] = value
    if not str(values.get("prompt", "")).strip():
        raise PixgenError("setting 'prompt': a job needs a prompt")
    settings = load_settings(preset, overrides=dict(values, output_dir=str(root)))
    check_run(settings)  # the prompts and --prior-class, before the job is queued
    return settings
