"""The options several commands share, and the options generated from the Settings declarations."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated

import typer

PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="A preset from configs/presets (see `pixgen presets`).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A YAML file of settings.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="key=value for any setting; repeatable.")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never touch the network; fail at once if a model is missing.")
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar or status line.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even if the memory estimate says it won't fit.")]
CandidatesOpt = Annotated[
    int, typer.Option("--candidates", help="Generate N images (seeds seed..seed+N-1), rank them by CLIP score.")
]
SeedsOpt = Annotated[str | None, typer.Option("--seeds", help="Candidate seeds, e.g. 1,2,3 (implies --candidates).")]
GenerateJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (run_dir, image, seed, seconds) to stdout.")
]
RunJsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ClipOpt = Annotated[str, typer.Option("--clip", help="CLIP as NAME:TAG, NAME:PATH, or shapes (offline).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _flag_param(key: str, f, help: str | None = None) -> inspect.Parameter:
    """The Typer option of one setting, from its declaration in Settings."""
    from pixgen.settings import flag_of

    meta, flag = f.metadata, flag_of(key)
    text = meta["text"]
    kind = list[str] if text == "one" else str if text else _TYPES[str(f.type).removesuffix(" | None")]
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [d for d in (meta["short"], flag) if d]
    option = typer.Option(None, *decls, help=help or meta["help"], metavar=meta["metavar"], show_default=False)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)


def with_setting_flags(*exclude: str, only: tuple[str, ...] = (), helps: dict[str, str] | None = None):
    """Give a command one option per setting (all but `exclude`, or just `only`; `helps` words
    some of them for this command); the command receives the ones given as `flags`, a dict of
    setting overrides."""

    def wrap(fn):
        from pixgen.settings import FIELDS

        params = inspect.signature(fn, eval_str=True).parameters.values()
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p.name != "flags"]
        keys = [k for k, f in FIELDS.items() if f.metadata["cli"] and k not in exclude and (not only or k in only)]

        @functools.wraps(fn)
        def command(**kwargs):
            given = {k: kwargs.pop(k) for k in keys}
            return fn(**kwargs, flags={k: v for k, v in given.items() if v not in (None, [])})

        flags = [_flag_param(k, FIELDS[k], (helps or {}).get(k)) for k in keys]  # after the command's argument
        command.__signature__ = inspect.Signature(own[:1] + flags + own[1:])
        return command

    return wrap
