"""Weights files, one way: safetensors (never pickle) written atomically, with a model's
architecture as JSON in the file's metadata; read back strictly (every key present with its
shape, nothing else) into a module built on the meta device; every failure one PixgenError line
naming the file.

A `Format` says which architecture a kind of file carries (the VQGAN's, the prior's). The run
state and the caches of class embeddings use the plain `write` and `read` (no architecture).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixgen.errors import PixgenError
from pixgen.files import atomic_path


@dataclass(frozen=True)
class Format:
    """A kind of pixgen weights file: `kind` names it in errors ("VQGAN", "prior"), `arch_key` is
    the metadata key holding its architecture, `arch` the dataclass that JSON is read into."""

    kind: str
    arch_key: str
    arch: type


def arch_to_json(arch: Any) -> str:
    """An architecture dataclass as the JSON its files carry (keys sorted)."""
    return json.dumps(asdict(arch), sort_keys=True)


def arch_from_json(cls: type, text: str) -> Any:
    return cls(**json.loads(text))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------- writing


def write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """`tensors` as a safetensors file with `metadata` (str values), written atomically; a
    failed write (a full disk) is one PixgenError line naming `path`, and leaves no file."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:  # its I/O errors ("No space left on device") are no OSError
            raise OSError(_first_line(e)) from None


def save(
    path: str | Path,
    fmt: Format,
    tensors: dict[str, torch.Tensor],
    arch: Any,
    dtype: torch.dtype | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """A model's weights (a state dict, each cast to `dtype` when given) with its architecture in
    the metadata under `fmt.arch_key`, beside `extra` metadata, written atomically."""
    sd = {k: (v.detach().to(dtype) if dtype else v.detach()) for k, v in tensors.items()}
    write(path, sd, {fmt.arch_key: arch_to_json(arch), **(extra or {})})


# ---------------------------------------------------------------- reading


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file (raises what safetensors raises)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def read_tensors(path: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The file's tensors, each read and cast to `dtype` (when given) in turn. Read with pread
    where safetensors has it (0.7+): the file is not mapped into the process. A floating tensor
    cast to another dtype is read a few MB at a time straight into its new storage, so that no
    whole copy in the file's dtype is made and freed: those freed copies stayed in the C heap
    (the 1.4B cin prior into bf16 held 360 MB more than its weights after loading)."""
    from safetensors import safe_open

    try:
        f = safe_open(str(path), "pt", backend="pread")
    except TypeError:  # an older safetensors: memory-mapped
        f = safe_open(str(path), "pt")
    with f, open(path, "rb", buffering=0) as raw:  # safe_open has checked the header and the sizes
        keys = list(f.keys())  # safe_open is no dict
        base, offsets = _data_offsets(raw)
        return {k: _read_one(f, k, dtype, raw, base + offsets[k]) for k in keys}


_CHUNK_BYTES = 4 << 20  # read at a time when a tensor is cast on loading
_FILE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def _data_offsets(raw) -> tuple[int, dict[str, int]]:
    """(where the data starts, each tensor's first byte from there) of a safetensors file: an
    8-byte little-endian header length, then the JSON header."""
    size = int.from_bytes(raw.read(8), "little")
    header = json.loads(raw.read(size))
    return 8 + size, {k: v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def _read_one(f: Any, key: str, dtype: torch.dtype | None, raw: Any, at: int) -> torch.Tensor:
    """One tensor of the open file `f`, in `dtype` when given. A floating tensor of another dtype
    is read from `raw` at byte `at` in chunks, each cast into a tensor allocated once in `dtype`."""
    part = f.get_slice(key)
    source = _FILE_DTYPES.get(part.get_dtype())
    # the chunks are read as this machine's bytes, and safetensors files are little-endian
    if dtype is None or source in (None, dtype) or not dtype.is_floating_point or sys.byteorder != "little":
        t = f.get_tensor(key)
        return t.to(dtype) if dtype else t
    out = torch.empty(part.get_shape(), dtype=dtype)
    flat, step = out.view(-1), max(1, _CHUNK_BYTES // source.itemsize)
    chunk = bytearray(min(step, max(1, flat.numel())) * source.itemsize)
    raw.seek(at)
    for start in range(0, flat.numel(), step):
        count = min(step, flat.numel() - start)
        view = memoryview(chunk)[: count * source.itemsize]
        if raw.readinto(view) != len(view):
            raise OSError(f"tensor {key!r} is cut short")
        flat[start : start + count] = torch.frombuffer(chunk, dtype=source, count=count)
    return out


def read(
    path: str | Path,
    what: str,
    fmt: Format | None = None,
    dtype: torch.dtype | None = None,
    check: Callable[[Any], None] | None = None,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, str]]:
    """(architecture, tensors in `dtype`, metadata) of a weights file; the architecture is None
    without a `fmt`. `check(arch)` runs before the tensors are read (a mismatch found before
    reading gigabytes). `what` names the file in the one-line errors: not found, not a file of
    `fmt`'s kind, unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PixgenError(f"{what} not found: {path}")
    try:
        meta = read_metadata(path)
        arch = None
        if fmt is not None:
            arch = _arch_in(meta, fmt, path, what)
            if check is not None:
                check(arch)
        tensors = read_tensors(path, dtype)
    except PixgenError:
        raise
    except Exception as e:
        raise PixgenError(f"{what} {path} is unreadable: {_first_line(e)}") from None
    return arch, tensors, meta


def read_arch(path: str | Path, fmt: Format, what: str) -> Any:
    """The architecture in a weights file's metadata, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise PixgenError(f"{what} not found: {path}")
    try:
        meta = read_metadata(path)
    except Exception as e:
        raise PixgenError(f"{what} {path} is unreadable: {_first_line(e)}") from None
    return _arch_in(meta, fmt, path, what)


def _arch_in(meta: dict[str, str], fmt: Format, path: Path, what: str) -> Any:
    """The architecture a file's metadata holds, read by its kind's own reader (which checks it
    before anything is built); one PixgenError line when it is missing or invalid."""
    if fmt.arch_key not in meta:
        raise PixgenError(f"{path} is not a pixgen {fmt.kind} file (no architecture metadata)")
    try:
        return fmt.arch.from_json(meta[fmt.arch_key])
    except (ValueError, TypeError) as e:  # json's errors are ValueErrors too
        raise PixgenError(f"{what} {path}: its architecture is invalid: {_first_line(e)}") from None


# ---------------------------------------------------------------- strict loading


def check_state(want: dict[str, tuple[int, ...]], sd: dict, source: str) -> None:
    """Every key of `want` (key -> shape) in `sd` with its shape, and nothing else; else one
    PixgenError line naming `source`."""
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]!r})")
        raise PixgenError(f"{source} does not match its architecture: {', '.join(parts)} keys")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(want[k]):
            raise PixgenError(f"{source}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(want[k])}")


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module's state dict (of a meta-device module: no memory, no time)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_strict(module: nn.Module, sd: dict, source: str) -> nn.Module:
    """Load `sd` into `module`, taking its tensors as they are (assign); any missing, unexpected
    or mis-shaped key is a PixgenError naming `source`."""
    check_state(shapes(module), sd, source)
    module.load_state_dict(sd, strict=True, assign=True)
    return module


def build(cls: Callable[[Any], nn.Module], arch: Any, sd: dict, source: str) -> nn.Module:
    """`cls(arch)` holding exactly `sd`, in eval mode: built on the meta device (no random
    initialisation, nothing held twice), every tensor assigned from `sd`; a mismatch is a
    PixgenError naming `source`."""
    return load_strict(on_meta(cls, arch, source), sd, source).eval()


def on_meta(cls: Callable[[Any], nn.Module], arch: Any, source: str) -> nn.Module:
    """`cls(arch)` on the meta device (shapes only, no memory); an architecture it cannot be
    built from (a NaN width, a channel count its groups do not divide) is a PixgenError naming
    `source`, not the layer's own traceback."""
    try:
        with torch.device("meta"):
            return cls(arch)
    except PixgenError:
        raise
    except Exception as e:
        raise PixgenError(f"{source}: its architecture cannot be built: {_first_line(e)}") from None
