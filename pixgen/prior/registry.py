"""Real priors: the registry's (taming's ImageNet class-conditional transformer), the shipped
shapes prior, and prior files a user has, found, downloaded, converted once and loaded.

Layout under the cache dir (pixgen.paths.cache_dir):
  prior/<name>/last.ckpt           taming's Lightning checkpoint, while it is being converted
  prior/<name>/prior.safetensors   the transformer alone, fp16, with its arch (what runs load)

The conversion keeps fp16: half the disk and download-to-ready memory of fp32 (2.8 GB, not 5.6,
for the 1.4B cin transformer), and its rounding (relative 2^-11) is finer than the bf16 that CPU
sampling runs in. A tensor that fp16 cannot hold (|w| > 65504) keeps fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pixgen.errors import PixgenError
from pixgen.models.cache import canonical_vqgan, check_fetchable, download, registry
from pixgen.paths import SHAPES_WEIGHTS_DIR, cache_dir

PRIOR_FILE = "prior.safetensors"
SHAPES_PRIOR = SHAPES_WEIGHTS_DIR / "prior_clip.safetensors"
FP16_MAX = 65504.0

if TYPE_CHECKING:  # torch and the model are imported where they are used: `models list` needs neither
    import torch

    from pixgen.prior.model import Prior, PriorArch


def prior_entries() -> dict:
    """The registry's priors: name -> entry (vqgan, arch, licence, download locations)."""
    return registry().get("priors") or {}


def prior_for_vqgan(vqgan: str) -> str | None:
    """The prior that draws `vqgan`'s codes (aliases resolved): a registry name, "shapes" for the
    shipped shapes VQGAN, or None."""
    if vqgan == "shapes":
        return "shapes"
    name = canonical_vqgan(vqgan)
    return next((p for p, e in prior_entries().items() if e.get("vqgan") == name), None)


def prior_arch(name: str, loaded: dict | None = None) -> PriorArch | None:
    """The architecture of the prior `name`, without reading its weights: a loaded one's, a
    registry entry's, or None where only its file would say (shapes, a path: a few MB at most
    for the shapes prior)."""
    if loaded and name in loaded:
        return loaded[name].arch
    if name in prior_entries():
        from pixgen.prior.model import PriorArch

        return PriorArch(**prior_entries()[name]["arch"])
    return None


def prior_dir(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PixgenError(f"bad prior name {name!r}")
    return cache_dir() / "prior" / name


def _how(name: str) -> str:
    ckpt = prior_dir(name) / "last.ckpt"
    return (
        f"run `pixgen models download {name}` with network, or put taming's checkpoint "
        f"(2021-04-03T19-39-50_cin_transformer/checkpoints/last.ckpt for cin_transformer) at {ckpt} "
        "or give the prior as the path of that .ckpt"
    )


def missing_prior(name: str) -> tuple[str, str, str] | None:
    """("prior", label, download name) when the registry prior `name` is not cached (neither
    converted nor downloaded); None for anything else. Never touches the network."""
    entry = prior_entries().get(name)
    if entry is None:
        return None
    folder = prior_dir(name)
    if (folder / PRIOR_FILE).is_file() or (folder / "last.ckpt").is_file():
        return None
    size = entry.get("approx_size_mb")
    return ("prior", f"{name} (~{size} MB)" if size else name, name)


def ensure_prior(name: str, offline: bool = False, show_progress: bool = True) -> Path:
    """The converted prior.safetensors of the registry prior `name`: cached, converted from a
    checkpoint put in the cache, or downloaded and converted."""
    from pixgen.prior.model import PriorArch

    entry = prior_entries()[name]
    folder = prior_dir(name)
    out, ckpt = folder / PRIOR_FILE, folder / "last.ckpt"
    if out.is_file():
        return out
    if not ckpt.is_file():
        check_fetchable(f"prior {name!r}", entry["ckpt"], offline, out, _how(name))
        download(
            entry["ckpt"],
            ckpt,
            entry.get("sha256"),
            entry.get("size"),
            hash_key=f"prior/{name}/last.ckpt",
            show_progress=show_progress,
        )
    try:
        convert_prior(ckpt, out, PriorArch(**entry["arch"]))
    except PixgenError as e:
        raise PixgenError(f"{e}; delete {ckpt} and run `pixgen models download {name}` again") from None
    ckpt.unlink()  # the VQGAN and training state in it are never read; the hash stays recorded
    return out


def load_prior_model(
    name_or_path: str, n_codes: int, offline: bool = False, on_status=None, dtype: torch.dtype | None = None
) -> Prior:
    """A prior in eval mode, in `dtype` (None: fp32): a registry name (downloaded and converted
    when needed), "shapes", a `.safetensors` prior file, or a taming `.ckpt` (read safely,
    converted in memory). `n_codes` is the VQGAN's codebook size; a prior drawing another
    vocabulary, a missing or corrupt file are one PixgenError line. `on_status(text)` hears
    what is loaded."""
    import torch

    from pixgen.prior.model import PriorArch, build_prior, check_codes, load_prior

    say = on_status or (lambda text: None)
    if name_or_path == "shapes":
        path = SHAPES_PRIOR
    elif name_or_path in prior_entries():
        check_codes(PriorArch(**prior_entries()[name_or_path]["arch"]), n_codes, name_or_path)
        say(f"preparing prior {name_or_path}…")
        path = ensure_prior(name_or_path, offline)
    else:
        path = Path(name_or_path).expanduser()
        if path.suffix.lower() == ".ckpt":
            say(f"converting prior {path.name}…")
            arch, sd = read_taming_prior(path)
            check_codes(arch, n_codes, path.name)
            return build_prior(arch, {k: v.to(dtype or torch.float32) for k, v in sd.items()}, str(path))
        if path.suffix.lower() != ".safetensors" and not path.exists():
            known = ", ".join([*prior_entries(), "shapes"])
            raise PixgenError(f"unknown prior {name_or_path!r}: give one of {known}, or a .safetensors or .ckpt file")
    say(f"loading prior {path.name}…")
    try:
        return load_prior(path, n_codes, dtype or torch.float32)
    except PixgenError as e:
        if name_or_path not in prior_entries() or "unreadable" not in str(e):
            raise
        raise PixgenError(f"{e}; delete it and run `pixgen models download {name_or_path}` again") from None


def read_taming_prior(ckpt: Path, arch: PriorArch | None = None) -> tuple[PriorArch, dict]:
    """(arch, transformer state dict) of a taming Net2NetTransformer checkpoint, read with the safe
    reader; only `transformer.*` is kept. Without `arch`, the registry entry of the same shapes
    gives it (the head count is not in the weights)."""
    from pixgen.models.checkpoints import read_state_dict

    full = read_state_dict(ckpt, "prior checkpoint")
    sd = {
        k.removeprefix("transformer."): v
        for k, v in full.items()
        if k.startswith("transformer.") and not k.endswith(".attn.mask")
    }
    if "tok_emb.weight" not in sd or "pos_emb" not in sd:
        raise PixgenError(f"prior checkpoint {ckpt} holds no taming transformer (no transformer.tok_emb/pos_emb)")
    arch = arch or _registry_arch(sd, ckpt)
    codebook = full.get("first_stage_model.quantize.embedding.weight")
    if codebook is not None and codebook.shape[0] != arch.n_codes:
        raise PixgenError(f"prior checkpoint {ckpt} has a VQGAN of {codebook.shape[0]} codes, not {arch.n_codes}")
    check_shapes(arch, sd, f"prior checkpoint {ckpt}")
    return arch, sd


def _registry_arch(sd: dict, ckpt: Path) -> PriorArch:
    from pixgen.prior.model import PriorArch

    vocab, width = sd["tok_emb.weight"].shape
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    shape = (vocab, sd["pos_emb"].shape[1], layers, width)
    for entry in prior_entries().values():
        a = entry["arch"]
        if (a["vocab_size"], a["block_size"], a["n_layer"], a["n_embd"]) == shape:
            return PriorArch(**a)
    raise PixgenError(
        f"prior checkpoint {ckpt} (vocabulary {vocab}, {layers} layers, width {width}) matches no known prior; "
        "pixgen reads taming transformers of the registry's shapes (`pixgen models list`)"
    )


def check_shapes(arch: PriorArch, sd: dict, source: str) -> None:
    """Every weight of `arch` present in `sd` with its shape, and nothing else (built on the meta
    device: no memory, no time)."""
    import torch

    from pixgen.prior.model import Prior
    from pixgen.weights_io import check_state, shapes

    with torch.device("meta"):
        check_state(shapes(Prior(arch)), sd, source)


def convert_prior(ckpt: Path, out: Path, arch: PriorArch | None = None) -> Path:
    """A taming checkpoint -> a pixgen prior file (fp16 safetensors with the arch), written
    atomically; the transformer is never built."""
    from pixgen.prior.model import PRIOR_FORMAT
    from pixgen.weights_io import save

    arch, sd = read_taming_prior(Path(ckpt), arch)
    tensors = {k: _fp16_if_it_fits(v) for k, v in sd.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save(out, PRIOR_FORMAT, tensors, arch, extra={"converted_from": Path(ckpt).name})
    return out


def _fp16_if_it_fits(t: torch.Tensor) -> torch.Tensor:
    import torch

    t = t.detach()
    if t.is_floating_point() and t.abs().max().item() <= FP16_MAX:
        t = t.to(torch.float16)
    return t.contiguous()


def prior_rows() -> list[tuple[str, str, str, str, str, str]]:
    """`pixgen models list` rows of the registry's priors and the shipped shapes prior: (name,
    other names, kind, size, cached, licence), as pixgen.models.cache.vqgan_rows gives the VQGANs'."""
    return [
        (
            name,
            "",
            f"prior ({e['arch']['cond']})",
            f"~{e['approx_size_mb']} MB",
            "yes" if (prior_dir(name) / PRIOR_FILE).is_file() else "no",
            e["license"].split(" (")[0],
        )
        for name, e in prior_entries().items()
    ] + [("shapes", "", "prior (clip)", "~2 MB", "ships", "MIT")]  # beside the shapes VQGAN


def describe_prior(name: str) -> list[str]:
    """`pixgen models info`: the registry entry, architecture and cache files of a prior, as lines."""
    entry = prior_entries()[name]
    a = entry["arch"]
    lines = [f"name: {name}"] + [f"{key}: {entry[key]}" for key in ("description", "license", "source") if key in entry]
    lines.append(f"draws the codes of: {entry['vqgan']} ({a['n_codes']} codes, a {a['grid'][0]}x{a['grid'][1]} grid)")
    lines.append(
        f"transformer: {a['n_layer']} layers, width {a['n_embd']}, {a['n_head']} heads, vocabulary "
        f"{a['vocab_size']}, condition {a['cond']} ({a['cond_len']} position)"
    )
    for f in (PRIOR_FILE, "last.ckpt"):
        path = prior_dir(name) / f
        state = f"{path.stat().st_size / 2**20:.1f} MB" if path.is_file() else "absent"
        lines.append(f"{f}: {path} ({state})")
    return lines
