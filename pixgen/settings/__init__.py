"""One typed settings object, layered: defaults, then a preset YAML, then a config YAML, then CLI
flags and ``--set key=value``. Unknown keys and bad values raise PixgenError naming the key. No
torch.

    fields  every setting declared once (the drawers' own gathered in): `Settings`, `FIELDS`
    layers  presets, config files, flags and --set merged key by key: `load_settings`
    checks  validation of the values: `validate`
    text    settings as typed: sizes, lists, pairs, and what the help shows of each

The CLI's options (`pixgen generate`, `pixgen batch`, `pixgen restyle`), their help and the
validation are generated from the declarations. This package's names are all importable from
`pixgen.settings`.
"""

from pixgen.declare import (
    CUTOUTS,
    DRAWER,
    FLOAT32_TINY,
    INIT,
    MAX_SIDE,
    MAX_STEPS,
    MODELS,
    OPTIMISER,
    OUTPUT,
    PANELS,
    PERFORMANCE,
    PROMPTS,
    REGULARISERS,
    SIZE,
    VIDEO,
    setting,
)
from pixgen.settings.checks import (
    _number_error,
    loads_vqgan,
    parse_bytes,
    parse_palette,
    prior_start_on,
    validate,
    zoom_on,
)
from pixgen.settings.fields import (
    AUGMENTS,
    CLIP_LOSSES,
    DEFAULT_CLIP,
    DEVICE_RE,
    FIELDS,
    INIT_FITS,
    INIT_NOISES,
    INITS,
    LR_SCHEDULES,
    MAX_PRIOR_CODES,
    MAX_PRIOR_SAMPLES,
    MAX_PROMPT_CHARS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SILHOUETTES,
    SYMMETRIES,
    Settings,
)
from pixgen.settings.layers import (
    list_presets,
    load_settings,
    parse_set,
)
from pixgen.settings.text import (
    default_text,
    flag_of,
    from_text,
    metavar_of,
    parse_size,
)

__all__ = [
    "AUGMENTS",
    "CLIP_LOSSES",
    "CUTOUTS",
    "DEFAULT_CLIP",
    "DEVICE_RE",
    "DRAWER",
    "FIELDS",
    "FLOAT32_TINY",
    "INIT",
    "INITS",
    "INIT_FITS",
    "INIT_NOISES",
    "LR_SCHEDULES",
    "MAX_PRIOR_CODES",
    "MAX_PRIOR_SAMPLES",
    "MAX_PROMPT_CHARS",
    "MAX_SIDE",
    "MAX_STEPS",
    "MODELS",
    "OPTIMISER",
    "OPTIMIZERS",
    "OUTPUT",
    "PANELS",
    "PERFORMANCE",
    "PRECISIONS",
    "PROMPTS",
    "REGULARISERS",
    "SCHEDULES",
    "SILHOUETTES",
    "SIZE",
    "SYMMETRIES",
    "Settings",
    "VIDEO",
    "_number_error",
    "default_text",
    "flag_of",
    "from_text",
    "list_presets",
    "load_settings",
    "loads_vqgan",
    "metavar_of",
    "parse_bytes",
    "parse_palette",
    "parse_set",
    "parse_size",
    "prior_start_on",
    "setting",
    "validate",
    "zoom_on",
]
