"""The model cache: registry, verified resumable downloads, and decoder-only conversion.

Layout under the cache dir ($PIXGEN_CACHE or the platform's user cache):
  vqgan/<name>/model.yaml, last.ckpt      the taming files, as downloaded or imported
  vqgan/<name>/decoder.safetensors        codebook + post_quant_conv + decoder (what runs load)
  vqgan/<name>/encoder.safetensors        encoder + quant_conv (loaded only for init images)
  vqgan/<name>/arch.json                  the architecture, readable without torch
  clip/                                   open_clip's download cache
  hashes.json                             sha256 of each first download (trust on first use)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pixgen.errors import PixgenError
from pixgen.files import atomic_write
from pixgen.paths import REGISTRY_FILE, SHAPES_CLIP_FILES, SHAPES_WEIGHTS_DIR, cache_dir

CHUNK = 1 << 20


def registry() -> dict:
    import yaml

    return yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))


def canonical_vqgan(name: str) -> str:
    """The registry's own name for `name` (aliases: `pixgen models list`). A model imported under
    an alias's name keeps its own folder."""
    target = (registry().get("aliases") or {}).get(name)
    if target is None or (cache_dir() / "vqgan" / name).is_dir():
        return name
    return target


def vqgan_dir(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PixgenError(f"bad model name {name!r}")
    return cache_dir() / "vqgan" / name


def offline_requested(flag: bool = False) -> bool:
    truthy = ("1", "true", "yes", "on")
    return flag or any(os.environ.get(v, "").lower() in truthy for v in ("PIXGEN_OFFLINE", "HF_HUB_OFFLINE"))


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the URL's host resolves and accepts a connection (a quick check, no request)."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- verified downloads


def check_fetchable(what: str, urls: list[str], offline: bool, missing: Path, how: str) -> None:
    """Refuse in one line a download that cannot happen now: pixgen is offline, or none of the
    first mirrors of `urls` answers. `what` names the model, `missing` its file, `how` the way out."""
    if offline_requested(offline):
        raise PixgenError(f"{what} is not cached and pixgen is offline: missing {missing}; {how}")
    if not any(reachable(u) for u in urls[:3]):
        raise PixgenError(f"{what} is not cached and no mirror is reachable: missing {missing}; {how}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _known_hashes() -> dict:
    path = cache_dir() / "hashes.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _record_hash(key: str, digest: str) -> None:
    hashes = _known_hashes()
    hashes[key] = digest
    cache_dir().mkdir(parents=True, exist_ok=True)
    atomic_write(cache_dir() / "hashes.json", json.dumps(hashes, indent=1, sort_keys=True).encode())


def _fetch(url: str, part: Path, progress=None, timeout: float = 30.0) -> None:
    """Append the rest of `url` to `part` (an HTTP Range request resumes a partial file)."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "pixgen"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            return
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f:
            if progress:
                progress(have, total)
            while block := resp.read(CHUNK):
                f.write(block)
                have += len(block)
                if progress:
                    progress(have, total)
    if total is not None and have != total:
        raise OSError(f"connection closed after {have} of {total} bytes")


def download(
    urls: list[str],
    dest: Path,
    sha256: str | None = None,
    size: int | None = None,
    hash_key: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Fetch `dest` from the first working mirror: resumable, verified, atomic, locked.

    A lock file serialises processes fetching the same file. The data is verified against
    `size` and `sha256`, or else against the hash recorded on the first download of `hash_key`.
    """
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if dest.exists():
            return dest
        expected = sha256 or (_known_hashes().get(hash_key) if hash_key else None)
        errors = []
        for url in urls:
            try:
                with _progress_bar(dest.name, show_progress) as progress:
                    _fetch(url, part, progress)
                got_size = part.stat().st_size
                if size is not None and got_size != size:
                    raise OSError(f"size {got_size} bytes, expected {size}")
                digest = sha256_of(part)
                if expected and digest != expected:
                    part.unlink()
                    raise OSError(f"sha256 {digest[:12]}... does not match the expected {expected[:12]}...")
                os.replace(part, dest)
                if hash_key and not expected:
                    _record_hash(hash_key, digest)
                return dest
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{urlparse(url).hostname}: {getattr(e, 'reason', None) or e}")
        raise PixgenError(f"could not download {dest.name} from any of {len(urls)} mirror(s): " + "; ".join(errors))


class _progress_bar:
    """A rich download bar on stderr, or nothing."""

    def __init__(self, name: str, enabled: bool):
        self.name, self.enabled, self.bar, self.task = name, enabled, None, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn(self.name),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        self.task = self.bar.add_task("download", total=None)
        return self.update

    def update(self, done: int, total: int | None) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()


# ---------------------------------------------------------------- VQGAN conversion


def convert_vqgan(config: Path, ckpt: Path, out_dir: Path) -> Path:
    """taming .yaml + .ckpt -> decoder/encoder safetensors and arch.json in `out_dir`."""
    from pixgen.models.vqgan import VQGANDecoder, VQGANEncoder, read_taming, save_safetensors
    from pixgen.weights_io import build

    arch, dec_sd, enc_sd = read_taming(config, ckpt)
    modules = {"decoder": build(VQGANDecoder, arch, dec_sd, f"VQGAN checkpoint {ckpt}")}
    try:
        modules["encoder"] = build(VQGANEncoder, arch, enc_sd, f"VQGAN checkpoint {ckpt} (encoder)")
    except PixgenError:
        pass  # a decoder-only checkpoint: init images will say so
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        save_safetensors(out_dir / f"{name}.safetensors", module, arch)  # atomically
    atomic_write(out_dir / "arch.json", arch.to_json().encode())
    return out_dir / "decoder.safetensors"


def ensure_vqgan(name: str, offline: bool = False, show_progress: bool = True) -> Path:
    """The decoder.safetensors of model `name`: cached, converted from files, or downloaded."""
    name = canonical_vqgan(name)
    folder = vqgan_dir(name)
    decoder = folder / "decoder.safetensors"
    if decoder.is_file():
        return decoder
    yaml_path, ckpt_path = folder / "model.yaml", folder / "last.ckpt"
    if yaml_path.is_file() and ckpt_path.is_file():
        return convert_vqgan(yaml_path, ckpt_path, folder)
    entry = registry()["vqgan"].get(name)
    if entry is None:
        known = ", ".join(registry()["vqgan"])
        raise PixgenError(
            f"unknown VQGAN {name!r} (registry: {known}); register your own files with "
            f"`pixgen models import {name} --config X.yaml --ckpt Y.ckpt`"
        )
    missing = ckpt_path if yaml_path.is_file() else yaml_path
    how = (
        f"run `pixgen models download {name}` with network, or put the taming files at {yaml_path} "
        f"and {ckpt_path}, or pass --vqgan-config PATH --vqgan-ckpt PATH (offline demo: --preset shapes)"
    )
    check_fetchable(f"VQGAN {name!r}", entry["ckpt"], offline, missing, how)
    download(
        entry["config"],
        yaml_path,
        entry.get("config_sha256"),
        hash_key=f"vqgan/{name}/model.yaml",
        show_progress=show_progress,
    )
    download(
        entry["ckpt"],
        ckpt_path,
        entry.get("sha256"),
        entry.get("size"),
        hash_key=f"vqgan/{name}/last.ckpt",
        show_progress=show_progress,
    )
    return convert_vqgan(yaml_path, ckpt_path, folder)


def import_vqgan(name: str, config: Path, ckpt: Path) -> Path:
    """Register files a user already has: convert them into the cache under `name`."""
    folder = vqgan_dir(name)
    decoder = convert_vqgan(Path(config), Path(ckpt), folder)
    atomic_write(folder / "model.yaml", Path(config).read_bytes())
    return decoder


def clip_catalogue() -> list[tuple[str, str, bool]]:
    """(architecture, pretrained tag, cached) for every pretrained model open_clip knows."""
    import open_clip

    folder = cache_dir() / "clip"
    return [
        (arch, tag, clip_cached(open_clip.get_pretrained_cfg(arch, tag), folder) is not None)
        for arch, tag in open_clip.list_pretrained()
    ]


def vqgan_rows() -> list[tuple[str, str, str, str, str, str]]:
    """(name, other names, kind, size, cached, licence) of every VQGAN `pixgen models list` shows."""
    reg = registry()
    aliases: dict[str, list[str]] = {}
    for alias, target in (reg.get("aliases") or {}).items():
        aliases.setdefault(target, []).append(alias)
    rows = [
        (
            name,
            ", ".join(aliases.get(name, [])),
            e["target"],
            f"~{e['approx_size_mb']} MB",
            "yes" if (vqgan_dir(name) / "decoder.safetensors").is_file() else "no",
            e["license"].split(" (")[0],
        )
        for name, e in reg["vqgan"].items()
    ]
    return rows + [
        ("shapes", "", "VQModel", "~3 MB", "ships", "MIT"),
        ("tiny", "", "VQModel", "random", "built in", "MIT"),
    ]


def clip_rows() -> list[tuple[str, str]]:
    """(NAME:TAG, cached) of every pretrained CLIP open_clip knows, then the built-in ones."""
    rows = [(f"{arch}:{tag}", "yes" if cached else "no") for arch, tag, cached in clip_catalogue()]
    return rows + [(name, "ships") for name in SHAPES_CLIP_FILES] + [("tiny", "built in (random)")]


def describe_vqgan(name: str) -> list[str]:
    """`pixgen models info`: the registry entry, architecture and cache files of a VQGAN, as lines."""
    if name in ("shapes", "tiny"):  # shipped or built in, as `models list` shows them
        return _describe_builtin_vqgan(name)
    folder = vqgan_dir(name)
    entry = registry()["vqgan"].get(name, {})
    if not entry and not folder.is_dir():
        raise PixgenError(f"unknown VQGAN {name!r}; see `pixgen models list`")
    lines = [f"name: {name}"] + [
        f"{key}: {entry[key]}" for key in ("description", "target", "license", "source") if key in entry
    ]
    arch_file = folder / "arch.json"
    if arch_file.is_file():
        from pixgen.models.vqgan import VQGANArch

        arch = VQGANArch.from_json(arch_file.read_text())
        dd = arch.ddconfig
        lines.append(f"quantiser: {arch.kind}  codebook: {arch.n_embed} x {arch.embed_dim}  factor: {arch.factor}")
        lines.append(
            f"decoder: ch {dd['ch']}, ch_mult {dd['ch_mult']}, res blocks {dd['num_res_blocks']}, "
            f"attention at {dd['attn_resolutions']}, z_channels {dd['z_channels']}"
        )
    else:
        lines.append("architecture: unknown until downloaded or imported")
    for f in ("decoder.safetensors", "encoder.safetensors", "model.yaml", "last.ckpt"):
        path = folder / f
        state = f"{path.stat().st_size / 2**20:.1f} MB" if path.is_file() else "absent"
        lines.append(f"{f}: {path} ({state})")
    return lines


def _describe_builtin_vqgan(name: str) -> list[str]:
    """`pixgen models info` of the shipped shapes VQGAN or the built-in random tiny one."""
    if name == "shapes":  # its architecture as its shipped file records it
        from pixgen.models.vqgan import load_safetensors_arch

        files = [SHAPES_WEIGHTS_DIR / "vqgan.safetensors", SHAPES_WEIGHTS_DIR / "vqgan_encoder.safetensors"]
        arch = load_safetensors_arch(files[0])
        lines = [f"name: {name}", "description: the shipped shapes VQGAN (offline demo: --preset shapes)"]
        lines.append("license: MIT")
    else:
        from pixgen.models.vqgan import TINY_ARCH

        arch, files = TINY_ARCH, []
        lines = [f"name: {name}", "description: a tiny VQGAN of random weights, built in memory (tests, smoke runs)"]
    dd = arch.ddconfig
    lines.append(f"quantiser: {arch.kind}  codebook: {arch.n_embed} x {arch.embed_dim}  factor: {arch.factor}")
    lines.append(
        f"decoder: ch {dd['ch']}, ch_mult {dd['ch_mult']}, res blocks {dd['num_res_blocks']}, "
        f"attention at {dd['attn_resolutions']}, z_channels {dd['z_channels']}"
    )
    for path in files:
        state = f"{path.stat().st_size / 2**20:.1f} MB" if path.is_file() else "absent"
        lines.append(f"{path.name}: {path} ({state}, ships)")
    return lines


# ---------------------------------------------------------------- CLIP through open_clip


def clip_weights_file(name: str, tag: str, offline: bool = False, show_progress: bool = True) -> Path:
    """The local file of open_clip's pretrained `name:tag`, downloaded into pixgen's cache."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise PixgenError(f"unknown CLIP {name}:{tag}; `pixgen models list --clip` shows the known tags")
    folder = cache_dir() / "clip"
    cached = clip_cached(cfg, folder)
    if cached:
        return cached
    hint = f"run `pixgen models download {name}:{tag}` with network, or pass --clip {name}:/path/to/weights"
    if offline_requested(offline):
        raise PixgenError(f"CLIP {name}:{tag} is not cached in {folder} and pixgen is offline; {hint}")
    host = "https://huggingface.co" if cfg.get("hf_hub") else cfg.get("url", "")
    if not reachable(host):
        raise PixgenError(
            f"CLIP {name}:{tag} is not cached in {folder} and {urlparse(host).hostname} is unreachable; {hint}"
        )
    try:
        return Path(open_clip.download_pretrained(cfg, cache_dir=str(folder)))
    except Exception as e:
        raise PixgenError(f"could not download CLIP {name}:{tag}: {str(e).splitlines()[0][:200]}; {hint}") from None


def clip_cached(cfg: dict, folder: Path) -> Path | None:
    """The cached file for an open_clip pretrained config, or None; never touches the network."""
    hub = cfg.get("hf_hub")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        if hub.endswith("/"):  # open_clip's convention: the repo's default weights file
            repo, names = hub.rstrip("/"), ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        else:
            repo, name = hub.rsplit("/", 1)
            names = [name]
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=str(folder))
            if isinstance(hit, str):
                return Path(hit)
        return None
    url = cfg.get("url")
    if url:
        path = folder / os.path.basename(urlparse(url).path)
        return path if path.is_file() else None
    return None
