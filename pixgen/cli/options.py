"""The options several commands share, the options generated from the Settings declarations, and
PanelCommand, the command class that lists them in help panels."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from pixgen.settings import MODELS, OUTPUT, PANELS, PERFORMANCE

PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="A preset from configs/presets (see `pixgen presets`).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A YAML file of settings.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="key=value for any setting; repeatable.")
]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline", help="Never touch the network; fail at once if a model is missing.", rich_help_panel=MODELS
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("-q", "--quiet", help="No progress bar or status line.", rich_help_panel=OUTPUT)
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Run even if the memory estimate says it won't fit.", rich_help_panel=PERFORMANCE),
]
CandidatesOpt = Annotated[
    int,
    typer.Option(
        "--candidates",
        help="Generate N images (seeds seed..seed+N-1), rank them by CLIP score.",
        rich_help_panel=OUTPUT,
    ),
]
SeedsOpt = Annotated[
    str | None,
    typer.Option("--seeds", help="Candidate seeds, e.g. 1,2,3 (implies --candidates).", rich_help_panel=OUTPUT),
]
GenerateJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON object (run_dir, image, seed, seconds) to stdout.", rich_help_panel=OUTPUT
    ),
]
RunJsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ClipOpt = Annotated[str, typer.Option("--clip", help="CLIP as NAME:TAG, NAME:PATH, or shapes (offline).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class PanelCommand(TyperCommand):
    """A command whose plain-text help lists its options in sections, one per `rich_help_panel`
    (the Typer attribute, so the same grouping shows if rich help is turned on): first the
    general "Options" (no panel: --preset, --config, --set, --help), then the command's own
    panels, then the settings' PANELS in their order. Required arguments read PROMPT in the
    usage line, not {PROMPT}."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            plain = param.param_type_name == "argument" and param.required and param.nargs == 1
            pieces.extend([param.metavar or param.name.upper()] if plain else param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx, formatter) -> None:
        args, panels = [], {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
                continue
            if isinstance(param.show_default, str):  # click brackets a given text: "(300)"
                shown = param.show_default
                record = (record[0], record[1].replace(f"default: ({shown})", f"default: {shown}"))
            panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        order = {"Options": -1, **{title: i for i, title in enumerate(PANELS)}}
        for title in sorted(panels, key=lambda t: order.get(t, -0.5)):  # sorted() keeps the rest in order
            with formatter.section(title):
                formatter.write_dl(panels[title])


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _flag_param(key: str, f, help: str | None = None) -> inspect.Parameter:
    """The Typer option of one setting, from its declaration in Settings."""
    from pixgen.settings import default_text, flag_of, metavar_of

    meta, flag = f.metadata, flag_of(key)
    text = meta["text"]
    kind = list[str] if text == "one" else str if text else _TYPES[str(f.type).removesuffix(" | None")]
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [d for d in (meta["short"], flag) if d]
    # The option's own default stays None, so that a flag not given leaves the preset's value; the
    # help shows the Settings default instead.
    option = typer.Option(
        None,
        *decls,
        help=help or meta["help"],
        metavar=metavar_of(key),
        show_default=default_text(key) or False,
        rich_help_panel=meta["panel"],
    )
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)


def with_setting_flags(*exclude: str, only: tuple[str, ...] = (), helps: dict[str, str] | None = None):
    """Give a command one option per setting (all but `exclude`, or just `only`; `helps` words
    some of them for this command), in the order of their help panels; the command receives the
    ones given as `flags`, a dict of setting overrides. Use it with `cls=PanelCommand`."""

    def wrap(fn):
        from pixgen.settings import FIELDS

        params = inspect.signature(fn, eval_str=True).parameters.values()
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p.name != "flags"]
        keys = [k for k, f in FIELDS.items() if f.metadata["cli"] and k not in exclude and (not only or k in only)]
        keys.sort(key=lambda k: PANELS.index(FIELDS[k].metadata["panel"]))

        @functools.wraps(fn)
        def command(**kwargs):
            given = {k: kwargs.pop(k) for k in keys}
            return fn(**kwargs, flags={k: v for k, v in given.items() if v not in (None, [])})

        flags = [_flag_param(k, FIELDS[k], (helps or {}).get(k)) for k in keys]  # after the command's argument
        command.__signature__ = inspect.Signature(own[:1] + flags + own[1:])
        return command

    return wrap
