"""What a run needs, checked before anything loads: its prompts and prior class (each by the
stage that owns it), and which of its models are missing from the cache and whether they can
be fetched now; and fetching models by name (`pixgen models download`).

This sits above the model cache (pixgen.models.cache) and the prior files (pixgen.prior.registry),
which know nothing of prompts, settings or runs. It does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.loop.prompts import PromptPlan, plan_prompts, split_weight
from pixgen.models import cache as weights
from pixgen.paths import SHAPES_CLIP_FILES, cache_dir
from pixgen.prior import registry as prior_models
from pixgen.prior.classes import check_prior_class
from pixgen.settings import Settings


def check_run(settings: Settings) -> PromptPlan:
    """The pre-flight of a run, after `settings.validate` and before any model loads: every
    prompt-like setting parsed (pixgen.loop.prompts) and --prior-class named (pixgen.prior.classes).
    A bad one is one PixgenError line naming its setting. Returns the prompt plan."""
    plan = plan_prompts(settings)
    check_prior_class(settings.prior_class)
    return plan


BUILT_IN = ("tiny", *SHAPES_CLIP_FILES)  # shipped or built in: never downloaded


def missing_models(
    vqgan: str | None,
    clips: list[str],
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
    prior: str | None = None,
):
    """[(kind, name, download name)] of the models a run needs that are not cached (`prior`: the
    registry prior it draws its start from, if any); never touches the network. Built-in models,
    local files and unknown names (which fail later, with their own message) are not listed; no
    VQGAN (`vqgan` None: a drawer that needs none) neither."""
    from pixgen.models.scorer import looks_like_path, parse_clip_spec  # torch: only when models are checked

    missing = []
    if vqgan is not None and not (vqgan_config and vqgan_ckpt) and vqgan not in BUILT_IN:
        name = weights.canonical_vqgan(vqgan)
        folder = weights.vqgan_dir(name)
        cached = (folder / "decoder.safetensors").is_file() or (
            (folder / "model.yaml").is_file() and (folder / "last.ckpt").is_file()
        )
        if not cached and name in weights.registry()["vqgan"]:
            size = weights.registry()["vqgan"][name].get("approx_size_mb")
            missing.append(("VQGAN", f"{name} (~{size} MB)" if size else name, name))
    for item in clips:
        spec = split_weight(item, "clip")[0]
        if spec in BUILT_IN:
            continue
        arch, ref = parse_clip_spec(spec)
        if ref is None or looks_like_path(ref):
            continue
        import open_clip

        cfg = open_clip.get_pretrained_cfg(arch, ref)
        if cfg and not weights.clip_cached(cfg, cache_dir() / "clip"):
            missing.append(("CLIP", spec, spec))
    if prior:
        missing += [m for m in [prior_models.missing_prior(prior)] if m]
    return missing


def check_models(
    vqgan: str | None,
    clips: list[str],
    vqgan_config: str | None = None,
    vqgan_ckpt: str | None = None,
    offline: bool = False,
    prior: str | None = None,
):
    """Before a run starts: when models it needs are missing and cannot be fetched now (offline,
    or their hosts unreachable), one error naming all of them and one command fetching them all.
    `vqgan` None: the run's drawer needs no VQGAN (the error says so)."""
    missing = missing_models(vqgan, clips, vqgan_config, vqgan_ckpt, prior)
    if not missing:
        return
    if weights.offline_requested(offline):
        why = "pixgen is offline"
    else:
        hosts = []
        for kind, _, name in missing:
            if kind in ("VQGAN", "prior"):
                hosts.append(weights.registry()["vqgan" if kind == "VQGAN" else "priors"][name]["ckpt"][0])
            else:
                hosts.append("https://huggingface.co")
        if all(weights.reachable(h) for h in dict.fromkeys(hosts)):
            return  # they will be downloaded as the run loads them
        why = "their download hosts are unreachable"
    names = " ".join(n for _, _, n in missing)
    no_vqgan = " (no VQGAN needed: the drawer draws without one)" if vqgan is None else ""
    raise PixgenError(
        f"{len(missing)} model(s) this run needs{no_vqgan} are not cached and {why}: "
        + ", ".join(f"{kind} {label}" for kind, label, _ in missing)
        + f"; fetch them all with network: pixgen models download {names} "
        f"(or use files you have: {'' if vqgan is None else '--vqgan-config PATH --vqgan-ckpt PATH, '}"
        "--clip NAME:PATH; offline demo: --preset shapes)"
    )


def fetch_models(names: list[str], defaults: bool = False, offline: bool = False, on_fetched=None) -> list[Path]:
    """Download VQGANs and priors (by name) and CLIPs (NAME:TAG) into the cache; with `defaults` also the
    default VQGAN and CLIP. `on_fetched(name, path)` hears each one as it is ready. Those that
    fail do not stop the others; then one PixgenError names them all."""
    names = list(names)
    if defaults:
        reg = weights.registry()
        names += [n for n in (reg["default_vqgan"], reg["default_clip"]) if n not in names]
    if not names:
        raise PixgenError("name the models to download, or give --defaults")
    paths, failed = [], []
    for name in names:
        try:
            if ":" in name:
                path = weights.clip_weights_file(*name.split(":", 1), offline)
            elif name in (weights.registry().get("priors") or {}):
                path = prior_models.ensure_prior(name, offline)
            else:
                path = weights.ensure_vqgan(name, offline)
        except PixgenError as e:
            failed.append(str(e))
            continue
        paths.append(path)
        if on_fetched:
            on_fetched(name, path)
    if failed:
        raise PixgenError(f"{len(failed)} of {len(names)} model(s) could not be fetched: " + " | ".join(failed))
    return paths
